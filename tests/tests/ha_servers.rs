//! Servers sharing one PostgreSQL database see each other's heartbeats (`lanyard server list`),
//! and once a dead server's credentials have all expired its authorities leave the trust bundle;
//! they return when it comes back.
//! Runs when LANYARD_TEST_POSTGRES names a server (CI sets it).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use lanyard_e2e::postgres::FreshDatabase;
use lanyard_e2e::{Server, wait_for};

/// Short lifetimes, so that a dead server's credentials expire within seconds.
const SHORT_LIVED: &str = "heartbeat_interval = \"1s\"\n\
                           agent_svid_ttl = \"2s\"\n\
                           [ca]\nx509_svid_ttl = \"2s\"\njwt_svid_ttl = \"2s\"\n";

/// `lanyard server list --output json`, as (server_id, status JSON) pairs.
fn servers(server: &Server) -> Vec<serde_json::Value> {
    server
        .cli(&["server", "list", "--output", "json"])
        .json()
        .as_array()
        .expect("a JSON array")
        .clone()
}

fn answering_id(server: &Server) -> String {
    servers(server)
        .into_iter()
        .find(|s| s["answering"] == true)
        .and_then(|s| s["server_id"].as_str().map(str::to_owned))
        .expect("the answering server is listed")
}

/// The X.509 authorities in the bundle `server` publishes, as DER.
fn roots(server: &Server) -> Vec<Vec<u8>> {
    let mut roots: Vec<Vec<u8>> = server
        .bundle()
        .x509_authorities()
        .iter()
        .map(|a| a.der().to_vec())
        .collect();
    roots.sort();
    roots
}

#[test]
fn a_dead_servers_authorities_leave_the_bundle_after_its_credentials_expire() {
    let Ok(admin_url) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime
        .block_on(FreshDatabase::create(&admin_url, "lanyard_servers"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, SHORT_LIVED).unwrap();
    let config = config.to_str().unwrap();
    let a = Server::start_with(&["--datastore", &db.url, "--config", config]);
    // Alone on a new database, A's bundle holds its own root only.
    let own_a = roots(&a);
    assert_eq!(own_a.len(), 1);
    let mut b = Server::start_with(&["--datastore", &db.url, "--config", config]);
    let (id_a, id_b) = (answering_id(&a), answering_id(&b));
    assert_ne!(id_a, id_b);

    // Both are listed as live, with their node API addresses and CA expiry.
    let listed = servers(&a);
    assert_eq!(listed.len(), 2, "{listed:#?}");
    for (server, id) in [(&a, &id_a), (&b, &id_b)] {
        let record = listed.iter().find(|s| s["server_id"] == **id).unwrap();
        assert_eq!(record["live"], true, "{record}");
        assert_eq!(record["retired"], false, "{record}");
        assert_eq!(record["node_address"], server.node_addr().to_string());
        assert!(record["ca_expires_at"].as_i64().unwrap() > 0, "{record}");
        assert!(record["signs_until"].as_i64().unwrap() > 0, "{record}");
    }
    let table = a.cli(&["server", "list"]).ok().to_owned();
    assert!(table.contains(&format!("{id_a} *")), "{table}");
    assert!(table.contains("live"), "{table}");

    // The shared bundle holds both CAs.
    let both = wait_for("both roots in the bundle", Duration::from_secs(30), || {
        let r = roots(&a);
        (r.len() == 2).then_some(r)
    });

    // B dies without a word. A stops calling it live, then — once B's credentials have all
    // expired — publishes the bundle without B's authorities.
    b.kill();
    wait_for("B to be reported dead", Duration::from_secs(30), || {
        servers(&a)
            .into_iter()
            .find(|s| s["server_id"] == *id_b)
            .filter(|s| s["live"] == false)
            .map(drop)
    });
    let retired = wait_for(
        "B's roots to leave the bundle",
        Duration::from_secs(60),
        || {
            let r = roots(&a);
            (r.len() == 1).then_some(r)
        },
    );
    assert_eq!(retired, own_a, "A's own root stays, B's leaves");
    let record = servers(&a)
        .into_iter()
        .find(|s| s["server_id"] == *id_b)
        .unwrap();
    assert_eq!(record["retired"], true, "{record}");
    assert!(
        a.log()
            .contains("servers whose credentials have all expired are out of the bundle"),
        "{}",
        a.log()
    );

    // B comes back with the same keys: its authorities return to the shared bundle.
    b.restart();
    let back = wait_for("B's roots to return", Duration::from_secs(60), || {
        let r = roots(&a);
        (r.len() == 2).then_some(r)
    });
    assert_eq!(back, both, "B came back with the authorities it had");
    let record = servers(&a)
        .into_iter()
        .find(|s| s["server_id"] == *id_b)
        .unwrap();
    assert_eq!(record["live"], true, "{record}");
    assert_eq!(record["retired"], false, "{record}");
}
