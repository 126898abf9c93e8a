//! The `join_token` node attestor: the agent presents a single-use, expiring secret that an admin
//! generated on the server (`lanyard token generate`).
//!
//! - agent: [`JoinTokenClient::attestation_data`] → [`JoinTokenAttestationData`];
//! - server: [`JoinTokenVerifier::verify`] asks the server's store, through [`TokenConsumer`], to
//!   consume the token (atomically: unknown, used and expired tokens are refused there), and
//!   returns the agent ID.
//!
//! The agent ID is `spiffe://<td>/lanyard/agent/join_token/<token-id>`, where the token id is
//! the first 16 hex digits (64 bits) of the token's SHA-256 ([`JoinToken::id`]): stable, not the
//! secret (SPIRE puts the token itself in the ID), and unique in practice (two of a million tokens
//! share an id with odds of about 1 in 37 million). A token generated for an agent ID
//! (`--spiffe-id spiffe://<td>/lanyard/agent/…`) gives that ID instead; no other ID can be an
//! agent's.
//!
//! Every agent admitted gets one selector, `join_token:<token-id>` ([`TokenId::selector`]): a
//! node alias with that selector (what `lanyard token generate --spiffe-id spiffe://<td>/node/n1`
//! creates) applies to the one agent that used the token. The id is a hash prefix, safe to show.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use aws_lc_rs::digest;
use lanyard_core::{IdError, Selector, SelectorError, SelectorSet, SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{AttestedNode, agent_id, is_agent_id};

/// The attestor's name, in agent IDs and in the node API.
pub const JOIN_TOKEN_ATTESTOR: &str = "join_token";

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 256;

/// Random bytes in a generated token (128 bits, written as 32 hex digits).
const GENERATED_TOKEN_BYTES: usize = 16;

/// Hex digits of SHA-256 kept in a [`TokenId`].
const TOKEN_ID_HEX_LEN: usize = 16;

/// Why a join token attestation failed. Each variant names one cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinTokenError {
    #[error("join token is empty")]
    Empty,
    #[error("join token is {len} bytes long; the limit is {MAX_TOKEN_LEN}")]
    TooLong { len: usize },
    #[error("join token characters are limited to letters, digits, `.`, `_`, `~` and `-`")]
    BadChar,
    #[error("join token is not known to the server")]
    Unknown,
    #[error("join token has already been used")]
    AlreadyUsed,
    #[error("join token has expired")]
    Expired,
    #[error("join token could not be checked: {reason}")]
    Store { reason: String },
    #[error("the join token was generated for {id}, which is not in trust domain {trust_domain}")]
    ForeignTrustDomain {
        id: SpiffeId,
        trust_domain: TrustDomain,
    },
    #[error("the join token was generated for {id}, which is reserved for lanyard itself")]
    ReservedId { id: SpiffeId },
    #[error(
        "the join token was generated for {id}, which is not an agent ID (spiffe://<td>/lanyard/agent/…)"
    )]
    NotAnAgentId { id: SpiffeId },
    #[error("cannot build the join token selector")]
    Selector(#[source] SelectorError),
    #[error("cannot build the agent ID")]
    AgentId(#[source] IdError),
    #[error("the system random number generator failed")]
    Random,
}

/// A join token: a bearer secret. Its `Debug` does not print it, and its memory is wiped on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct JoinToken(String);

/// The public name of a join token: the first 16 hex digits of its SHA-256. Safe to log and to put in IDs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenId(String);

/// The agent's message: the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenAttestationData {
    pub token: String,
}

/// What the server's store says about a token it has just consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumedToken {
    /// The SPIFFE ID the token was generated for, if any: it becomes the agent's ID.
    pub spiffe_id: Option<SpiffeId>,
}

/// Why the store would not consume a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    #[error("unknown token")]
    Unknown,
    #[error("token already used")]
    AlreadyUsed,
    #[error("token expired")]
    Expired,
    #[error("{reason}")]
    Store { reason: String },
}

/// The server's store, as the verifier needs it: mark a token used, once. Implementations must
/// make the check and the marking one atomic step, so two agents racing with one token cannot
/// both succeed, and must refuse expired tokens.
pub trait TokenConsumer: Send + Sync {
    fn consume(
        &self,
        token: &JoinToken,
    ) -> impl Future<Output = Result<ConsumedToken, ConsumeError>> + Send;
}

/// The agent side: holds the token until it is sent.
#[derive(Debug, Clone)]
pub struct JoinTokenClient {
    token: JoinToken,
}

/// The server side.
#[derive(Debug, Clone)]
pub struct JoinTokenVerifier {
    trust_domain: TrustDomain,
}

// === impl JoinToken ===

impl JoinToken {
    /// A new random token (128 bits from the system CSPRNG, as 32 hex digits).
    pub fn generate() -> Result<Self, JoinTokenError> {
        let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| JoinTokenError::Random)?;
        let token = Self(crate::hex(&bytes));
        bytes.zeroize();
        Ok(token)
    }

    /// The token's public id.
    pub fn id(&self) -> TokenId {
        let sum = digest::digest(&digest::SHA256, self.0.as_bytes());
        let mut hex = crate::hex(sum.as_ref());
        hex.truncate(TOKEN_ID_HEX_LEN);
        TokenId(hex)
    }

    /// The secret itself, to print once when generated or to send to the server.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl FromStr for JoinToken {
    type Err = JoinTokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(JoinTokenError::Empty);
        }
        if s.len() > MAX_TOKEN_LEN {
            return Err(JoinTokenError::TooLong { len: s.len() });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        {
            return Err(JoinTokenError::BadChar);
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken(id={})", self.id())
    }
}

// === impl TokenId ===

impl TokenId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `join_token:<token-id>`: the selector of the agent that used this token.
    pub fn selector(&self) -> Result<Selector, JoinTokenError> {
        Selector::new(JOIN_TOKEN_ATTESTOR, &self.0).map_err(JoinTokenError::Selector)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl JoinTokenAttestationData ===

impl fmt::Debug for JoinTokenAttestationData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokenAttestationData")
            .field("token", &"…")
            .finish()
    }
}

impl Drop for JoinTokenAttestationData {
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

// === impl JoinTokenClient ===

impl JoinTokenClient {
    pub fn new(token: JoinToken) -> Self {
        Self { token }
    }

    /// The message to send.
    pub fn attestation_data(&self) -> JoinTokenAttestationData {
        JoinTokenAttestationData {
            token: self.token.expose_secret().to_owned(),
        }
    }
}

// === impl JoinTokenVerifier ===

impl JoinTokenVerifier {
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self { trust_domain }
    }

    /// Checks the token's form, consumes it through `store`, and names the agent.
    pub async fn verify<C: TokenConsumer>(
        &self,
        data: &JoinTokenAttestationData,
        store: &C,
    ) -> Result<AttestedNode, JoinTokenError> {
        let token: JoinToken = data.token.parse()?;
        let consumed = store.consume(&token).await.map_err(|e| match e {
            ConsumeError::Unknown => JoinTokenError::Unknown,
            ConsumeError::AlreadyUsed => JoinTokenError::AlreadyUsed,
            ConsumeError::Expired => JoinTokenError::Expired,
            ConsumeError::Store { reason } => JoinTokenError::Store { reason },
        })?;
        let token_id = token.id();
        let agent_id = match consumed.spiffe_id {
            Some(id) => self.check_bound_id(id)?,
            None => self.agent_id(&token_id)?,
        };
        Ok(AttestedNode {
            agent_id,
            selectors: SelectorSet::from_iter([token_id.selector()?]),
            attestor: JOIN_TOKEN_ATTESTOR,
            can_reattest: false,
        })
    }

    /// `spiffe://<td>/lanyard/agent/join_token/<token-id>`.
    pub fn agent_id(&self, token_id: &TokenId) -> Result<SpiffeId, JoinTokenError> {
        agent_id(&self.trust_domain, JOIN_TOKEN_ATTESTOR, token_id.as_str())
            .map_err(JoinTokenError::AgentId)
    }

    /// A token may be bound to an agent ID of this trust domain only. The server's admin API
    /// stores no other (a token generated for another ID makes a node alias instead); this check
    /// covers rows written any other way.
    fn check_bound_id(&self, id: SpiffeId) -> Result<SpiffeId, JoinTokenError> {
        if !id.is_member_of(&self.trust_domain) {
            return Err(JoinTokenError::ForeignTrustDomain {
                id,
                trust_domain: self.trust_domain.clone(),
            });
        }
        if is_agent_id(&id) {
            Ok(id)
        } else if id.is_reserved_for_lanyard() {
            Err(JoinTokenError::ReservedId { id })
        } else {
            Err(JoinTokenError::NotAnAgentId { id })
        }
    }
}
