//! The agent's view of the world, as plain data: the entries the server says this agent may serve
//! (and the revision they are at), the trust bundles, and one X509-SVID per entry. No I/O and no
//! async: the sync and mint loops drive it and publish what [`Cache::snapshot`] returns.
//!
//! Rules:
//! - A full sync replaces every entry; a delta adds, changes and removes. Chunks of one update are
//!   collected and applied together when the last one (`more == false`) arrives, so a workload
//!   never sees half of a full set.
//! - An SVID is kept while its entry exists. It is minted again when it reaches its renewal time
//!   (1/2 lifetime ±10%), when the entry changes what the certificate says (SPIFFE ID, DNS names,
//!   TTL), or when the bundle no longer verifies it (its CA was removed). Until the replacement
//!   arrives the old one is served, unless the SPIFFE ID changed or the bundle no longer verifies
//!   it (its root was revoked: peers would refuse it, and its key may be compromised): then it
//!   is withheld at once.
//! - An SVID past its `NotAfter` is never served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use lanyard_core::entry::{DEFAULT_JWT_SVID_TTL, DEFAULT_X509_SVID_TTL};
use lanyard_core::{
    Bundle, BundleSet, DnsName, EntryId, EntrySpec, RegistrationEntry, RevocationList, Selector,
    SelectorSet, SpiffeId, TrustDomain,
};
use lanyard_proto::node as pb;
use lanyard_workload::{Identity, Revocations, Snapshot, SvidKey};

use crate::storage::validity;
use crate::timing;

/// Entries, bundles and SVIDs.
#[derive(Debug)]
pub(crate) struct Cache {
    trust_domain: TrustDomain,
    entries: HashMap<EntryId, RegistrationEntry>,
    /// Revoked tokens, as the server last sent them whole; `None` until the first list arrives
    /// (the agent then validates no token).
    revoked: Option<RevocationList>,
    /// The revision of the last update applied in full; 0 before the first.
    revision: u64,
    /// Chunks of an update whose last chunk has not arrived yet.
    pending: Option<Pending>,
    own_bundle: Bundle,
    federated: BTreeMap<TrustDomain, Bundle>,
    svids: HashMap<EntryId, CachedSvid>,
}

/// An X509-SVID held for an entry.
#[derive(Debug, Clone)]
pub(crate) struct CachedSvid {
    /// What the certificate says; compared with the entry to see whether it must be re-minted.
    minted_for: MintKey,
    /// DER, leaf first.
    chain: Vec<Vec<u8>>,
    key: SvidKey,
    not_after: SystemTime,
    renew_at: SystemTime,
    /// The bundle no longer verifies it: mint again now.
    untrusted: bool,
}

/// The fields of an entry that end up in its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MintKey {
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) dns_names: Vec<DnsName>,
    pub(crate) ttl: Duration,
}

/// What to mint: the entry and what its certificate must say.
#[derive(Debug, Clone)]
pub(crate) struct MintJob {
    pub(crate) entry_id: EntryId,
    pub(crate) minted_for: MintKey,
}

/// Whether entries use `unix:sha256:…` or `unix:path:…`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnixSelectorUsage {
    pub(crate) sha256: bool,
    pub(crate) path: bool,
}

/// What applying one sync message changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SyncOutcome {
    /// The update is complete (the last chunk arrived) and was applied.
    pub(crate) applied: bool,
    /// The own bundle changed (persist it).
    pub(crate) bundle_changed: bool,
    /// Entries in the message that could not be parsed and were skipped.
    pub(crate) skipped: usize,
}

/// Why a minted SVID was not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InstallError {
    /// The entry was removed or changed while the SVID was minted; the next round mints anew.
    Stale,
    /// The certificate does not check out.
    Invalid(String),
}

/// Why a sync message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SyncError {
    #[error("the trust bundle in the entry stream is invalid: {0}")]
    Bundle(String),
    #[error("the federated bundle of {trust_domain} is invalid: {reason}")]
    FederatedBundle {
        trust_domain: String,
        reason: String,
    },
    #[error("the server sent an update without a revision")]
    NoRevision,
}

#[derive(Debug)]
struct Pending {
    full: bool,
    entries: Vec<RegistrationEntry>,
    removed: Vec<EntryId>,
    bundle: Option<Bundle>,
    federated: Option<BTreeMap<TrustDomain, Bundle>>,
    skipped: usize,
}

// === impl Cache ===

impl Cache {
    pub(crate) fn new(trust_domain: TrustDomain, own_bundle: Bundle) -> Self {
        Self {
            trust_domain,
            entries: HashMap::new(),
            revoked: None,
            revision: 0,
            pending: None,
            own_bundle,
            federated: BTreeMap::new(),
            svids: HashMap::new(),
        }
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn own_bundle(&self) -> &Bundle {
        &self.own_bundle
    }

    #[cfg(test)]
    pub(crate) fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The entry to mint JWT-SVIDs for `spiffe_id` with (the first by id, if several share it).
    pub(crate) fn entry_for(&self, spiffe_id: &SpiffeId, now: SystemTime) -> Option<EntryId> {
        self.entries
            .values()
            .filter(|e| e.spiffe_id() == spiffe_id && !e.is_expired(now))
            .map(|e| e.id().clone())
            .min()
    }

    /// The unexpired entries a caller with `caller` selectors may be served (the entry's
    /// selectors are a subset of the caller's), as (SPIFFE ID, entry id), ordered by entry id.
    pub(crate) fn entries_for_caller(
        &self,
        caller: &SelectorSet,
        now: SystemTime,
    ) -> Vec<(SpiffeId, EntryId)> {
        let mut found: Vec<(SpiffeId, EntryId)> = self
            .entries
            .values()
            .filter(|e| !e.is_expired(now) && e.selectors().is_subset(caller))
            .map(|e| (e.spiffe_id().clone(), e.id().clone()))
            .collect();
        found.sort_by(|a, b| a.1.cmp(&b.1));
        found
    }

    /// Forgets a partly received update (its stream broke).
    pub(crate) fn discard_pending(&mut self) {
        self.pending = None;
    }

    /// Starts over from revision 0, e.g. after the agent attested again under a new identity:
    /// the next sync is a full one. SVIDs stay until the full set says which entries remain.
    pub(crate) fn reset_revision(&mut self) {
        self.revision = 0;
        self.pending = None;
    }

    /// Applies one message of the entry stream.
    pub(crate) fn apply(
        &mut self,
        msg: pb::SyncEntriesResponse,
        now: SystemTime,
    ) -> Result<SyncOutcome, SyncError> {
        if msg.full_sync || self.pending.is_none() {
            self.pending = Some(Pending {
                full: msg.full_sync,
                entries: Vec::new(),
                removed: Vec::new(),
                bundle: None,
                federated: None,
                skipped: 0,
            });
        }
        // Revocations stand apart from entries: applied at once, even in the middle of chunks.
        if msg.revocations {
            self.revoked = Some(RevocationList::from_unix_seconds(
                msg.revoked
                    .iter()
                    .map(|r| (r.token_id.clone(), r.expires_at)),
            ));
        }
        let trust_domain = self.trust_domain.clone();
        let Some(pending) = self.pending.as_mut() else {
            return Ok(SyncOutcome::default());
        };
        for entry in &msg.entries {
            match parse_entry(entry, &trust_domain) {
                Some(entry) => pending.entries.push(entry),
                None => {
                    tracing::warn!(entry_id = %entry.id, "skipping an invalid entry from the server");
                    pending.skipped += 1;
                }
            }
        }
        pending.removed.extend(
            msg.removed_entry_ids
                .iter()
                .filter_map(|id| id.parse().ok()),
        );
        if !msg.bundle_json.is_empty() {
            let bundle = Bundle::parse_json(trust_domain.clone(), msg.bundle_json.as_bytes())
                .map_err(|e| SyncError::Bundle(e.to_string()))?;
            if bundle.x509_authorities().is_empty() {
                return Err(SyncError::Bundle("it holds no X.509 authority".into()));
            }
            pending.bundle = Some(bundle);
        }
        // The server sends the federated bundles, all of them, whenever it sends the own bundle
        // or when any of them changed: a message with the own bundle and no federated ones
        // means there are none.
        if !msg.federated_bundles.is_empty() || !msg.bundle_json.is_empty() {
            let mut federated = BTreeMap::new();
            for (name, json) in &msg.federated_bundles {
                let fail = |reason: String| SyncError::FederatedBundle {
                    trust_domain: name.clone(),
                    reason,
                };
                let td = TrustDomain::new(name.strip_prefix("spiffe://").unwrap_or(name))
                    .map_err(|e| fail(e.to_string()))?;
                if td == trust_domain {
                    return Err(fail("it is the agent's own trust domain".into()));
                }
                let bundle = Bundle::parse_json(td.clone(), json.as_bytes())
                    .map_err(|e| fail(e.to_string()))?;
                federated.insert(td, bundle);
            }
            pending.federated = Some(federated);
        }
        if msg.more {
            return Ok(SyncOutcome::default());
        }
        // Revision 0 is the datastore before its first entry write: a server with no entries yet
        // says so. Once the agent has a revision, an update without one is a broken server.
        if msg.revision == 0 && self.revision > 0 {
            self.pending = None;
            return Err(SyncError::NoRevision);
        }
        let Some(pending) = self.pending.take() else {
            return Ok(SyncOutcome::default());
        };
        Ok(self.commit(pending, msg.revision, now))
    }

    fn commit(&mut self, pending: Pending, revision: u64, now: SystemTime) -> SyncOutcome {
        if pending.full {
            self.entries.clear();
        } else {
            for id in &pending.removed {
                self.entries.remove(id);
            }
        }
        if let Some(federated) = pending.federated {
            self.federated = federated;
        }
        for entry in pending.entries {
            self.entries.insert(entry.id().clone(), entry);
        }
        let mut outcome = SyncOutcome {
            applied: true,
            bundle_changed: false,
            skipped: pending.skipped,
        };
        if let Some(bundle) = pending.bundle
            && bundle != self.own_bundle
        {
            self.own_bundle = bundle;
            outcome.bundle_changed = true;
        }
        self.revision = revision;

        // SVIDs of entries that are gone, or whose SPIFFE ID changed, go now.
        let entries = &self.entries;
        self.svids.retain(|id, svid| {
            entries
                .get(id)
                .is_some_and(|e| e.spiffe_id() == &svid.minted_for.spiffe_id)
        });
        if outcome.bundle_changed {
            self.recheck_trust(now);
        }
        outcome
    }

    /// Marks every SVID the current bundle no longer verifies for re-minting.
    fn recheck_trust(&mut self, now: SystemTime) {
        let bundles = self.bundle_set();
        for (id, svid) in &mut self.svids {
            if let Err(e) = lanyard_core::verify_x509_svid(&svid.chain, &bundles, now) {
                tracing::info!(entry_id = %id, reason = %e, "SVID no longer trusted; minting again");
                svid.untrusted = true;
            }
        }
    }

    /// Own and federated bundles.
    pub(crate) fn bundle_set(&self) -> BundleSet {
        std::iter::once(self.own_bundle.clone())
            .chain(self.federated.values().cloned())
            .collect()
    }

    /// Entries whose SVID is missing, due for renewal, for an older version of the entry, or no
    /// longer trusted; in entry-id order so that retries are fair.
    pub(crate) fn mint_jobs(&self, now: SystemTime) -> Vec<MintJob> {
        let mut jobs: Vec<MintJob> = self
            .entries
            .values()
            .filter(|e| !e.is_expired(now))
            .filter_map(|entry| {
                let minted_for = mint_key(entry);
                let due = match self.svids.get(entry.id()) {
                    None => true,
                    Some(svid) => {
                        svid.untrusted || svid.renew_at <= now || svid.minted_for != minted_for
                    }
                };
                due.then(|| MintJob {
                    entry_id: entry.id().clone(),
                    minted_for,
                })
            })
            .collect();
        jobs.sort_by(|a, b| a.entry_id.cmp(&b.entry_id));
        jobs
    }

    /// Stores an SVID minted for `job`, after checking it: the entry still exists and still says
    /// the same, the leaf names its SPIFFE ID and carries `key`, and the bundle verifies the chain.
    pub(crate) fn install(
        &mut self,
        job: &MintJob,
        chain: Vec<Vec<u8>>,
        key: SvidKey,
        key_spki: &[u8],
        now: SystemTime,
    ) -> Result<(), InstallError> {
        let current = self
            .entries
            .get(&job.entry_id)
            .map(mint_key)
            .ok_or(InstallError::Stale)?;
        if current != job.minted_for {
            return Err(InstallError::Stale);
        }
        self.check_and_install(job, chain, key, key_spki, now)
            .map_err(InstallError::Invalid)
    }

    fn check_and_install(
        &mut self,
        job: &MintJob,
        chain: Vec<Vec<u8>>,
        key: SvidKey,
        key_spki: &[u8],
        now: SystemTime,
    ) -> Result<(), String> {
        let leaf = chain.first().ok_or("the chain is empty")?;
        if crate::keys::spki_of_cert(leaf).as_deref() != Some(key_spki) {
            return Err("the certificate is not for the key sent".into());
        }
        let verified = lanyard_core::verify_x509_svid(&chain, &self.bundle_set(), now)
            .map_err(|e| format!("the certificate does not verify: {e}"))?;
        if verified.spiffe_id() != &job.minted_for.spiffe_id {
            return Err(format!(
                "the certificate is for {}, not {}",
                verified.spiffe_id(),
                job.minted_for.spiffe_id
            ));
        }
        let (not_before, not_after) =
            validity(leaf).ok_or("the certificate has no readable validity")?;
        self.svids.insert(
            job.entry_id.clone(),
            CachedSvid {
                minted_for: job.minted_for.clone(),
                chain,
                key,
                not_after,
                renew_at: timing::renew_at_received(not_before, not_after, now),
                untrusted: false,
            },
        );
        Ok(())
    }

    /// Drops SVIDs past their `NotAfter`; true if any was dropped.
    pub(crate) fn drop_expired(&mut self, now: SystemTime) -> bool {
        let before = self.svids.len();
        self.svids.retain(|_, svid| now < svid.not_after);
        before != self.svids.len()
    }

    /// The next moment something is due without any message arriving: an SVID renewal, an SVID
    /// expiring, or an entry expiring.
    pub(crate) fn next_deadline(&self, now: SystemTime) -> Option<SystemTime> {
        let svid_times = self
            .svids
            .values()
            .flat_map(|s| [s.renew_at, s.not_after])
            .filter(|t| *t > now);
        let entry_times = self
            .entries
            .values()
            .filter_map(RegistrationEntry::expires_at)
            .filter(|t| *t > now);
        svid_times.chain(entry_times).min()
    }

    /// What the Workload API serves now: every unexpired SVID of a live entry, ordered by SPIFFE ID
    /// then entry id (so the default SVID of a caller is stable), and every bundle.
    pub(crate) fn snapshot(&self, now: SystemTime) -> Snapshot {
        let mut served: Vec<(&RegistrationEntry, &CachedSvid)> = self
            .entries
            .values()
            .filter(|e| !e.is_expired(now))
            .filter_map(|e| Some((e, self.svids.get(e.id())?)))
            .filter(|(_, svid)| now < svid.not_after && !svid.untrusted)
            .collect();
        served.sort_by(|(a, _), (b, _)| {
            (a.spiffe_id().as_str(), a.id()).cmp(&(b.spiffe_id().as_str(), b.id()))
        });
        let identities = served
            .into_iter()
            .filter_map(|(entry, svid)| {
                Identity::new(
                    svid.minted_for.spiffe_id.clone(),
                    entry.selectors().clone(),
                    svid.chain.clone(),
                    svid.key.clone(),
                )
                .ok()
                .map(|identity| {
                    identity
                        .with_hint(entry.hint())
                        .with_federates_with(entry.federates_with().iter().cloned())
                })
            })
            .collect();
        let revocations = match &self.revoked {
            None => Revocations::Pending,
            Some(revoked) => {
                let mut revoked = revoked.clone();
                revoked.prune(now);
                Revocations::Known(std::sync::Arc::new(revoked))
            }
        };
        Snapshot::new(self.trust_domain.clone(), self.bundle_set(), identities)
            .with_revocations(revocations)
    }

    /// Which costly `unix` selectors some entry uses, so the attestor computes them only then.
    pub(crate) fn unix_selector_usage(&self) -> UnixSelectorUsage {
        let mut usage = UnixSelectorUsage::default();
        for selector in self.entries.values().flat_map(|e| e.selectors().iter()) {
            if selector.kind() == "unix" {
                usage.sha256 |= selector.value().starts_with("sha256:");
                usage.path |= selector.value().starts_with("path:");
            }
        }
        usage
    }

    /// The SPIFFE IDs of the current entries.
    pub(crate) fn spiffe_ids(&self) -> HashSet<SpiffeId> {
        self.entries
            .values()
            .map(|e| e.spiffe_id().clone())
            .collect()
    }

    /// Entry ids with an SVID.
    #[cfg(test)]
    pub(crate) fn svid_entry_ids(&self) -> HashSet<EntryId> {
        self.svids.keys().cloned().collect()
    }
}

fn mint_key(entry: &RegistrationEntry) -> MintKey {
    MintKey {
        spiffe_id: entry.spiffe_id().clone(),
        dns_names: entry.dns_names().to_vec(),
        ttl: entry.x509_svid_ttl(),
    }
}

/// Parses an entry from the server; `None` if any field is invalid.
pub(crate) fn parse_entry(
    entry: &pb::Entry,
    trust_domain: &TrustDomain,
) -> Option<RegistrationEntry> {
    let ttl = |secs: i64, default: Duration| match u64::try_from(secs) {
        Ok(0) => Some(default),
        Ok(s) => Some(Duration::from_secs(s)),
        Err(_) => None,
    };
    let expires_at = match u64::try_from(entry.expires_at).ok()? {
        0 => None,
        secs => Some(SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))?),
    };
    let spec = EntrySpec {
        id: entry.id.parse().ok()?,
        spiffe_id: entry.spiffe_id.parse().ok()?,
        parent_id: entry.parent_id.parse().ok()?,
        selectors: entry
            .selectors
            .iter()
            .map(|s| s.parse::<Selector>())
            .collect::<Result<SelectorSet, _>>()
            .ok()?,
        x509_svid_ttl: ttl(entry.x509_svid_ttl_seconds, DEFAULT_X509_SVID_TTL)?,
        jwt_svid_ttl: ttl(entry.jwt_svid_ttl_seconds, DEFAULT_JWT_SVID_TTL)?,
        dns_names: entry
            .dns_names
            .iter()
            .map(|d| d.parse())
            .collect::<Result<_, _>>()
            .ok()?,
        federates_with: entry
            .federates_with
            .iter()
            .map(|td| td.parse())
            .collect::<Result<_, _>>()
            .ok()?,
        admin: entry.admin,
        downstream: entry.downstream,
        hint: entry.hint.clone(),
        expires_at,
        revision: entry.revision,
    };
    RegistrationEntry::new_in(spec, trust_domain).ok()
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
