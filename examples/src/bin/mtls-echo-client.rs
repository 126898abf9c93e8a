//! An mTLS echo client: one new connection per message, so every message shows which SVIDs are
//! current. It requires the server's SPIFFE ID and stops at the first refusal.
//!
//! ```sh
//! mtls-echo-client --socket /tmp/lanyard/agent.sock --connect 127.0.0.1:9443 \
//!     --server-id spiffe://example.org/server --count 10 --interval 1s
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use lanyard_core::SpiffeId;
use lanyard_tls::{Authorizer, WorkloadIdentity};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

#[derive(Debug, Parser)]
struct Args {
    /// The agent's Workload API socket.
    #[arg(long)]
    socket: std::path::PathBuf,
    #[arg(long, default_value = "127.0.0.1:9443")]
    connect: std::net::SocketAddr,
    /// The SPIFFE ID the server must have.
    #[arg(long)]
    server_id: SpiffeId,
    /// How many messages to send (0: until stopped).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Milliseconds between messages.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let identity = WorkloadIdentity::connect(&args.socket)
        .await
        .context("cannot get an SVID")?;
    let config = Arc::new(identity.client_config(Authorizer::Exact(args.server_id.clone()))?);
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut sent = 0u64;
    loop {
        sent += 1;
        let tcp = tokio::net::TcpStream::connect(args.connect).await?;
        // The name is not checked (SPIFFE IDs are); rustls needs one for SNI.
        let tls = connector
            .connect("localhost".try_into()?, tcp)
            .await
            .with_context(|| format!("the server is not {}", args.server_id))?;
        let (read, mut write) = tokio::io::split(tls);
        write
            .write_all(format!("hello #{sent} from {}\n", identity.spiffe_id()).as_bytes())
            .await?;
        let reply = BufReader::new(read)
            .lines()
            .next_line()
            .await?
            .context("the server closed the connection without answering")?;
        println!("{reply}");
        if args.count != 0 && sent >= args.count {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
}
