//! The server's CA: loaded from the datastore's journal and the disk key manager, kept rotating by
//! a background task, with its journal persisted and its bundle published after every change.
//!
//! Order matters for crash safety: a new CA's journal is stored before it signs anything, and a
//! rotation's journal is stored before its bundle is published, so a crash at any point leaves a
//! journal that `Ca::load` can continue from (it retires an authority whose key is missing).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_ca::{
    AuthorityKind, AuthorityState, Ca, CaConfig, DiskKeyManager, Journal, KeyType, UpstreamCa,
};
use lanyard_core::{Bundle, SharedClock};
use lanyard_store::{BundleWrite, DataStore};
use tokio::sync::{Mutex, watch};

use crate::{ServerConfig, ServerError, ServerState};

/// How often the CA is asked whether it is time to rotate (SPIRE checks every 10 seconds).
const ROTATION_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The CA and what is needed to persist it.
#[derive(Debug)]
pub(crate) struct Authority {
    pub(crate) ca: Ca,
    /// Names this server's journal in a datastore shared by several servers.
    server_id: String,
    store: Arc<dyn DataStore>,
    /// The stored journal's version (for optimistic concurrency); held while persisting so that
    /// two persists never interleave.
    journal_version: Mutex<Option<u64>>,
    /// The trust domain's bundle as last published or read from the datastore.
    published: std::sync::RwLock<Bundle>,
    clock: SharedClock,
}

/// How often publishing the bundle is retried when other servers publish at the same moment.
const PUBLISH_ATTEMPTS: usize = 5;

/// True if both bundles hold the same X.509 and JWT authorities, in any order.
fn same_authorities(a: &Bundle, b: &Bundle) -> bool {
    let x509 = |b: &Bundle| {
        b.x509_authorities()
            .iter()
            .map(|x| x.der().to_vec())
            .collect::<BTreeSet<_>>()
    };
    let jwt = |b: &Bundle| {
        b.jwt_authorities()
            .iter()
            .map(|j| (j.key_id().to_owned(), j.public_key_der().to_vec()))
            .collect::<BTreeSet<_>>()
    };
    x509(a) == x509(b) && jwt(a) == jwt(b)
}

impl Authority {
    /// Loads the CA from the datastore's journal, or creates one, and persists it.
    pub(crate) async fn load(
        config: &ServerConfig,
        store: Arc<dyn DataStore>,
        clock: SharedClock,
    ) -> Result<Self, ServerError> {
        let server_id = load_server_id(&config.data_dir)?;
        let keys = Arc::new(DiskKeyManager::open(config.data_dir.join("keys"))?);
        let ca_config = ca_config(config)?;
        let stored = store.get_ca_journal(&server_id).await?;
        let (ca, version) = match stored {
            Some(stored) => {
                let journal = Journal::from_json(&stored.data)?;
                let ca = Ca::load(ca_config, keys, journal, clock.clone())?;
                // Catch up with the time that passed while the server was down.
                let _ = ca.tick()?;
                (ca, Some(stored.version))
            }
            None => (Ca::new(ca_config, keys, clock.clone())?, None),
        };
        let published = std::sync::RwLock::new(ca.bundle());
        let authority = Self {
            ca,
            server_id,
            store,
            journal_version: Mutex::new(version),
            published,
            clock,
        };
        authority.persist().await?;
        Ok(authority)
    }

    /// Stores the journal if it changed since it was last stored, then publishes the bundle.
    pub(crate) async fn persist(&self) -> Result<(), ServerError> {
        let mut version = self.journal_version.lock().await;
        let journal = self.ca.journal();
        let stored = match *version {
            Some(v) => self
                .store
                .get_ca_journal(&self.server_id)
                .await?
                .filter(|j| j.version == v),
            None => None,
        };
        let unchanged = stored.is_some_and(|j| j.data == journal.to_json());
        if !unchanged {
            *version = Some(
                self.store
                    .put_ca_journal(&self.server_id, &journal.to_json(), *version)
                    .await?,
            );
        }
        self.publish_bundle().await
    }

    /// The other servers sharing the datastore whose credentials have all expired: their last
    /// heartbeat's `signs_until` has passed (see `heartbeat`).
    pub(crate) async fn retired_servers(&self) -> Result<BTreeSet<String>, lanyard_store::Error> {
        let now = self.clock.now();
        Ok(self
            .store
            .list_servers()
            .await?
            .into_iter()
            .filter(|s| s.info.server_id != self.server_id && s.info.signs_until < now)
            .map(|s| s.info.server_id)
            .collect())
    }

    /// Publishes the trust domain's bundle: the union of this CA's authorities and those of every
    /// other server's journal in the datastore (servers sharing a PostgreSQL database each keep
    /// their own keys), except retired servers' (nothing they signed is valid any more; a journal
    /// with no heartbeat is kept). Written only when its authorities changed, with a sequence
    /// above the stored one; a write that loses a race with another server merges again.
    async fn publish_bundle(&self) -> Result<(), ServerError> {
        let td = self.ca.trust_domain().clone();
        for _ in 0..PUBLISH_ATTEMPTS {
            let retired = self.retired_servers().await?;
            let mut merged = self.ca.bundle();
            for journal in self.store.list_ca_journals().await? {
                if journal.server_id == self.server_id || retired.contains(&journal.server_id) {
                    continue;
                }
                match Journal::from_json(&journal.data).and_then(|j| j.authorities()) {
                    Ok(other) if other.trust_domain() == &td => {
                        for a in other.x509_authorities() {
                            merged.add_x509_authority(a.clone());
                        }
                        for a in other.jwt_authorities() {
                            merged.add_jwt_authority(a.clone());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(server = %journal.server_id, error = %e, "skipping an unreadable CA journal")
                    }
                }
            }
            let stored = self.store.get_bundle(&td).await?;
            let stored_bundle = stored
                .as_ref()
                .and_then(|r| Bundle::parse_json(td.clone(), r.document.as_bytes()).ok());
            if let Some(current) = stored_bundle.filter(|b| same_authorities(b, &merged)) {
                *self.published.write().unwrap_or_else(|e| e.into_inner()) = current;
                return Ok(());
            }
            let sequence = stored
                .as_ref()
                .map_or(0, |r| r.sequence)
                .max(merged.sequence())
                + 1;
            merged.set_sequence(sequence);
            let written = self
                .store
                .set_bundle(&td, &merged.to_json(), sequence, BundleWrite::IfNewer)
                .await;
            match written {
                Ok(_) => {
                    *self.published.write().unwrap_or_else(|e| e.into_inner()) = merged;
                    return Ok(());
                }
                // Another server published in between: merge with what it wrote.
                Err(lanyard_store::Error::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServerError::State(
            "could not publish the trust bundle: other servers kept publishing at the same time"
                .to_owned(),
        ))
    }

    /// Picks up a bundle another server published (it rotated its CA). Returns whether it changed.
    pub(crate) async fn refresh_published(&self) -> Result<bool, ServerError> {
        let td = self.ca.trust_domain();
        let Some(stored) = self.store.get_bundle(td).await? else {
            return Ok(false);
        };
        if stored.sequence <= self.trust_bundle().sequence() {
            return Ok(false);
        }
        let bundle = Bundle::parse_json(td.clone(), stored.document.as_bytes())
            .map_err(|e| ServerError::State(format!("the stored trust bundle is invalid: {e}")))?;
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = bundle;
        Ok(true)
    }

    /// The trust domain's bundle as last published: what agents and workloads must trust.
    /// This server's id, which names its CA journal and its audit checkpoint key.
    pub(crate) fn server_id(&self) -> &str {
        &self.server_id
    }

    pub(crate) fn trust_bundle(&self) -> Bundle {
        self.published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The active X.509 authority's expiry, for metrics and health.
    pub(crate) fn active_x509_expiry(&self) -> Option<SystemTime> {
        self.ca
            .authorities()
            .into_iter()
            .find(|a| a.kind == AuthorityKind::X509 && a.state == AuthorityState::Active)
            .map(|a| a.not_after)
    }

    /// `Ok` if both an X.509 authority and a JWT key are active and valid now.
    pub(crate) fn check_can_sign(&self) -> Result<(), String> {
        let now = SystemTime::now();
        let authorities = self.ca.authorities();
        for kind in [AuthorityKind::X509, AuthorityKind::Jwt] {
            let usable = authorities.iter().any(|a| {
                a.kind == kind
                    && a.state == AuthorityState::Active
                    && a.not_before <= now
                    && now < a.not_after
            });
            if !usable {
                return Err(format!("no valid active {kind:?} authority"));
            }
        }
        Ok(())
    }
}

/// Ticks the CA until `stop` turns true, persisting after every change. A failed persist is
/// retried at the next check; the CA keeps signing with what it has meanwhile.
pub(crate) async fn drive_rotation(state: Arc<ServerState>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(ROTATION_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match state.authority.ca.tick() {
            Ok(outcome) => dirty |= outcome.journal_changed || outcome.bundle_changed,
            Err(e) => tracing::error!(error = %e, "CA rotation failed"),
        }
        if dirty {
            match state.authority.persist().await {
                Ok(()) => {
                    dirty = false;
                    state.bundles_changed().await;
                    tracing::info!(
                        sequence = state.authority.trust_bundle().sequence(),
                        "CA rotated; bundle published"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot persist the CA after rotation; will retry")
                }
            }
        }
        state.refresh_gauges().await;
    }
}

fn ca_config(config: &ServerConfig) -> Result<CaConfig, ServerError> {
    let settings = &config.ca;
    let mut ca = CaConfig::new(config.trust_domain.clone());
    ca.key_type = if settings.p384 {
        KeyType::EcP384
    } else {
        KeyType::EcP256
    };
    ca.ca_ttl = settings.ca_ttl;
    ca.jwt_key_ttl = settings.ca_ttl;
    ca.x509_svid_ttl = settings.default_x509_svid_ttl;
    ca.jwt_svid_ttl = settings.default_jwt_svid_ttl;
    ca.refresh_hint = settings.bundle_refresh_hint;
    if let Some(upstream) = &settings.upstream {
        ca.upstream = Some(UpstreamCa::from_pem(
            upstream.cert_pem.as_bytes(),
            upstream.key_pem.as_bytes(),
            None,
        )?);
    }
    Ok(ca)
}

/// This server's id, made once and kept in the data directory.
fn load_server_id(data_dir: &Path) -> Result<String, ServerError> {
    let path = data_dir.join("server-id");
    let io_error = |source| ServerError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if is_server_id(id.trim()) => return Ok(id.trim().to_owned()),
        Ok(_) => {
            return Err(ServerError::State(format!(
                "{} does not hold a server id (16 hex digits); remove it to make a new one",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| ServerError::State("no randomness".to_owned()))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = data_dir.join("server-id.tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(io_error)?;
    std::fs::rename(&tmp, &path).map_err(io_error)?;
    Ok(id)
}

fn is_server_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
