#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use lanyard_ca::{Ca, CaConfig, MemoryKeyManager, X509SvidRequest};
use lanyard_core::{Clock as _, ManualClock};

use super::*;
use crate::keys;

struct Fixture {
    clock: Arc<ManualClock>,
    ca: Ca,
    cache: Cache,
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn fixture() -> Fixture {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let ca = Ca::new(
        CaConfig::new(td()),
        Arc::new(MemoryKeyManager::new()),
        clock.clone(),
    )
    .unwrap();
    let cache = Cache::new(td(), ca.bundle());
    Fixture { clock, ca, cache }
}

fn entry(id: &str, path: &str) -> pb::Entry {
    pb::Entry {
        id: id.into(),
        spiffe_id: format!("spiffe://example.org/{path}"),
        parent_id: "spiffe://example.org/lanyard/agent/x".into(),
        selectors: vec![format!("unix:uid:{}", id.len())],
        x509_svid_ttl_seconds: 3600,
        ..Default::default()
    }
}

fn full(entries: Vec<pb::Entry>, revision: u64, more: bool) -> pb::SyncEntriesResponse {
    pb::SyncEntriesResponse {
        full_sync: true,
        entries,
        revision,
        more,
        ..Default::default()
    }
}

fn chunk(entries: Vec<pb::Entry>, revision: u64, more: bool) -> pb::SyncEntriesResponse {
    pb::SyncEntriesResponse {
        entries,
        revision,
        more,
        ..Default::default()
    }
}

fn delta(entries: Vec<pb::Entry>, removed: &[&str], revision: u64) -> pb::SyncEntriesResponse {
    pb::SyncEntriesResponse {
        entries,
        removed_entry_ids: removed.iter().map(|s| (*s).to_owned()).collect(),
        revision,
        ..Default::default()
    }
}

impl Fixture {
    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    fn apply(&mut self, msg: pb::SyncEntriesResponse) -> SyncOutcome {
        let now = self.now();
        self.cache.apply(msg, now).unwrap()
    }

    /// Mints every due SVID with the CA, as the server would.
    fn mint_all(&mut self) -> usize {
        let now = self.now();
        let jobs = self.cache.mint_jobs(now);
        for job in &jobs {
            let fresh = keys::generate().unwrap();
            let req = X509SvidRequest::new(job.minted_for.spiffe_id.clone())
                .with_ttl(job.minted_for.ttl)
                .with_dns_names(job.minted_for.dns_names.clone());
            let svid = self.ca.mint_x509_svid_from_csr(&fresh.csr, &req).unwrap();
            self.cache
                .install(job, svid.cert_chain, fresh.key, &fresh.spki, now)
                .unwrap();
        }
        jobs.len()
    }

    fn served(&self) -> Vec<String> {
        self.cache
            .snapshot(self.now())
            .identities()
            .iter()
            .map(|i| i.spiffe_id().to_string())
            .collect()
    }
}

#[test]
fn a_full_set_in_chunks_is_applied_at_its_last_chunk() {
    let mut f = fixture();
    assert!(!f.apply(full(vec![entry("a", "web")], 0, true)).applied);
    assert!(!f.apply(chunk(vec![entry("b", "db")], 0, true)).applied);
    assert_eq!(f.cache.entry_count(), 0);
    let outcome = f.apply(chunk(vec![entry("c", "api")], 7, false));
    assert!(outcome.applied);
    assert_eq!((f.cache.entry_count(), f.cache.revision()), (3, 7));
    assert_eq!(f.mint_all(), 3);
    assert_eq!(
        f.served(),
        [
            "spiffe://example.org/api",
            "spiffe://example.org/db",
            "spiffe://example.org/web"
        ]
    );
    assert_eq!(f.mint_all(), 0, "nothing is due right after minting");

    // A new full set drops what it does not name, and keeps SVIDs of unchanged entries.
    f.apply(full(vec![entry("a", "web")], 9, false));
    assert_eq!(f.served(), ["spiffe://example.org/web"]);
    assert_eq!(f.mint_all(), 0);
}

#[test]
fn deltas_add_change_and_remove() {
    let mut f = fixture();
    f.apply(full(vec![entry("a", "web"), entry("b", "db")], 1, false));
    f.mint_all();
    f.apply(delta(vec![entry("c", "api")], &["b"], 2));
    assert_eq!(
        f.cache.svid_entry_ids().len(),
        1,
        "b's SVID is gone at once"
    );
    assert_eq!(f.mint_all(), 1);
    assert_eq!(
        f.served(),
        ["spiffe://example.org/api", "spiffe://example.org/web"]
    );

    // A DNS name change re-mints; the old SVID is served until then.
    let mut changed = entry("a", "web");
    changed.dns_names = vec!["web.example.org".into()];
    f.apply(delta(vec![changed], &[], 3));
    assert_eq!(f.served().len(), 2);
    let jobs = f.cache.mint_jobs(f.now());
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].entry_id.as_str(), "a");
    f.mint_all();

    // A SPIFFE ID change drops the old SVID at once.
    f.apply(delta(vec![entry("a", "frontend")], &[], 4));
    assert_eq!(f.served(), ["spiffe://example.org/api"]);
    assert_eq!(f.mint_all(), 1);
    assert_eq!(
        f.served(),
        ["spiffe://example.org/api", "spiffe://example.org/frontend"]
    );

    // A selector change needs no new certificate.
    let mut reselected = entry("c", "api");
    reselected.selectors = vec!["unix:uid:42".into()];
    f.apply(delta(vec![reselected], &[], 5));
    assert_eq!(f.mint_all(), 0);
    let snapshot = f.cache.snapshot(f.now());
    let api = &snapshot.identities()[0];
    assert_eq!(
        api.selectors().iter().next().unwrap().to_string(),
        "unix:uid:42"
    );
    assert_eq!(f.cache.revision(), 5);
}

#[test]
fn renewal_expiry_and_deadlines() {
    let mut f = fixture();
    f.apply(full(vec![entry("a", "web")], 1, false));
    f.mint_all();
    let start = f.now();
    let deadline = f.cache.next_deadline(start).unwrap();
    // Renewal at 1/2 lifetime ±10% of that, the lifetime counted from receipt (`start`), not
    // from the NotBefore backdated 10 s for clock skew.
    let life = Duration::from_secs(3600);
    let earliest = start + life.mul_f64(0.45);
    let latest = start + life.mul_f64(0.55);
    assert!(deadline >= earliest && deadline <= latest, "{deadline:?}");
    f.clock.set(deadline);
    assert_eq!(f.cache.mint_jobs(f.now()).len(), 1);

    // Not renewed (server down): served until NotAfter, then dropped.
    let not_after = f.cache.next_deadline(f.now()).unwrap();
    assert_eq!(not_after, start + Duration::from_secs(3600));
    f.clock.set(not_after - Duration::from_secs(1));
    assert_eq!(f.served().len(), 1);
    assert!(!f.cache.drop_expired(f.now()));
    f.clock.set(not_after);
    assert!(f.served().is_empty());
    assert!(f.cache.drop_expired(f.now()));
    assert_eq!(f.mint_all(), 1);
    assert_eq!(f.served().len(), 1);
}

#[test]
fn a_removed_ca_forces_a_remint() {
    let mut f = fixture();
    f.apply(full(vec![entry("a", "web")], 1, false));
    f.mint_all();
    let old = f.ca.authorities()[0].id.clone();
    // Rotate: a new active X.509 authority, then the old one revoked from the bundle.
    let _ = f.ca.taint(&old).unwrap();
    let _ = f.ca.revoke(&old).unwrap();
    let msg = pb::SyncEntriesResponse {
        bundle_json: f.ca.bundle().to_json(),
        revision: 2,
        ..Default::default()
    };
    assert!(f.apply(msg).bundle_changed);
    assert_eq!(f.cache.mint_jobs(f.now()).len(), 1);
    // Its root was revoked (compromised, say): the SVID is withheld until the replacement comes,
    // rather than handed to a workload whose peers would refuse it.
    assert!(f.served().is_empty());
    assert_eq!(f.mint_all(), 1);
    assert_eq!(f.served().len(), 1);
    assert_eq!(f.cache.mint_jobs(f.now()).len(), 0);
}

#[test]
fn results_for_stale_jobs_are_refused() {
    let mut f = fixture();
    f.apply(full(vec![entry("a", "web")], 1, false));
    let now = f.now();
    let job = f.cache.mint_jobs(now).remove(0);
    f.apply(delta(vec![entry("a", "other")], &[], 2));
    let fresh = keys::generate().unwrap();
    let svid =
        f.ca.mint_x509_svid_from_csr(
            &fresh.csr,
            &X509SvidRequest::new(job.minted_for.spiffe_id.clone()),
        )
        .unwrap();
    let err = f
        .cache
        .install(&job, svid.cert_chain, fresh.key.clone(), &fresh.spki, now)
        .unwrap_err();
    assert_eq!(err, InstallError::Stale);

    // A certificate for another key is refused too.
    let job = f.cache.mint_jobs(now).remove(0);
    let other = keys::generate().unwrap();
    let svid =
        f.ca.mint_x509_svid_from_csr(
            &other.csr,
            &X509SvidRequest::new(job.minted_for.spiffe_id.clone()),
        )
        .unwrap();
    let err = f
        .cache
        .install(&job, svid.cert_chain, fresh.key, &fresh.spki, now)
        .unwrap_err();
    assert!(
        matches!(&err, InstallError::Invalid(e) if e.contains("key")),
        "{err:?}"
    );
}

#[test]
fn a_datastore_without_entries_is_revision_zero() {
    // No entry was ever written: the full set is empty and has no revision yet.
    let mut f = fixture();
    let outcome = f.apply(full(vec![], 0, false));
    assert!(outcome.applied);
    assert_eq!((f.cache.revision(), f.cache.entry_count()), (0, 0));
    // The first write moves it on.
    f.apply(delta(vec![entry("a", "web")], &[], 1));
    assert_eq!((f.cache.revision(), f.cache.entry_count()), (1, 1));
}

#[test]
fn bad_messages() {
    let mut f = fixture();
    let mut bad = entry("a", "web");
    bad.spiffe_id = "not an id".into();
    let outcome = f.apply(full(vec![bad, entry("b", "db")], 1, false));
    assert_eq!((outcome.skipped, f.cache.entry_count()), (1, 1));

    let now = f.now();
    assert_eq!(
        f.cache.apply(chunk(vec![], 0, false), now),
        Err(SyncError::NoRevision)
    );
    let msg = pb::SyncEntriesResponse {
        bundle_json: "{".into(),
        revision: 3,
        ..Default::default()
    };
    assert!(matches!(f.cache.apply(msg, now), Err(SyncError::Bundle(_))));
    // A broken stream's partial update is forgotten.
    f.apply(full(vec![entry("z", "zz")], 0, true));
    f.cache.discard_pending();
    f.apply(delta(vec![], &[], 4));
    assert_eq!(f.cache.entry_count(), 1);
}

#[test]
fn federated_bundles_replace_as_a_set() {
    let mut f = fixture();
    let other = Ca::new(
        CaConfig::new(TrustDomain::new("other.org").unwrap()),
        Arc::new(MemoryKeyManager::new()),
        f.clock.clone(),
    )
    .unwrap();
    let mut msg = full(vec![entry("a", "web")], 1, false);
    msg.federated_bundles
        .insert("spiffe://other.org".into(), other.bundle().to_json());
    f.apply(msg);
    assert_eq!(f.cache.bundle_set().len(), 2);
    // Messages without bundles leave them; a bundle message without them drops them.
    f.apply(delta(vec![], &[], 2));
    f.apply(full(vec![entry("a", "web")], 3, false));
    assert_eq!(f.cache.bundle_set().len(), 2);
    let msg = pb::SyncEntriesResponse {
        bundle_json: f.ca.bundle().to_json(),
        revision: 4,
        ..Default::default()
    };
    f.apply(msg);
    assert_eq!(f.cache.bundle_set().len(), 1);
}

#[test]
fn jwt_entry_lookup() {
    let mut f = fixture();
    f.apply(full(vec![entry("b", "web"), entry("a", "web")], 1, false));
    let id = SpiffeId::parse("spiffe://example.org/web").unwrap();
    assert_eq!(f.cache.entry_for(&id, f.now()).unwrap().as_str(), "a");
    let nobody = SpiffeId::parse("spiffe://example.org/nobody").unwrap();
    assert!(f.cache.entry_for(&nobody, f.now()).is_none());
}

#[test]
fn an_entry_with_a_reserved_id_from_the_server_is_dropped() {
    // A server never sends one (docs/threat-model.md); an agent does not trust that it does not.
    for reserved in ["lanyard/server", "lanyard/agent/y", "lanyard"] {
        assert!(
            parse_entry(&entry("e1", reserved), &td()).is_none(),
            "{reserved}"
        );
    }
    assert!(parse_entry(&entry("e1", "web"), &td()).is_some());
}

/// A revocation-only message, as the server sends on a change (at the revision last sent).
fn revocations(revoked: &[(&str, i64)]) -> pb::SyncEntriesResponse {
    pb::SyncEntriesResponse {
        revision: 1,
        revocations: true,
        revoked: revoked
            .iter()
            .map(|(token_id, expires_at)| pb::RevokedToken {
                token_id: (*token_id).to_owned(),
                expires_at: *expires_at,
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn revoked_tokens_are_pending_until_the_first_list_then_kept_until_verification_refuses_them() {
    let mut f = fixture();
    assert_eq!(
        f.cache.snapshot(f.now()).revocations(),
        &Revocations::Pending
    );
    // A message without the list changes nothing.
    f.apply(full(vec![entry("a", "web")], 1, false));
    assert_eq!(
        f.cache.snapshot(f.now()).revocations(),
        &Revocations::Pending
    );

    let now = 1_700_000_000;
    f.apply(revocations(&[
        ("ended", now + 60),
        ("", now + 60),
        ("long-gone", -1),
        ("ended", now + 10),
    ]));
    let known = |f: &Fixture| -> Vec<String> {
        match f.cache.snapshot(f.now()).revocations() {
            Revocations::Known(list) => list.iter().map(|(jti, _)| jti.to_owned()).collect(),
            other => panic!("{other:?}"),
        }
    };
    // The empty id names nothing; the expired one goes; "ended" keeps its later expiry.
    assert_eq!(known(&f), ["ended"]);
    // Past its exp but within the leeway, the token still verifies: it stays listed.
    f.clock
        .advance(Duration::from_secs(60) + lanyard_core::jwt::JWT_LEEWAY / 2);
    assert_eq!(known(&f), ["ended"]);
    f.clock.advance(lanyard_core::jwt::JWT_LEEWAY);
    assert!(known(&f).is_empty());

    // An empty list is a list: nothing revoked, not "not heard yet".
    f.apply(revocations(&[]));
    assert_eq!(
        f.cache.snapshot(f.now()).revocations(),
        &Revocations::Known(Arc::new(RevocationList::new()))
    );
}
