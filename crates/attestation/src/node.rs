//! Node attestation: how an agent proves to the server which node it runs on, and so which
//! agent SPIFFE ID it gets (`spiffe://<td>/lanyard/agent/<attestor>/<id>`).
//!
//! Each attestor is a pair: a server-side verifier and an agent-side client, exchanging plain
//! message types (the node API's protobuf wraps them). No network, no storage: the server passes
//! in what must be looked up (a join token's state) through a trait.

use lanyard_core::{IdError, SelectorSet, SpiffeId, TrustDomain};

pub mod join_token;
pub mod x509pop;

/// Path segments before the attestor name in every agent ID.
pub const AGENT_PATH_PREFIX: [&str; 2] = ["lanyard", "agent"];

/// What a verifier concluded about an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedNode {
    /// The agent's SPIFFE ID, which its SVID will carry.
    pub agent_id: SpiffeId,
    /// Facts about the node, matched against node-alias entries (`x509pop:subject:cn:…`).
    pub selectors: SelectorSet,
    /// The attestor's name: `join_token` or `x509pop`.
    pub attestor: &'static str,
    /// Whether the same node may attest again and keep its ID (x509pop can; a join token is
    /// spent).
    pub can_reattest: bool,
}

/// True for `spiffe://<td>/lanyard/agent/<…>` (at least one segment after the prefix): the IDs
/// lanyard gives agents, and the only ones under its reserved `/lanyard` path
/// ([`SpiffeId::is_reserved_for_lanyard`]) that a join token may be bound to.
pub fn is_agent_id(id: &SpiffeId) -> bool {
    let mut segments = id.segments();
    AGENT_PATH_PREFIX
        .iter()
        .all(|prefix| segments.next() == Some(*prefix))
        && segments.next().is_some()
}

/// `spiffe://<td>/lanyard/agent/<attestor>/<id>`.
pub fn agent_id(trust_domain: &TrustDomain, attestor: &str, id: &str) -> Result<SpiffeId, IdError> {
    let [a, b] = AGENT_PATH_PREFIX;
    trust_domain.id_from_segments(&[a, b, attestor, id])
}
