//! The CA itself: authorities and their rotation, the bundle, and minting.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanyard_core::{
    Bundle, DnsName, JwtAuthority, SharedClock, SpiffeId, TrustDomain, X509Authority,
};

use crate::CaError;
use crate::cert::{self, CaCertParams, CertInfo, CertSigner, IssuerName, LeafParams};
use crate::config::{CaConfig, MAX_TTL};
use crate::journal::{AuthorityState, Journal, JwtRecord, Record, X509Record};
use crate::jwt::{self, AccessToken, AccessTokenRequest, JwtSigner, JwtSvid, JwtSvidRequest};
use crate::key::{KeyType, PrivateKey, key_id_for_spki};
use crate::key_manager::{KeyId, KeyManager};
use crate::leaf_key::{LeafKey, VerifiedCsr};
use crate::upstream::UpstreamCa;

/// A SPIFFE certificate authority for one trust domain.
///
/// All methods take `&self`: minting takes a read lock just long enough to pick the active
/// authority, so many threads mint at once; [`tick`](Self::tick), [`taint`](Self::taint) and
/// [`revoke`](Self::revoke) take the write lock.
pub struct Ca {
    trust_domain: TrustDomain,
    key_type: KeyType,
    /// Seconds.
    ca_ttl: u64,
    /// Seconds.
    jwt_key_ttl: u64,
    x509_svid_ttl: Duration,
    jwt_svid_ttl: Duration,
    /// Seconds.
    backdate: u64,
    refresh_hint: Duration,
    upstream: Option<UpstreamCa>,
    keys: Arc<dyn KeyManager>,
    clock: SharedClock,
    state: RwLock<State>,
    /// The latest expiry (Unix seconds) of anything this CA signed since it was loaded: servers
    /// sharing a datastore keep a dead server's authorities until then.
    signed_until: AtomicU64,
}

/// What an X509-SVID should say besides its public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509SvidRequest {
    /// The only URI SAN; in the CA's trust domain, with a path.
    pub spiffe_id: SpiffeId,
    /// DNS SANs; the first also becomes the subject CN (if it is at most 64 bytes).
    pub dns_names: Vec<DnsName>,
    /// Lifetime; `None` means the configured default. Capped at the signing CA's `NotAfter`.
    pub ttl: Option<Duration>,
}

/// A minted X509-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Svid {
    pub spiffe_id: SpiffeId,
    /// DER certificates, leaf first, then intermediates up to (not including) the root.
    pub cert_chain: Vec<Vec<u8>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The id of the X.509 authority that signed it.
    pub authority_id: String,
}

/// Which kind of key an authority is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthorityKind {
    X509,
    Jwt,
}

/// One authority as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityInfo {
    pub kind: AuthorityKind,
    /// X.509: the hex subject key identifier; JWT: the `kid`.
    pub id: String,
    pub state: AuthorityState,
    pub tainted: bool,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Whether a minted SVID leaves this process, and so counts in [`Ca::signed_until`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandedOut {
    Yes,
    No,
}

/// What a state-changing call changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use = "store the journal when it changed, publish the bundle when it changed"]
pub struct TickOutcome {
    /// The journal changed: store [`Ca::journal`] again.
    pub journal_changed: bool,
    /// The bundle's contents changed (and its sequence increased): publish [`Ca::bundle`].
    pub bundle_changed: bool,
}

struct State {
    journal: Journal,
    bundle: Bundle,
    /// Signers of the prepared and active X.509 authorities, by key name.
    x509_signers: HashMap<KeyId, Arc<X509Signer>>,
    jwt_signers: HashMap<KeyId, Arc<JwtKey>>,
    active_x509: Option<Arc<X509Signer>>,
    active_jwt: Option<Arc<JwtKey>>,
    /// Keys whose deletion failed; retried on every state change.
    pending_deletions: Vec<KeyId>,
}

/// Everything needed to sign leaves with one X.509 authority, computed once.
#[derive(Debug)]
struct X509Signer {
    id: String,
    key: Arc<PrivateKey>,
    /// The authority certificate's subject, which is every leaf's issuer.
    subject: Vec<u8>,
    /// The leaves' authorityKeyIdentifier extension.
    aki_extension: Vec<u8>,
    /// What follows the leaf in SVID chains: the authority certificate and the upstream
    /// certificates after it, or nothing for a self-signed root.
    chain: Vec<Vec<u8>>,
    not_after: u64,
}

#[derive(Debug)]
struct JwtKey {
    signer: JwtSigner,
    not_after: u64,
}

/// Changes made while a new state is computed: undone (created) or finished (to delete) after.
#[derive(Debug, Default)]
struct KeyChanges {
    created: Vec<KeyId>,
    to_delete: Vec<KeyId>,
}

// === impl Ca ===

impl Ca {
    /// A new CA with fresh authorities (first X.509 authority and JWT key, both active at once).
    /// Store its [`journal`](Self::journal) before minting with it.
    pub fn new(
        config: CaConfig,
        keys: Arc<dyn KeyManager>,
        clock: SharedClock,
    ) -> Result<Self, CaError> {
        let journal = Journal::new(config.trust_domain.clone());
        let ca = Self::load(config, keys, journal, clock)?;
        let _ = ca.tick()?;
        Ok(ca)
    }

    /// Rebuilds a CA from its journal and key manager. The bundle is rebuilt exactly as it was
    /// (same contents, order and sequence). Call [`tick`](Self::tick) next to catch up with the
    /// time that passed while it was down.
    ///
    /// If the key of an active authority is missing (the journal was older than the keys, e.g.
    /// after a crash between a rotation and storing the journal), that authority is retired: it
    /// stays in the bundle while its SVIDs live, and the next tick activates a successor. The
    /// journal revision then differs from the one loaded: store the journal again.
    pub fn load(
        config: CaConfig,
        keys: Arc<dyn KeyManager>,
        journal: Journal,
        clock: SharedClock,
    ) -> Result<Self, CaError> {
        config.validate()?;
        if journal.trust_domain != config.trust_domain {
            return Err(CaError::Journal(format!(
                "journal is for trust domain {}, the configuration for {}",
                journal.trust_domain, config.trust_domain
            )));
        }
        check_journal(&journal)?;
        let mut bundle = build_bundle(&journal, config.refresh_hint)?;
        bundle.set_sequence(journal.bundle_sequence);
        let ca = Self {
            trust_domain: config.trust_domain,
            key_type: config.key_type,
            ca_ttl: config.ca_ttl.as_secs(),
            jwt_key_ttl: config.jwt_key_ttl.as_secs(),
            x509_svid_ttl: config.x509_svid_ttl,
            jwt_svid_ttl: config.jwt_svid_ttl,
            backdate: config.backdate.as_secs(),
            refresh_hint: config.refresh_hint,
            upstream: config.upstream,
            keys,
            clock,
            state: RwLock::new(State {
                journal,
                bundle,
                x509_signers: HashMap::new(),
                jwt_signers: HashMap::new(),
                active_x509: None,
                active_jwt: None,
                pending_deletions: Vec::new(),
            }),
            signed_until: AtomicU64::new(0),
        };
        {
            let mut st = ca.write();
            let _ = ca.apply(&mut st, |ca, j, _| ca.retire_keyless(j))?;
        }
        Ok(ca)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The trust bundle as it stands: the roots and JWT keys to publish.
    pub fn bundle(&self) -> Bundle {
        self.read().bundle.clone()
    }

    /// The journal to store; see [`TickOutcome::journal_changed`] and [`Journal::revision`].
    pub fn journal(&self) -> Journal {
        self.read().journal.clone()
    }

    /// The revision of the current journal; it increases on every change.
    pub fn journal_revision(&self) -> u64 {
        self.read().journal.revision
    }

    /// All authorities, X.509 first, each in creation order.
    pub fn authorities(&self) -> Vec<AuthorityInfo> {
        let st = self.read();
        let x509 = st.journal.x509_authorities.iter().map(|r| AuthorityInfo {
            kind: AuthorityKind::X509,
            id: r.id.clone(),
            state: r.state,
            tainted: r.tainted,
            not_before: to_time(r.not_before),
            not_after: to_time(r.not_after),
        });
        let jwt = st.journal.jwt_authorities.iter().map(|r| AuthorityInfo {
            kind: AuthorityKind::Jwt,
            id: r.id.clone(),
            state: r.state,
            tainted: r.tainted,
            not_before: to_time(r.not_before),
            not_after: to_time(r.not_after),
        });
        x509.chain(jwt).collect()
    }

    /// Advances rotation to the clock's current time. Call it regularly (SPIRE checks every 10
    /// seconds); minting never rotates by itself.
    ///
    /// For each kind (X.509, JWT): an authority past its `NotAfter` that no longer signs is
    /// pruned from the bundle; if no active authority is valid, the prepared one is activated or
    /// a new one is made and activated; at 1/2 of the active authority's lifetime a successor is
    /// prepared (and published); at 5/6 the successor is activated and the previous one retired.
    pub fn tick(&self) -> Result<TickOutcome, CaError> {
        let now = self.now_secs()?;
        let mut st = self.write();
        self.apply(&mut st, |ca, j, changes| {
            rotate(
                &mut j.x509_authorities,
                now,
                ca.next_x509_not_after(now),
                changes,
                |c| ca.create_x509(now, c),
            )?;
            rotate(
                &mut j.jwt_authorities,
                now,
                now.saturating_add(ca.jwt_key_ttl),
                changes,
                |c| ca.create_jwt(now, c),
            )
        })
    }

    /// Incident response for authority `id` (X.509 SKI or JWT `kid`).
    ///
    /// - Active: rotates now. The prepared successor is activated, or a new one is made and
    ///   activated; the tainted authority stops signing at once but stays in the bundle until its
    ///   `NotAfter`, so SVIDs it signed keep working until re-minted. [`revoke`](Self::revoke) it
    ///   to distrust them sooner.
    /// - Prepared: removed from the bundle at once (it has signed nothing).
    /// - Old: marked tainted.
    pub fn taint(&self, id: &str) -> Result<TickOutcome, CaError> {
        let now = self.now_secs()?;
        let mut st = self.write();
        self.apply(&mut st, |ca, j, changes| {
            if j.x509_authorities.iter().any(|r| r.id == id) {
                taint_in(&mut j.x509_authorities, id, now, changes, |c| {
                    ca.create_x509(now, c)
                })
            } else if j.jwt_authorities.iter().any(|r| r.id == id) {
                taint_in(&mut j.jwt_authorities, id, now, changes, |c| {
                    ca.create_jwt(now, c)
                })
            } else {
                Err(CaError::UnknownAuthority(id.to_owned()))
            }
        })
    }

    /// Removes a prepared or old authority from the bundle at once: everything it signed stops
    /// verifying as soon as the new bundle reaches the verifiers. The active authority cannot be
    /// revoked; [`taint`](Self::taint) it first.
    pub fn revoke(&self, id: &str) -> Result<TickOutcome, CaError> {
        let mut st = self.write();
        self.apply(&mut st, |_, j, changes| {
            if let Some(i) = j.x509_authorities.iter().position(|r| r.id == id) {
                revoke_at(&mut j.x509_authorities, i, changes)
            } else if let Some(i) = j.jwt_authorities.iter().position(|r| r.id == id) {
                revoke_at(&mut j.jwt_authorities, i, changes)
            } else {
                Err(CaError::UnknownAuthority(id.to_owned()))
            }
        })
    }

    /// Mints an X509-SVID for a public key given as a DER SubjectPublicKeyInfo.
    pub fn mint_x509_svid(
        &self,
        public_key_der: &[u8],
        req: &X509SvidRequest,
    ) -> Result<X509Svid, CaError> {
        self.mint_for_spki(public_key_der, req, HandedOut::Yes)
    }

    /// Mints an X509-SVID for this process's own use (a server's TLS identity), whose key lives
    /// only in its memory: it does not count in [`signed_until`](Self::signed_until), since
    /// nobody can present it once the process is gone.
    pub fn mint_own_x509_svid(
        &self,
        public_key_der: &[u8],
        req: &X509SvidRequest,
    ) -> Result<X509Svid, CaError> {
        self.mint_for_spki(public_key_der, req, HandedOut::No)
    }

    /// Mints an X509-SVID from a DER PKCS#10 CSR. The CSR's signature is verified; only its
    /// public key is used, never its subject, extensions or SANs.
    pub fn mint_x509_svid_from_csr(
        &self,
        csr_der: &[u8],
        req: &X509SvidRequest,
    ) -> Result<X509Svid, CaError> {
        self.mint_x509_svid_for_csr(&VerifiedCsr::from_der(csr_der)?, req)
    }

    /// Mints an X509-SVID for the key of a CSR checked beforehand.
    pub fn mint_x509_svid_for_csr(
        &self,
        csr: &VerifiedCsr,
        req: &X509SvidRequest,
    ) -> Result<X509Svid, CaError> {
        self.check_id(&req.spiffe_id)?;
        self.mint_for_key(&csr.0, req, HandedOut::Yes)
    }

    /// Signs a JWT-SVID with the active JWT key. `exp` is capped at the key's expiry, so the key
    /// stays in the bundle as long as any token it signed.
    pub fn mint_jwt_svid(&self, req: &JwtSvidRequest) -> Result<JwtSvid, CaError> {
        self.check_id(&req.spiffe_id)?;
        jwt::check_request(req)?;
        let ttl = ttl_secs(req.ttl.unwrap_or(self.jwt_svid_ttl))?;
        let (key, now, exp) = self.jwt_key_for(ttl)?;
        let token = key.signer.sign(req, now, exp)?;
        self.signed_until.fetch_max(exp, Ordering::Relaxed);
        Ok(JwtSvid {
            token,
            spiffe_id: req.spiffe_id.clone(),
            audience: req.audience.clone(),
            issued_at: to_time(now),
            expires_at: to_time(exp),
            key_id: key.signer.kid().to_owned(),
        })
    }

    /// Signs an OAuth access token (RFC 9068, `typ: at+jwt`) with the active JWT key, the key
    /// the trust bundle publishes; `exp` is capped at the key's expiry like a JWT-SVID's.
    pub fn mint_access_token(&self, req: &AccessTokenRequest) -> Result<AccessToken, CaError> {
        if req.audience.is_empty() || req.subject.is_empty() || req.jti.is_empty() {
            return Err(CaError::IncompleteAccessToken);
        }
        jwt::check_extra_claims(&req.extra_claims)?;
        let ttl = ttl_secs(req.ttl)?;
        let (key, now, exp) = self.jwt_key_for(ttl)?;
        let token = key.signer.sign_access_token(req, now, exp)?;
        self.signed_until.fetch_max(exp, Ordering::Relaxed);
        Ok(AccessToken {
            token,
            issued_at: to_time(now),
            expires_at: to_time(exp),
            key_id: key.signer.kid().to_owned(),
        })
    }

    /// The active JWT key, and `now` and the expiry of a token lasting `ttl` seconds: capped at
    /// the key's expiry, so the key stays in the bundle as long as any token it signed.
    fn jwt_key_for(&self, ttl: u64) -> Result<(Arc<JwtKey>, u64, u64), CaError> {
        let now = self.now_secs()?;
        let key = self
            .read()
            .active_jwt
            .clone()
            .filter(|k| now < k.not_after)
            .ok_or(CaError::NoActiveAuthority { kind: "JWT" })?;
        let exp = now.saturating_add(ttl).min(key.not_after);
        Ok((key, now, exp))
    }

    fn mint_for_spki(
        &self,
        public_key_der: &[u8],
        req: &X509SvidRequest,
        handed_out: HandedOut,
    ) -> Result<X509Svid, CaError> {
        self.check_id(&req.spiffe_id)?;
        let key = LeafKey::from_spki_der(public_key_der)?;
        self.mint_for_key(&key, req, handed_out)
    }

    fn mint_for_key(
        &self,
        key: &LeafKey,
        req: &X509SvidRequest,
        handed_out: HandedOut,
    ) -> Result<X509Svid, CaError> {
        let ttl = ttl_secs(req.ttl.unwrap_or(self.x509_svid_ttl))?;
        let now = self.now_secs()?;
        let signer = self
            .read()
            .active_x509
            .clone()
            .filter(|s| now < s.not_after)
            .ok_or(CaError::NoActiveAuthority { kind: "X.509" })?;
        let not_before = now.saturating_sub(self.backdate);
        let not_after = now.saturating_add(ttl).min(signer.not_after);
        let leaf = cert::build_leaf(
            &signer.key,
            &signer.subject,
            &signer.aki_extension,
            key,
            &LeafParams {
                spiffe_id: &req.spiffe_id,
                dns_names: &req.dns_names,
                not_before,
                not_after,
            },
        )?;
        if handed_out == HandedOut::Yes {
            self.signed_until.fetch_max(not_after, Ordering::Relaxed);
        }
        let mut cert_chain = Vec::with_capacity(1 + signer.chain.len());
        cert_chain.push(leaf);
        cert_chain.extend(signer.chain.iter().cloned());
        Ok(X509Svid {
            spiffe_id: req.spiffe_id.clone(),
            cert_chain,
            not_before: to_time(not_before),
            not_after: to_time(not_after),
            authority_id: signer.id.clone(),
        })
    }

    /// The latest expiry of any SVID or token this CA signed since it was loaded (`None` before
    /// the first).
    pub fn signed_until(&self) -> Option<SystemTime> {
        match self.signed_until.load(Ordering::Relaxed) {
            0 => None,
            secs => Some(to_time(secs)),
        }
    }

    fn check_id(&self, id: &SpiffeId) -> Result<(), CaError> {
        if !id.is_member_of(&self.trust_domain) {
            return Err(CaError::ForeignTrustDomain {
                id: id.to_string(),
                trust_domain: self.trust_domain.to_string(),
            });
        }
        if id.is_trust_domain_id() {
            return Err(CaError::RootIdNotAllowed(id.to_string()));
        }
        Ok(())
    }

    fn now_secs(&self) -> Result<u64, CaError> {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| CaError::TimeOutOfRange)
    }

    /// When an X.509 authority made at `now` would expire: `now + ca_ttl`, capped at the upstream
    /// CA's expiry.
    fn next_x509_not_after(&self, now: u64) -> u64 {
        let na = now.saturating_add(self.ca_ttl);
        match &self.upstream {
            Some(up) => na.min(up.info.not_after),
            None => na,
        }
    }

    fn create_x509(&self, now: u64, changes: &mut KeyChanges) -> Result<X509Record, CaError> {
        let not_after = self.next_x509_not_after(now);
        if not_after <= now {
            return Err(CaError::Upstream(
                "the upstream CA certificate has expired; renew it".into(),
            ));
        }
        let key_id = KeyId::random("x509")?;
        let key = self.keys.generate_key(&key_id, self.key_type)?;
        changes.created.push(key_id.clone());
        let not_before = now.saturating_sub(self.backdate);
        let (issuer, signer): (Option<IssuerName<'_>>, &dyn CertSigner) = match &self.upstream {
            Some(up) => (
                Some(IssuerName {
                    name_der: &up.info.subject,
                    key_id: up.info.subject_key_id.as_deref(),
                }),
                &up.key,
            ),
            None => (None, key.as_ref()),
        };
        let certificate = cert::build_ca_cert(
            &CaCertParams {
                trust_domain: &self.trust_domain,
                spki: key.public_key_der(),
                public_key_bits: key.public_key_bits(),
                not_before,
                not_after,
                issuer,
            },
            signer,
        )?;
        let (upstream_chain, roots) = match &self.upstream {
            Some(up) => (up.chain.clone(), up.roots.clone()),
            None => (Vec::new(), vec![certificate.clone()]),
        };
        Ok(X509Record {
            id: hex(&crate::leaf_key::key_identifier(key.public_key_bits())),
            key_id,
            state: AuthorityState::Prepared,
            tainted: false,
            certificate,
            upstream_chain,
            roots,
            not_before,
            not_after,
        })
    }

    fn create_jwt(&self, now: u64, changes: &mut KeyChanges) -> Result<JwtRecord, CaError> {
        let key_id = KeyId::random("jwt")?;
        let key = self.keys.generate_key(&key_id, self.key_type)?;
        changes.created.push(key_id.clone());
        Ok(JwtRecord {
            id: key.jwt_key_id(),
            key_id,
            state: AuthorityState::Prepared,
            tainted: false,
            public_key: key.public_key_der().to_vec(),
            not_before: now,
            not_after: now.saturating_add(self.jwt_key_ttl),
        })
    }

    /// Retires active authorities and drops prepared ones whose keys are missing (see `load`).
    fn retire_keyless(&self, j: &mut Journal) -> Result<(), CaError> {
        for r in &mut j.x509_authorities {
            if r.state == AuthorityState::Active && self.keys.get_key(&r.key_id)?.is_none() {
                r.state = AuthorityState::Old;
            }
        }
        for r in &mut j.jwt_authorities {
            if r.state == AuthorityState::Active && self.keys.get_key(&r.key_id)?.is_none() {
                r.state = AuthorityState::Old;
            }
        }
        let mut missing = Vec::new();
        for r in &j.x509_authorities {
            if r.state == AuthorityState::Prepared && self.keys.get_key(&r.key_id)?.is_none() {
                missing.push(r.key_id.clone());
            }
        }
        for r in &j.jwt_authorities {
            if r.state == AuthorityState::Prepared && self.keys.get_key(&r.key_id)?.is_none() {
                missing.push(r.key_id.clone());
            }
        }
        j.x509_authorities.retain(|r| !missing.contains(&r.key_id));
        j.jwt_authorities.retain(|r| !missing.contains(&r.key_id));
        Ok(())
    }

    /// Computes a new state with `mutate` on a copy of the journal, then commits it: signers,
    /// bundle (sequence + 1 if its contents changed), journal revision (+ 1 if it changed), and
    /// deletion of keys that no longer sign. On error nothing changes and keys made are deleted.
    fn apply(
        &self,
        st: &mut State,
        mutate: impl FnOnce(&Self, &mut Journal, &mut KeyChanges) -> Result<(), CaError>,
    ) -> Result<TickOutcome, CaError> {
        let mut changes = KeyChanges::default();
        let mut journal = st.journal.clone();
        let result = mutate(self, &mut journal, &mut changes)
            .and_then(|()| self.signers_for(st, &journal))
            .and_then(|signers| {
                let mut bundle = build_bundle(&journal, self.refresh_hint)?;
                bundle.set_sequence(st.bundle.sequence());
                Ok((signers, bundle))
            });
        let ((x509_signers, jwt_signers), mut bundle) = match result {
            Ok(v) => v,
            Err(e) => {
                for id in &changes.created {
                    // Best effort: an orphaned key file is harmless, the error below matters.
                    let _ = self.keys.delete_key(id);
                }
                return Err(e);
            }
        };
        let bundle_changed = bundle != st.bundle;
        if bundle_changed {
            journal.bundle_sequence = journal.bundle_sequence.saturating_add(1);
            bundle.set_sequence(journal.bundle_sequence);
        }
        let journal_changed = journal != st.journal;
        if journal_changed {
            journal.revision = journal.revision.saturating_add(1);
        }
        st.active_x509 = active_signer(&journal.x509_authorities, &x509_signers);
        st.active_jwt = active_signer(&journal.jwt_authorities, &jwt_signers);
        st.x509_signers = x509_signers;
        st.jwt_signers = jwt_signers;
        st.journal = journal;
        st.bundle = bundle;

        // Keys of authorities that no longer sign are deleted now, not when they leave the
        // bundle: verifying their SVIDs needs only the certificate or public key.
        let mut pending = std::mem::take(&mut st.pending_deletions);
        pending.extend(changes.to_delete);
        for id in pending {
            let still_used = st.x509_signers.contains_key(&id) || st.jwt_signers.contains_key(&id);
            if !still_used && self.keys.delete_key(&id).is_err() {
                st.pending_deletions.push(id);
            }
        }
        Ok(TickOutcome {
            journal_changed,
            bundle_changed,
        })
    }

    /// Signers for the prepared and active authorities of `journal`, reusing existing ones.
    #[allow(clippy::type_complexity, reason = "a private pair of maps")]
    fn signers_for(
        &self,
        st: &State,
        journal: &Journal,
    ) -> Result<(HashMap<KeyId, Arc<X509Signer>>, HashMap<KeyId, Arc<JwtKey>>), CaError> {
        let mut x509 = HashMap::new();
        for r in journal
            .x509_authorities
            .iter()
            .filter(|r| r.state != AuthorityState::Old)
        {
            let signer = match st.x509_signers.get(&r.key_id) {
                Some(s) => Arc::clone(s),
                None => Arc::new(self.x509_signer(r)?),
            };
            x509.insert(r.key_id.clone(), signer);
        }
        let mut jwt = HashMap::new();
        for r in journal
            .jwt_authorities
            .iter()
            .filter(|r| r.state != AuthorityState::Old)
        {
            let signer = match st.jwt_signers.get(&r.key_id) {
                Some(s) => Arc::clone(s),
                None => {
                    let key = self.key(&r.key_id)?;
                    if key.public_key_der() != r.public_key.as_slice() {
                        return Err(CaError::Journal(format!(
                            "key {} does not match JWT authority {}",
                            r.key_id, r.id
                        )));
                    }
                    Arc::new(JwtKey {
                        signer: JwtSigner::new(key)?,
                        not_after: r.not_after,
                    })
                }
            };
            jwt.insert(r.key_id.clone(), signer);
        }
        Ok((x509, jwt))
    }

    fn x509_signer(&self, r: &X509Record) -> Result<X509Signer, CaError> {
        let key = self.key(&r.key_id)?;
        let info = CertInfo::parse(&r.certificate).map_err(CaError::Journal)?;
        if key.public_key_der() != info.spki.as_slice() {
            return Err(CaError::Journal(format!(
                "key {} does not match X.509 authority {}",
                r.key_id, r.id
            )));
        }
        let ski = info
            .subject_key_id
            .ok_or_else(|| CaError::Journal(format!("authority {} has no SKI", r.id)))?;
        // SVID chains stop below the root: a self-signed authority adds nothing after the leaf.
        let mut chain = Vec::with_capacity(1 + r.upstream_chain.len());
        if !r.roots.contains(&r.certificate) {
            chain.push(r.certificate.clone());
            chain.extend(r.upstream_chain.iter().cloned());
        }
        Ok(X509Signer {
            id: r.id.clone(),
            key,
            subject: info.subject,
            aki_extension: cert::aki_extension(&ski),
            chain,
            not_after: r.not_after,
        })
    }

    fn key(&self, id: &KeyId) -> Result<Arc<PrivateKey>, CaError> {
        self.keys
            .get_key(id)?
            .ok_or_else(|| CaError::KeyNotFound(id.to_string()))
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // State is replaced whole at the end of `apply`, so a panic elsewhere cannot leave it
        // half-written; keep serving.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("key_type", &self.key_type)
            .field("upstream", &self.upstream.is_some())
            .finish_non_exhaustive()
    }
}

// === impl X509SvidRequest ===

impl X509SvidRequest {
    /// A request with no DNS names and the default TTL.
    pub fn new(spiffe_id: SpiffeId) -> Self {
        Self {
            spiffe_id,
            dns_names: Vec::new(),
            ttl: None,
        }
    }

    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    pub fn with_dns_names(mut self, dns_names: Vec<DnsName>) -> Self {
        self.dns_names = dns_names;
        self
    }
}

// === impl X509Svid ===

impl X509Svid {
    pub fn leaf_der(&self) -> &[u8] {
        self.cert_chain.first().map_or(&[], Vec::as_slice)
    }

    /// The chain as concatenated DER, leaf first (the Workload API's `x509_svid` field).
    pub fn chain_der_concatenated(&self) -> Vec<u8> {
        self.cert_chain.concat()
    }
}

// === rotation ===

/// One step of the rotation schedule for one kind of authority (see [`Ca::tick`]).
fn rotate<R: Record>(
    records: &mut Vec<R>,
    now: u64,
    planned_not_after: u64,
    changes: &mut KeyChanges,
    mut create: impl FnMut(&mut KeyChanges) -> Result<R, CaError>,
) -> Result<(), CaError> {
    // Each pass can enable the next (e.g. after a long outage: replace an expired active one,
    // then prune it); a few passes always reach a fixed point.
    for _ in 0..4 {
        let mut changed = false;

        // Prune what no longer signs and whose every SVID has expired. `NotAfter` is inclusive in
        // X.509, so the authority stays through its last second.
        records.retain(|r| {
            let expired = r.state() != AuthorityState::Active && now > r.not_after();
            if expired {
                changes.to_delete.push(r.key_id().clone());
                changed = true;
            }
            !expired
        });

        // Make sure an authority that can still sign is active.
        let active = records
            .iter()
            .position(|r| r.state() == AuthorityState::Active);
        if active.is_none_or(|i| records[i].not_after() <= now) {
            if let Some(i) = active {
                records[i].set_state(AuthorityState::Old);
                changes.to_delete.push(records[i].key_id().clone());
            }
            if let Some(p) = records
                .iter()
                .position(|r| r.state() == AuthorityState::Prepared && r.not_after() > now)
            {
                records[p].set_state(AuthorityState::Active);
            } else {
                let mut r = create(changes)?;
                r.set_state(AuthorityState::Active);
                records.push(r);
            }
            changed = true;
        }

        let Some(a) = records
            .iter()
            .position(|r| r.state() == AuthorityState::Active)
        else {
            break;
        };
        let (nb, na) = (records[a].not_before(), records[a].not_after());
        let life = na.saturating_sub(nb);
        let prepared = records
            .iter()
            .position(|r| r.state() == AuthorityState::Prepared);

        // Prepare at 1/2 — unless the successor could not outlive the active authority (an
        // upstream CA about to expire caps both).
        if prepared.is_none() && now >= nb + life / 2 && planned_not_after > na {
            records.push(create(changes)?);
            changed = true;
        }

        // Activate at 5/6.
        if let Some(p) = records
            .iter()
            .position(|r| r.state() == AuthorityState::Prepared)
            && now >= nb + life * 5 / 6
        {
            records[a].set_state(AuthorityState::Old);
            changes.to_delete.push(records[a].key_id().clone());
            records[p].set_state(AuthorityState::Active);
            changed = true;
        }

        if !changed {
            break;
        }
    }
    Ok(())
}

fn taint_in<R: Record + Tainted>(
    records: &mut Vec<R>,
    id: &str,
    now: u64,
    changes: &mut KeyChanges,
    mut create: impl FnMut(&mut KeyChanges) -> Result<R, CaError>,
) -> Result<(), CaError> {
    let Some(i) = records.iter().position(|r| r.id() == id) else {
        return Err(CaError::UnknownAuthority(id.to_owned()));
    };
    match records[i].state() {
        AuthorityState::Old => records[i].set_tainted(),
        AuthorityState::Prepared => {
            changes.to_delete.push(records[i].key_id().clone());
            records.remove(i);
        }
        AuthorityState::Active => {
            records[i].set_tainted();
            records[i].set_state(AuthorityState::Old);
            changes.to_delete.push(records[i].key_id().clone());
            if let Some(p) = records
                .iter()
                .position(|r| r.state() == AuthorityState::Prepared && r.not_after() > now)
            {
                records[p].set_state(AuthorityState::Active);
            } else {
                let mut r = create(changes)?;
                r.set_state(AuthorityState::Active);
                records.push(r);
            }
        }
    }
    Ok(())
}

fn revoke_at<R: Record + Tainted>(
    records: &mut Vec<R>,
    i: usize,
    changes: &mut KeyChanges,
) -> Result<(), CaError> {
    if records[i].state() == AuthorityState::Active {
        return Err(CaError::RevokeActive(records[i].id().to_owned()));
    }
    changes.to_delete.push(records[i].key_id().clone());
    records.remove(i);
    Ok(())
}

/// Records that have a public id and a taint flag.
trait Tainted {
    fn id(&self) -> &str;
    fn set_tainted(&mut self);
}

impl Tainted for X509Record {
    fn id(&self) -> &str {
        &self.id
    }
    fn set_tainted(&mut self) {
        self.tainted = true;
    }
}

impl Tainted for JwtRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn set_tainted(&mut self) {
        self.tainted = true;
    }
}

fn active_signer<R: Record, S>(records: &[R], signers: &HashMap<KeyId, Arc<S>>) -> Option<Arc<S>> {
    records
        .iter()
        .find(|r| r.state() == AuthorityState::Active)
        .and_then(|r| signers.get(r.key_id()))
        .cloned()
}

// === bundle and journal ===

/// The bundle a journal publishes: the roots of every X.509 authority (each once, in creation
/// order) and every JWT key, with sequence 0 (the caller sets it).
/// A journal's authorities as a bundle (no sequence, no refresh hint).
pub(crate) fn journal_bundle(journal: &Journal) -> Result<Bundle, CaError> {
    let mut bundle = build_bundle(journal, crate::DEFAULT_REFRESH_HINT)?;
    bundle.set_refresh_hint(None);
    Ok(bundle)
}

fn build_bundle(journal: &Journal, refresh_hint: Duration) -> Result<Bundle, CaError> {
    let mut bundle = Bundle::new(journal.trust_domain.clone());
    for r in &journal.x509_authorities {
        for root in &r.roots {
            bundle.add_x509_authority(X509Authority::from_der(root.clone())?);
        }
    }
    for r in &journal.jwt_authorities {
        bundle.add_jwt_authority(JwtAuthority::new(r.id.clone(), r.public_key.clone())?);
    }
    bundle.set_refresh_hint(Some(refresh_hint));
    Ok(bundle)
}

/// Structural checks of a journal read from storage.
fn check_journal(j: &Journal) -> Result<(), CaError> {
    let actives = |n: usize, kind: &str| {
        if n > 1 {
            Err(CaError::Journal(format!("{n} active {kind} authorities")))
        } else {
            Ok(())
        }
    };
    actives(
        j.x509_authorities
            .iter()
            .filter(|r| r.state == AuthorityState::Active)
            .count(),
        "X.509",
    )?;
    actives(
        j.jwt_authorities
            .iter()
            .filter(|r| r.state == AuthorityState::Active)
            .count(),
        "JWT",
    )?;
    for r in &j.x509_authorities {
        let info = CertInfo::parse(&r.certificate).map_err(CaError::Journal)?;
        if info.not_after != r.not_after || info.not_before != r.not_before {
            return Err(CaError::Journal(format!(
                "X.509 authority {} has inconsistent validity",
                r.id
            )));
        }
        if r.roots.is_empty() {
            return Err(CaError::Journal(format!(
                "X.509 authority {} has no root",
                r.id
            )));
        }
    }
    for r in &j.jwt_authorities {
        if key_id_for_spki(&r.public_key) != r.id || r.not_before > r.not_after {
            return Err(CaError::Journal(format!(
                "JWT authority {} is inconsistent",
                r.id
            )));
        }
    }
    Ok(())
}

// === helpers ===

/// A TTL in whole seconds, rounded up; zero is refused and anything beyond 100 years is cut there
/// (it is capped at the signer's expiry anyway).
fn ttl_secs(ttl: Duration) -> Result<u64, CaError> {
    if ttl.is_zero() {
        return Err(CaError::ZeroTtl);
    }
    let ttl = ttl.min(MAX_TTL);
    Ok(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
}

fn to_time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Ca>();
        shared::<X509Svid>();
        shared::<JwtSvid>();
    }

    #[test]
    fn ttls_round_up_to_whole_seconds_and_zero_is_refused() {
        assert!(matches!(ttl_secs(Duration::ZERO), Err(CaError::ZeroTtl)));
        assert_eq!(ttl_secs(Duration::from_nanos(1)).ok(), Some(1));
        assert_eq!(ttl_secs(Duration::from_millis(1500)).ok(), Some(2));
        assert_eq!(ttl_secs(Duration::from_secs(60)).ok(), Some(60));
        assert_eq!(ttl_secs(Duration::MAX).ok(), Some(MAX_TTL.as_secs()));
    }
}
