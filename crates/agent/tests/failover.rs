//! Several servers: the list is parsed and refused as documented; the agent skips a server that
//! does not answer, fails over when its server goes away and resumes from its revision there,
//! reconnects to the server that last worked first, and does not wait out its backoff once a
//! server listens again. The servers are fake node servers sharing one CA and one set of entries,
//! as real servers on one datastore do (tests/tests/ha_failover.rs runs real ones).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Env, FakeServer, RunningAgent, SELECTOR, WAIT, entry, ids, wait_for_x509};
use lanyard_agent::{AgentConfig, MAX_SERVERS, ServerAddress, ServerList, Tuning};

#[test]
fn a_server_list_is_parsed_and_refused_with_clear_errors() {
    let list: ServerList = "a.example:8081, 10.0.0.2:8081,[::1]:8081".parse().unwrap();
    assert_eq!(list.to_string(), "a.example:8081,10.0.0.2:8081,[::1]:8081");
    assert_eq!(list.addresses().len(), 3);
    assert_eq!(list.addresses()[2].host(), "::1");
    assert_eq!(list, list.to_string().parse().unwrap());

    let refused = |s: &str| s.parse::<ServerList>().unwrap_err().to_string();
    assert!(refused("").contains("an empty address"), "{}", refused(""));
    assert!(refused("a:1,").contains("an empty address"));
    assert!(refused("a:1,a:1").contains("a:1 is listed twice"));
    // The same address written the same way twice; other spellings are found when resolving.
    assert!(refused("[::1]:1,[::1]:1").contains("[::1]:1 is listed twice"));
    assert!(refused("a:1,b").contains("expected host:port"));
    let many: Vec<String> = (0..=MAX_SERVERS).map(|i| format!("h{i}:1")).collect();
    assert!(refused(&many.join(",")).contains("at most 64"));
    assert!(many[..MAX_SERVERS].join(",").parse::<ServerList>().is_ok());

    let none = ServerList::new(Vec::<ServerAddress>::new()).unwrap_err();
    assert!(none.to_string().contains("no server address"), "{none}");
}

/// An address where nothing listens (bound, then closed).
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn with_servers(env: &Env, token: &str, servers: &[SocketAddr]) -> AgentConfig {
    let mut config = env.config(Some(token));
    config.servers = ServerList::new(servers.iter().map(|a| ServerAddress::from(*a))).unwrap();
    config
}

/// Waits until the agent's latest SyncEntries call is the `n`-th, and returns where it went.
async fn nth_sync(server: &FakeServer, n: usize) -> (SocketAddr, u64) {
    tokio::time::timeout(WAIT, async {
        loop {
            {
                let state = server.state();
                if state.sync_servers.len() >= n {
                    return (state.sync_servers[n - 1], state.sync_requests[n - 1]);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the agent never opened its entry stream again")
}

#[tokio::test(start_paused = true)]
async fn a_server_that_does_not_answer_is_skipped() {
    let env = Env::new().await;
    env.server.put_entry(entry("e1", "/web", SELECTOR));
    let dead = closed_port().await;
    // Whichever comes first in the random order, the agent ends up on the live server.
    let agent: RunningAgent = env.spawn(with_servers(
        &env,
        &env.server.add_token(),
        &[dead, env.server.addr],
    ));
    let ctx = wait_for_x509(&env.socket(), |c| c.svids.len() == 1).await;
    assert_eq!(ids(&ctx), ["spiffe://example.org/web"]);
    assert_eq!(nth_sync(&env.server, 1).await.0, env.server.addr);
    agent.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn fails_over_to_another_server_and_resumes_from_its_revision() {
    let mut env = Env::new().await;
    env.server.put_entry(entry("e1", "/web", SELECTOR));
    let mut b = env.server.sibling().await;
    let agent = env.spawn(with_servers(
        &env,
        &env.server.add_token(),
        &[env.server.addr, b.addr],
    ));
    wait_for_x509(&env.socket(), |c| c.svids.len() == 1).await;
    let (first, since) = nth_sync(&env.server, 1).await;
    assert_eq!(since, 0);
    let revision = env.server.state().revision;

    // The server the agent is on goes away; an entry is written meanwhile (through the other).
    let (other, gone) = if first == env.server.addr {
        env.server.stop().await;
        (b.addr, env.server.addr)
    } else {
        b.stop().await;
        (env.server.addr, b.addr)
    };
    env.server.put_entry(entry("e2", "/db", SELECTOR));
    let ctx = wait_for_x509(&env.socket(), |c| c.svids.len() == 2).await;
    assert_eq!(
        ids(&ctx),
        ["spiffe://example.org/db", "spiffe://example.org/web"]
    );
    let (second, since) = nth_sync(&env.server, 2).await;
    assert_eq!(second, other, "moved from {gone} to the server still up");
    assert_eq!(since, revision, "resumed from its revision");
    assert_eq!(
        env.server.state().full_syncs,
        1,
        "a delta, not the full set"
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reconnects_first_to_the_server_that_last_worked() {
    let env = Env::new().await;
    env.server.put_entry(entry("e1", "/web", SELECTOR));
    let b = env.server.sibling().await;
    let c = env.server.sibling().await;
    let servers = [&env.server, &b, &c];
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let agent = env.spawn(with_servers(&env, &env.server.add_token(), &addrs));
    wait_for_x509(&env.socket(), |c| c.svids.len() == 1).await;
    let (first, _) = nth_sync(&env.server, 1).await;
    let on = servers.iter().find(|s| s.addr == first).unwrap();

    // The connection drops while its server stays up: every reconnection goes back to it, where
    // a random choice would pick another two times in three.
    for n in 2..=4 {
        on.sever();
        let (next, since) = nth_sync(&env.server, n).await;
        assert_eq!(next, first, "reconnection {n}");
        assert!(since > 0);
    }
    agent.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_server_that_listens_again_ends_the_backoff() {
    let mut env = Env::new().await;
    env.server.put_entry(entry("e1", "/web", SELECTOR));
    // Backoff of half an hour to an hour between rounds: only the probe can bring the agent back
    // within the few minutes this test allows.
    let hour = Duration::from_secs(3600);
    let config = env
        .config(Some(&env.server.add_token()))
        .with_tuning(Tuning::default().with_retry(hour, hour));
    let agent = env.spawn(config);
    wait_for_x509(&env.socket(), |c| c.svids.len() == 1).await;

    env.server.stop().await;
    // Virtual time passes: the agent's immediate round fails and its backoff starts.
    tokio::time::sleep(Duration::from_secs(60)).await;
    env.server.put_entry(entry("e2", "/db", SELECTOR));
    env.server.restart().await;
    let back = tokio::time::timeout(
        Duration::from_secs(300),
        wait_for_x509(&env.socket(), |c| c.svids.len() == 2),
    )
    .await;
    assert!(back.is_ok(), "the agent waited out its backoff");
    assert_eq!(env.server.state().sync_requests.len(), 2);
    agent.shutdown().await.unwrap();
}

/// Addresses that drop connection attempts, as hosts behind a dropping firewall do: listeners
/// with a backlog of 0 whose queued connections are never accepted, so the kernel ignores
/// further SYNs. The first is checked with a connect that must time out; the others are filled
/// with as many connections. Keep the returned values alive.
fn blackholes(
    n: usize,
) -> (
    Vec<SocketAddr>,
    Vec<std::net::TcpListener>,
    Vec<std::net::TcpStream>,
) {
    let listen = || {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket.listen(0).unwrap().into_std().unwrap()
    };
    let first = listen();
    let addr = first.local_addr().unwrap();
    let mut queued = Vec::new();
    let fill = loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(stream) if queued.len() < 8 => queued.push(stream),
            Ok(_) => panic!("{addr} kept accepting connections: no blackhole on this machine"),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break queued.len(),
            Err(e) => panic!("connect to the blackhole: {e}"),
        }
    };
    let (mut addrs, mut listeners) = (vec![addr], vec![first]);
    for _ in 1..n {
        let listener = listen();
        let addr = listener.local_addr().unwrap();
        for _ in 0..fill {
            queued.push(std::net::TcpStream::connect(addr).unwrap());
        }
        addrs.push(addr);
        listeners.push(listener);
    }
    (addrs, listeners, queued)
}

#[tokio::test(start_paused = true)]
async fn servers_that_drop_packets_cost_a_stagger_each_not_the_connect_timeout() {
    let env = Env::new().await;
    env.server.put_entry(entry("e1", "/web", SELECTOR));
    // Seven silent servers and one that answers, tried in a random order: waiting out the
    // hour-long connect timeout on any silent one before trying the next would miss the five
    // minutes allowed (unless the live one came first, one time in eight).
    let (mut servers, _listeners, _queued) = blackholes(7);
    servers.push(env.server.addr);
    let mut tuning = Tuning::default();
    tuning.connect_timeout = Duration::from_secs(3600);
    let config = with_servers(&env, &env.server.add_token(), &servers).with_tuning(tuning);
    let agent = env.spawn(config);
    let served = tokio::time::timeout(
        Duration::from_secs(300),
        wait_for_x509(&env.socket(), |c| c.svids.len() == 1),
    )
    .await;
    assert!(served.is_ok(), "the agent waited on a silent server");
    assert_eq!(nth_sync(&env.server, 1).await.0, env.server.addr);
    agent.shutdown().await.unwrap();
}
