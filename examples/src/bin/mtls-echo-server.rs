//! An mTLS echo server whose certificate comes from the Workload API and rotates by itself.
//!
//! ```sh
//! mtls-echo-server --socket /tmp/lanyard/agent.sock --listen 127.0.0.1:9443 \
//!     --allow spiffe://example.org/client
//! ```

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use lanyard_core::{SpiffeId, TrustDomain};
use lanyard_tls::{Authorizer, WorkloadIdentity};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

#[derive(Debug, Parser)]
struct Args {
    /// The agent's Workload API socket.
    #[arg(long)]
    socket: std::path::PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: std::net::SocketAddr,
    /// A SPIFFE ID allowed to connect (repeatable); without it, any ID of our trust domain.
    #[arg(long = "allow")]
    allow: Vec<SpiffeId>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let identity = WorkloadIdentity::connect(&args.socket)
        .await
        .context("cannot get an SVID")?;
    let authorizer = if args.allow.is_empty() {
        let td: TrustDomain = identity.spiffe_id().trust_domain();
        Authorizer::MemberOf(td)
    } else {
        Authorizer::OneOf(args.allow.clone())
    };
    // One config for the life of the process: it reads the current SVID at every handshake.
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(identity.server_config(authorizer)?));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "listening on {} as {}",
        listener.local_addr()?,
        identity.spiffe_id()
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                eprintln!("refused a client whose SVID was not accepted");
                return;
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(lanyard_tls::peer_spiffe_id)
                .map(|id| id.to_string())
                .unwrap_or_default();
            let (read, mut write) = tokio::io::split(tls);
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if write
                    .write_all(format!("{peer}: {line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}
