//! How fast an agent comes back after its server restarts: starts a real `lanyard server run`
//! (SQLite) and a real `lanyard agent run`, then kills the server (SIGKILL) `--restarts` times,
//! keeps it down `--down-ms`, starts it again on the same port, and measures from the server's
//! `lanyard server started` log line (ready: the node API is served from then on) to the agent's
//! next `entry stream open` line. Both times come from the processes' own log timestamps (one
//! clock, microseconds), so polling the logs adds nothing to the figures. Prints p50 / p99 / max.
//!
//! An agent older than the `entry stream open` info line logs it at debug: measure one with
//! `RUST_LOG=info,lanyard_agent::sync=debug LANYARD_BIN=<its lanyard>`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark: a failure is a crash with its message"
)]

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::bench::{Samples, fmt_dur, load_average};
use lanyard_e2e::{Server, log_line_time, wait_for};

const SERVER_READY: &str = "lanyard server started";
const STREAM_OPEN: &str = "entry stream open";

fn main() -> anyhow::Result<()> {
    let mut restarts = 20usize;
    let mut down = Duration::from_millis(200);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("a value after the flag");
        match arg.as_str() {
            "--restarts" => restarts = value()?.parse()?,
            "--down-ms" => down = Duration::from_millis(value()?.parse()?),
            "--help" | "-h" => {
                println!("reconnect-bench [--restarts N (20)] [--down-ms MS (200)]");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}; see --help"),
        }
    }

    let mut server = Server::start();
    let agent = Agent::start(&server, "spiffe://example.org/lanyard/agent/bench");
    wait_for(
        "the agent's first entry stream",
        Duration::from_secs(60),
        || (count(&agent.log(), STREAM_OPEN) >= 1).then_some(()),
    );

    let mut samples = Samples::default();
    for round in 0..restarts {
        let opens = count(&agent.log(), STREAM_OPEN);
        let starts = count(&server.log(), SERVER_READY);
        server.kill();
        // The outage itself: what is measured starts when the server is back.
        std::thread::sleep(down);
        server.relaunch();
        let log = wait_for(
            "the agent's entry stream to open again",
            Duration::from_secs(120),
            || {
                let log = agent.log();
                (count(&log, STREAM_OPEN) > opens).then_some(log)
            },
        );
        let server_log = server.log();
        let ready = nth_time(&server_log, SERVER_READY, starts)
            .context("the server's ready line has no timestamp")?;
        let open = nth_time(&log, STREAM_OPEN, opens)
            .context("the agent's stream line has no timestamp")?;
        // Zero if the clock stepped back in between.
        let delay = open.duration_since(ready).unwrap_or_default();
        eprintln!(
            "restart {round}: server ready -> agent stream open {}",
            fmt_dur(delay)
        );
        samples.push(delay);
    }
    println!(
        "{restarts} restarts, down {} each: server ready -> agent stream open p50 / p99 / max = {} (load average {})",
        fmt_dur(down),
        samples.p50_p99_max(),
        load_average()
    );
    Ok(())
}

/// Lines containing `marker`.
fn count(log: &str, marker: &str) -> usize {
    log.lines().filter(|l| l.contains(marker)).count()
}

/// The time of the `n`-th line (from 0) containing `marker`.
fn nth_time(log: &str, marker: &str, n: usize) -> Option<SystemTime> {
    let line = log.lines().filter(|l| l.contains(marker)).nth(n)?;
    log_line_time(line)
}
