//! Durability of SQLite writes: a process writing entries is killed with SIGKILL in the middle of
//! a burst; every entry whose create had returned is there afterwards, and nothing is half
//! written.
//!
//! The writer is this test binary itself, started again to run only `crash_child` (which does
//! nothing unless `LANYARD_STORE_CRASH_CHILD` names a database).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use lanyard_core::entry::{DEFAULT_JWT_SVID_TTL, DEFAULT_X509_SVID_TTL};
use lanyard_core::{EntryId, EntrySpec, RegistrationEntry, SpiffeId};
use lanyard_store::{EntryFilter, PageRequest, SelectorFilter, SelectorMatch};

const CHILD_ENV: &str = "LANYARD_STORE_CRASH_CHILD";
/// Acknowledged creates to wait for before the kill.
const ACKS_BEFORE_KILL: usize = 400;

fn entry(n: usize) -> RegistrationEntry {
    RegistrationEntry::new(EntrySpec {
        id: EntryId::new(&format!("c{n:06}")).unwrap(),
        spiffe_id: SpiffeId::parse(&format!("spiffe://example.org/crash/{n}")).unwrap(),
        parent_id: SpiffeId::parse("spiffe://example.org/lanyard/server").unwrap(),
        selectors: [format!("unix:uid:{n}"), "unix:gid:7".to_owned()]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
        x509_svid_ttl: DEFAULT_X509_SVID_TTL,
        jwt_svid_ttl: DEFAULT_JWT_SVID_TTL,
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        revision: 0,
    })
    .unwrap()
}

/// The writer: creates entries in small batches, forever, printing `ok <id>` after each create
/// has returned.
#[tokio::test]
async fn crash_child() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = lanyard_store::connect(&url).await.unwrap();
    for batch in 0.. {
        let entries = (batch * 5..batch * 5 + 5).map(entry).collect();
        for result in store.create_entries(entries).await.unwrap() {
            println!("ok {}", result.unwrap().id());
        }
    }
}

#[test]
fn entries_acknowledged_before_sigkill_survive() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = BTreeSet::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(id) = line.unwrap().strip_prefix("ok ") {
            acked.insert(id.to_owned());
            if acked.len() >= ACKS_BEFORE_KILL {
                break;
            }
        }
    }
    assert_eq!(acked.len(), ACKS_BEFORE_KILL, "the writer stopped early");
    // `kill` is SIGKILL on Unix: no destructor, no clean close of the database.
    child.kill().unwrap();
    child.wait().unwrap();

    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = lanyard_store::connect(&url).await.unwrap();
        // Every stored entry parses: nothing half written.
        let stored = store
            .list_entries(&EntryFilter::default(), &PageRequest::default())
            .await
            .unwrap()
            .items;
        let stored_ids: BTreeSet<String> = stored.iter().map(|e| e.id().to_string()).collect();
        let missing: Vec<_> = acked.difference(&stored_ids).collect();
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
        // Revisions are exactly 1..=n: every committed batch is whole.
        let revisions: BTreeSet<u64> = stored.iter().map(RegistrationEntry::revision).collect();
        assert_eq!(revisions, (1..=stored.len() as u64).collect());
        assert_eq!(store.current_revision().await.unwrap(), stored.len() as u64);
        // The selector rows of every entry were committed with it.
        for e in &stored {
            let filter = EntryFilter {
                selectors: Some(SelectorFilter {
                    selectors: e.selectors().clone(),
                    mode: SelectorMatch::Superset,
                }),
                ..EntryFilter::default()
            };
            let found = store
                .list_entries(&filter, &PageRequest::default())
                .await
                .unwrap()
                .items;
            assert_eq!(found.len(), 1, "selector rows of {}", e.id());
        }
        eprintln!(
            "acknowledged {}, found {} after SIGKILL",
            acked.len(),
            stored.len()
        );
    });
}
