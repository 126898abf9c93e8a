//! A crash loses nothing that was acknowledged and never changes the trust bundle by itself.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanyard_e2e::{Server, wait_for};

const WRITERS: usize = 4;
const PER_WRITER: usize = 400;
/// Kill the server once this many creates have been acknowledged.
const KILL_AFTER: usize = 60;

#[test]
fn sigkill_during_a_burst_of_writes_loses_no_acknowledged_entry() {
    let mut server = Server::start();
    let bundle_before = server
        .cli(&["bundle", "show", "--format", "spiffe"])
        .ok()
        .to_owned();

    // Each writer creates entries one after another and records those the server acknowledged.
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let socket = server.admin_socket.clone();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let acknowledged = acknowledged.clone();
            let socket = socket.clone();
            std::thread::spawn(move || {
                for i in 0..PER_WRITER {
                    let spiffe_id = format!("spiffe://example.org/w{w}/e{i}");
                    let out = lanyard_e2e::lanyard([
                        "entry",
                        "create",
                        "--parent-id",
                        "spiffe://example.org/agent",
                        "--spiffe-id",
                        &spiffe_id,
                        "--selector",
                        &format!("unix:uid:{i}"),
                        "--output",
                        "json",
                        "--admin-socket",
                        socket.to_str().unwrap(),
                    ]);
                    if !out.success {
                        return; // the server is gone
                    }
                    let entry: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
                    acknowledged
                        .lock()
                        .unwrap()
                        .insert(entry["id"].as_str().unwrap().to_owned(), spiffe_id);
                }
            })
        })
        .collect();

    wait_for(
        "enough acknowledged creates",
        Duration::from_secs(120),
        || (acknowledged.lock().unwrap().len() >= KILL_AFTER).then_some(()),
    );
    server.kill();
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= KILL_AFTER);
    assert!(
        acknowledged.len() < WRITERS * PER_WRITER,
        "the kill must land mid-burst"
    );

    server.restart();
    let listed = server.cli(&["entry", "list", "--output", "json"]).json();
    let stored: BTreeMap<String, serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e.clone()))
        .collect();
    for (id, spiffe_id) in &acknowledged {
        let entry = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged entry {id} ({spiffe_id}) was lost"));
        assert_eq!(entry["spiffe_id"], spiffe_id.as_str());
    }
    // At most one create per writer was in flight when the server died; it may or may not have
    // committed, but it is whole: every stored entry has all its fields.
    assert!(
        stored.len() <= acknowledged.len() + WRITERS,
        "{} stored, {} acknowledged",
        stored.len(),
        acknowledged.len()
    );
    for entry in stored.values() {
        assert!(
            entry["spiffe_id"]
                .as_str()
                .unwrap()
                .starts_with("spiffe://example.org/w")
        );
        assert_eq!(entry["selectors"].as_array().unwrap().len(), 1);
        assert_eq!(entry["x509_svid_ttl_seconds"], 3600);
    }

    let bundle_after = server
        .cli(&["bundle", "show", "--format", "spiffe"])
        .ok()
        .to_owned();
    assert_eq!(
        bundle_after, bundle_before,
        "a restart must not change the trust bundle"
    );
}

#[test]
fn a_restart_keeps_entries_and_the_bundle() {
    let mut server = Server::start();
    let bundle_before = server
        .cli(&["bundle", "show", "--format", "spiffe"])
        .ok()
        .to_owned();
    let pem_before = server.cli(&["bundle", "show"]).ok().to_owned();
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            "spiffe://example.org/a",
            "--spiffe-id",
            "spiffe://example.org/b",
            "--selector",
            "k:v",
        ])
        .ok();
    assert!(server.terminate());
    server.restart();
    assert_eq!(
        server.cli(&["bundle", "show", "--format", "spiffe"]).ok(),
        bundle_before
    );
    assert_eq!(server.cli(&["bundle", "show"]).ok(), pem_before);
    let listed = server.cli(&["entry", "list", "--output", "json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}
