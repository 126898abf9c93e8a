//! Three servers on one PostgreSQL database, five agents each given all three. Entries are written
//! through the admin API in a burst; the server most agents are connected to is killed (SIGKILL)
//! in the middle of it. Every acknowledged entry must still be listed and reach its agent; every
//! agent moved off the killed server must open its entry stream on another; no workload may ever
//! be handed an SVID that is expired or does not verify. The time from the kill until every agent
//! serves every acknowledged entry is printed (issue 13 asks for 2 s); it is not asserted beyond a
//! generous bound, because this machine is shared.
//! Runs when LANYARD_TEST_POSTGRES names a server (CI sets it); HA_FAILOVER_LOGS=1 prints the
//! moved agents' logs.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lanyard_core::BundleSet;
use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::postgres::FreshDatabase;
use lanyard_e2e::{Server, log_line_time, wait_for};
use lanyard_workload::WorkloadClient;

const AGENTS: usize = 5;
const ENTRIES: usize = 60;
/// Acknowledged writes before the kill.
const KILL_AFTER: usize = 25;
/// Short-lived SVIDs, so that renewals happen through the failover too.
const X509_TTL: &str = "30s";
/// Far beyond the 2 s the issue asks for: a bound that catches an agent that never comes back,
/// not a performance assertion.
const DEADLINE: Duration = Duration::from_secs(60);

fn roots(server: &Server) -> usize {
    server.bundle().x509_authorities().len()
}

fn agent_id(i: usize) -> String {
    format!("spiffe://example.org/lanyard/agent/node-{i}")
}

/// Creates `spiffe://example.org/<group>/<agent>` for `agent` through `server`; returns its ID.
fn create_entry(server: &Server, agent: usize, group: &str, selector: &str) -> String {
    let id = format!("spiffe://example.org/{group}/{agent}");
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            &agent_id(agent),
            "--spiffe-id",
            &id,
            "--selector",
            selector,
            "--x509-ttl",
            X509_TTL,
        ])
        .ok();
    id
}

/// An entry the writer acknowledged: which agent serves it and under which SPIFFE ID.
#[derive(Debug, Clone)]
struct Acked {
    entry_id: String,
    agent: usize,
    spiffe_id: String,
}

/// What every sample of every agent's Workload API found wrong (must stay empty), and how many
/// samples were taken.
#[derive(Debug, Default)]
struct Watch {
    problems: Mutex<Vec<String>>,
    samples: AtomicUsize,
}

/// The SPIFFE IDs the agent at `socket` serves this process now, each checked: not expired and
/// verifying against the bundle the agent hands out with it.
async fn serving(socket: &std::path::Path) -> Result<BTreeSet<String>, String> {
    let mut client = WorkloadClient::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let ctx = client
        .fetch_x509_context()
        .await
        .map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    let mut ids = BTreeSet::new();
    for svid in &ctx.svids {
        let bundles: BundleSet = [svid.bundle.clone()].into_iter().collect();
        if let Err(e) = lanyard_core::verify_x509_svid(&svid.chain, &bundles, now) {
            return Err(format!("INVALID {}: {e}", svid.spiffe_id));
        }
        ids.insert(svid.spiffe_id.to_string());
    }
    Ok(ids)
}

#[test]
fn agents_fail_over_when_a_server_is_killed_mid_burst() {
    let Ok(admin_url) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime
        .block_on(FreshDatabase::create(&admin_url, "lanyard_failover"))
        .unwrap();
    let mut servers: Vec<Server> = (0..3)
        .map(|_| Server::start_with(&["--datastore", &db.url]))
        .collect();
    wait_for(
        "every server to publish all three roots",
        Duration::from_secs(60),
        || servers.iter().all(|s| roots(s) == 3).then_some(()),
    );
    let addrs: Vec<SocketAddr> = servers.iter().map(Server::node_addr).collect();
    let uid = rustix::process::getuid().as_raw();
    let selector = format!("unix:uid:{uid}");

    // One entry per agent first: each agent serves before anything is killed.
    let refs: Vec<&Server> = servers.iter().collect();
    let agents: Vec<Agent> = (0..AGENTS)
        .map(|i| Agent::start_for_servers(&refs, &agent_id(i)))
        .collect();
    let mut expected: Vec<BTreeSet<String>> = vec![BTreeSet::new(); AGENTS];
    for (i, wanted) in expected.iter_mut().enumerate() {
        wanted.insert(create_entry(&servers[i % 3], i, "seed", &selector));
    }
    for (agent, wanted) in agents.iter().zip(&expected) {
        wait_for("every agent to serve its first entry", DEADLINE, || {
            let ids = runtime.block_on(serving(&agent.socket)).ok()?;
            (ids == *wanted).then_some(())
        });
    }

    let seeded_at = Instant::now();
    // Every agent's Workload API, sampled until the end: any expired or unverifiable SVID is a
    // failure.
    let watch = Arc::new(Watch::default());
    let done = Arc::new(AtomicBool::new(false));
    let watchers: Vec<_> = agents
        .iter()
        .map(|agent| {
            let (socket, watch, done) = (agent.socket.clone(), watch.clone(), done.clone());
            runtime.spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    match serving(&socket).await {
                        Ok(_) => {}
                        Err(e) if e.starts_with("INVALID") => {
                            watch.problems.lock().unwrap().push(e);
                        }
                        // No identity for a moment is allowed (none is given); an invalid one is not.
                        Err(_) => {}
                    }
                    watch.samples.fetch_add(1, Ordering::Relaxed);
                    // Sampling period of the monitor, not a wait for something to happen.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();

    // Which server to kill: the one most agents are on.
    let on = |agent: &Agent| {
        wait_for("the agent to log its server", DEADLINE, || {
            agent.connected_to()
        })
    };
    let mut count: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for agent in &agents {
        *count.entry(on(agent)).or_default() += 1;
    }
    let victim_addr = *count.iter().max_by_key(|(_, n)| **n).unwrap().0;
    let victim = addrs.iter().position(|a| *a == victim_addr).unwrap();
    let moved: Vec<usize> = (0..AGENTS)
        .filter(|i| on(&agents[*i]) == victim_addr)
        .collect();
    let log_lines: Vec<usize> = agents.iter().map(|a| a.log().lines().count()).collect();

    // The burst: one writer, round robin over the servers; a write that fails is not retried
    // (it may or may not have committed) and only acknowledged entries are checked.
    let admin_sockets: Vec<std::path::PathBuf> =
        servers.iter().map(|s| s.admin_socket.clone()).collect();
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let writer = {
        let (acked, selector) = (acked.clone(), selector.clone());
        std::thread::spawn(move || {
            let mut failed = 0;
            for n in 0..ENTRIES {
                let agent = n % AGENTS;
                let spiffe_id = format!("spiffe://example.org/burst/{n}");
                let socket = &admin_sockets[n % admin_sockets.len()];
                let out = lanyard_e2e::lanyard([
                    "entry",
                    "create",
                    "--parent-id",
                    &agent_id(agent),
                    "--spiffe-id",
                    &spiffe_id,
                    "--selector",
                    &selector,
                    "--x509-ttl",
                    X509_TTL,
                    "--output",
                    "json",
                    "--admin-socket",
                    socket.to_str().unwrap(),
                ]);
                if !out.success {
                    failed += 1;
                    continue;
                }
                let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
                acked.lock().unwrap().push(Acked {
                    entry_id: json["id"].as_str().unwrap().to_owned(),
                    agent,
                    spiffe_id,
                });
            }
            failed
        })
    };
    wait_for("the first half of the burst", DEADLINE, || {
        (acked.lock().unwrap().len() >= KILL_AFTER).then_some(())
    });
    servers[victim].kill();
    let killed_at = Instant::now();
    let killed_wall = SystemTime::now();

    // The agents of the killed server open their entry stream elsewhere. When, from their own
    // log timestamps: the test reads the logs later than the lines are written.
    let mut reconnected = Vec::new();
    for i in &moved {
        let agent = &agents[*i];
        let opened = wait_for(
            "the agent to open its stream on another server",
            DEADLINE,
            || {
                let log = agent.log();
                let after: Vec<&str> = log.lines().skip(log_lines[*i]).collect();
                let elsewhere = after.iter().position(|l| {
                    l.contains("connected to the server") && !l.contains(&victim_addr.to_string())
                })?;
                let open = after[elsewhere..]
                    .iter()
                    .find(|l| l.contains("entry stream open"))?;
                Some((log_line_time(open)?, open.to_string()))
            },
        );
        // Resumed from its revision on the new server, not from scratch.
        let since: u64 = opened
            .1
            .split("since_revision=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .expect("the line names the revision");
        assert!(since > 0, "agent {i} started over: {}", opened.1);
        let opened = opened.0;
        reconnected.push(opened.duration_since(killed_wall).unwrap_or_default());
        if std::env::var_os("HA_FAILOVER_LOGS").is_some() {
            let log = agent.log();
            let after: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
            eprintln!(
                "killed at {killed_wall:?}; agent {i}:\n{}",
                after.join("\n")
            );
        }
        assert_ne!(agent.connected_to(), Some(victim_addr));
    }

    // One entry per agent written right after the kill, through a server that is up: the time
    // until every agent serves its own is the failover as a workload sees it.
    let survivor = &servers[(victim + 1) % 3];
    for (i, wanted) in expected.iter_mut().enumerate() {
        wanted.insert(create_entry(survivor, i, "after-kill", &selector));
    }
    let written = killed_at.elapsed();
    for (agent, wanted) in agents.iter().zip(&expected) {
        wait_for(
            "every agent to serve its entry written after the kill",
            DEADLINE,
            || {
                let ids = runtime.block_on(serving(&agent.socket)).ok()?;
                wanted.is_subset(&ids).then_some(())
            },
        );
    }
    let markers_served = killed_at.elapsed();

    let failed = writer.join().unwrap();
    let writer_done = killed_at.elapsed();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "killed server {victim} ({victim_addr}) with {} agents on it; {} writes acknowledged, {failed} failed",
        moved.len(),
        acked.len()
    );
    assert!(!moved.is_empty());
    assert!(
        acked.len() >= ENTRIES - 3 * AGENTS,
        "too few writes succeeded"
    );

    // Every acknowledged entry is still listed, through a server that is still up.
    let listed: BTreeSet<String> = survivor
        .cli(&["entry", "list", "--output", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    for entry in &acked {
        assert!(
            listed.contains(&entry.entry_id),
            "acknowledged entry {entry:?} is not listed"
        );
        expected[entry.agent].insert(entry.spiffe_id.clone());
    }

    // Every agent serves every acknowledged entry of its own.
    for (i, (agent, wanted)) in agents.iter().zip(&expected).enumerate() {
        wait_for(
            "the agent to serve every acknowledged entry",
            DEADLINE,
            || {
                let ids = runtime.block_on(serving(&agent.socket)).ok()?;
                wanted.is_subset(&ids).then_some(())
            },
        );
        let ids = runtime.block_on(serving(&agent.socket)).unwrap();
        assert!(
            wanted.is_subset(&ids),
            "agent {i} lacks {:?}",
            wanted.difference(&ids).collect::<Vec<_>>()
        );
    }
    let all_serving = killed_at.elapsed();
    eprintln!(
        "kill -> the moved agents' entry streams open on another server: {reconnected:?}\n\
         kill -> all {AGENTS} agents serve an entry written after the kill: {markers_served:?} \
         (the {AGENTS} writes took until {written:?})\n\
         kill -> all agents serve all {} acknowledged entries: {all_serving:?} (the burst ended \
         {writer_done:?} after the kill)",
        acked.len(),
    );

    // Keep sampling until the first SVIDs have outlived their 30 s: an agent that failed to
    // renew through the failover would by then be serving an expired one.
    wait_for(
        "the monitor to sample past a full SVID lifetime",
        DEADLINE,
        || (seeded_at.elapsed() > Duration::from_secs(32)).then_some(()),
    );
    done.store(true, Ordering::Relaxed);
    for watcher in watchers {
        runtime.block_on(watcher).unwrap();
    }
    let problems = watch.problems.lock().unwrap().clone();
    assert!(
        problems.is_empty(),
        "a workload got an invalid SVID: {problems:?}"
    );
    eprintln!(
        "{} Workload API samples, none expired or invalid",
        watch.samples.load(Ordering::Relaxed)
    );
    drop(agents);
    drop(servers);
    drop(db);
}
