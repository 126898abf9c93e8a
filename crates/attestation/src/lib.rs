//! Attestation: how lanyard learns who is asking.
//!
//! - [`node`]: node attestors, each a server-side verifier and an agent-side client exchanging
//!   plain message types: [`node::join_token`] (a single-use secret) and [`node::x509pop`]
//!   (proof of possession of a key certified by a CA the server trusts). Pure logic: no network,
//!   no storage; the one lookup they need (consuming a join token) is a trait the server
//!   implements.
//! - [`workload`]: workload attestors, which read what the kernel says about the process on the
//!   other end of the agent's socket: [`workload::UnixAttestor`] (ids, names, executable path and
//!   hash) and [`workload::CgroupAttestor`] (cgroup path, systemd unit). The process is pinned by
//!   a pidfd ([`workload::PinnedProcess`]) so a reused pid is refused, not attested.
//!
//! This crate reads `/proc` and the account files it is pointed at, and nothing else; it never
//! trusts what a caller says about itself.

pub mod node;
pub mod workload;

pub use node::AttestedNode;
pub use node::join_token::{
    ConsumeError, ConsumedToken, JoinToken, JoinTokenAttestationData, JoinTokenClient,
    JoinTokenError, JoinTokenVerifier, TokenConsumer, TokenId,
};
pub use node::x509pop::{
    X509PopAttestationData, X509PopChallenge, X509PopClient, X509PopConfig, X509PopError,
    X509PopPending, X509PopResponse, X509PopVerifier,
};
pub use workload::{
    AttestError, CgroupAttestor, PinnedProcess, UnixAttestor, UnixConfig, WorkloadAttestor,
    attest_peer, attest_pid, attest_process,
};

/// Lowercase hex, two digits per byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
