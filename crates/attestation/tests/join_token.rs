//! The `join_token` attestor with a fake store: success, and every refusal propagated.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use lanyard_attestation::{
    ConsumeError, ConsumedToken, JoinToken, JoinTokenAttestationData, JoinTokenClient,
    JoinTokenError, JoinTokenVerifier, TokenConsumer,
};
use lanyard_core::{SpiffeId, TrustDomain};

#[derive(Debug, Clone)]
enum State {
    Fresh(Option<SpiffeId>),
    Used,
    Expired,
}

/// A store that consumes each token once, atomically, and counts how often it was asked.
#[derive(Debug, Default)]
struct FakeStore {
    tokens: Mutex<HashMap<String, State>>,
    calls: AtomicUsize,
    broken: bool,
}

impl FakeStore {
    fn with(tokens: &[(&JoinToken, State)]) -> Self {
        let store = Self::default();
        for (token, state) in tokens {
            store
                .tokens
                .lock()
                .unwrap()
                .insert(token.expose_secret().to_owned(), state.clone());
        }
        store
    }
}

impl TokenConsumer for FakeStore {
    async fn consume(&self, token: &JoinToken) -> Result<ConsumedToken, ConsumeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.broken {
            return Err(ConsumeError::Store {
                reason: "database is down".into(),
            });
        }
        let mut tokens = self.tokens.lock().unwrap();
        let state = tokens
            .get_mut(token.expose_secret())
            .ok_or(ConsumeError::Unknown)?;
        match std::mem::replace(state, State::Used) {
            State::Fresh(spiffe_id) => Ok(ConsumedToken { spiffe_id }),
            State::Used => Err(ConsumeError::AlreadyUsed),
            State::Expired => {
                *state = State::Expired;
                Err(ConsumeError::Expired)
            }
        }
    }
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn data(token: &str) -> JoinTokenAttestationData {
    JoinTokenAttestationData {
        token: token.to_owned(),
    }
}

#[tokio::test]
async fn a_fresh_token_attests_once() {
    let token = JoinToken::generate().unwrap();
    let store = FakeStore::with(&[(&token, State::Fresh(None))]);
    let verifier = JoinTokenVerifier::new(td());
    let client = JoinTokenClient::new(token.clone());

    let node = verifier
        .verify(&client.attestation_data(), &store)
        .await
        .unwrap();
    assert_eq!(
        node.agent_id.as_str(),
        format!(
            "spiffe://example.org/lanyard/agent/join_token/{}",
            token.id()
        )
    );
    assert_eq!(node.attestor, "join_token");
    assert!(!node.can_reattest);
    // The one selector names the token by its public id, so that a node alias made for this
    // token (`lanyard token generate --spiffe-id spiffe://td/node/n1`) matches this agent only.
    let selectors: Vec<String> = node.selectors.iter().map(ToString::to_string).collect();
    assert_eq!(selectors, [format!("join_token:{}", token.id())]);
    assert_eq!(token.id().selector().unwrap().to_string(), selectors[0]);
    assert!(!selectors[0].contains(token.expose_secret()));

    let err = verifier
        .verify(&client.attestation_data(), &store)
        .await
        .unwrap_err();
    assert_eq!(err, JoinTokenError::AlreadyUsed);
}

#[tokio::test]
async fn unknown_expired_and_store_failures_are_refused() {
    let expired = JoinToken::generate().unwrap();
    let store = FakeStore::with(&[(&expired, State::Expired)]);
    let verifier = JoinTokenVerifier::new(td());
    assert_eq!(
        verifier
            .verify(&data(expired.expose_secret()), &store)
            .await,
        Err(JoinTokenError::Expired)
    );
    let unknown = JoinToken::generate().unwrap();
    assert_eq!(
        verifier
            .verify(&data(unknown.expose_secret()), &store)
            .await,
        Err(JoinTokenError::Unknown)
    );
    let broken = FakeStore {
        broken: true,
        ..FakeStore::default()
    };
    assert_eq!(
        verifier
            .verify(&data(unknown.expose_secret()), &broken)
            .await,
        Err(JoinTokenError::Store {
            reason: "database is down".into()
        })
    );
}

#[tokio::test]
async fn malformed_tokens_never_reach_the_store() {
    let store = FakeStore::default();
    let verifier = JoinTokenVerifier::new(td());
    assert_eq!(
        verifier.verify(&data(""), &store).await,
        Err(JoinTokenError::Empty)
    );
    assert_eq!(
        verifier.verify(&data("a b"), &store).await,
        Err(JoinTokenError::BadChar)
    );
    assert_eq!(
        verifier.verify(&data("tok\n"), &store).await,
        Err(JoinTokenError::BadChar)
    );
    assert_eq!(
        verifier.verify(&data(&"a".repeat(257)), &store).await,
        Err(JoinTokenError::TooLong { len: 257 })
    );
    assert_eq!(store.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_token_generated_for_an_agent_id_gives_that_id() {
    let token = JoinToken::generate().unwrap();
    let id = SpiffeId::parse("spiffe://example.org/lanyard/agent/custom/rack-7").unwrap();
    let store = FakeStore::with(&[(&token, State::Fresh(Some(id.clone())))]);
    let node = JoinTokenVerifier::new(td())
        .verify(&data(token.expose_secret()), &store)
        .await
        .unwrap();
    assert_eq!(node.agent_id, id);
    let selectors: Vec<String> = node.selectors.iter().map(ToString::to_string).collect();
    assert_eq!(selectors, [format!("join_token:{}", token.id())]);
}

#[tokio::test]
async fn a_bound_id_must_be_an_agent_id_of_this_trust_domain() {
    let verifier = JoinTokenVerifier::new(td());
    for bound in [
        "spiffe://other.org/lanyard/agent/custom/a",
        "spiffe://example.org",
        "spiffe://example.org/lanyard/server",
        "spiffe://example.org/lanyard",
        "spiffe://example.org/lanyard/agent",
        // An agent's SVID is an SVID: bound to a workload's ID, it would be that workload. Such a
        // token makes a node alias instead, and is stored without an ID.
        "spiffe://example.org/node/rack-7",
    ] {
        let token = JoinToken::generate().unwrap();
        let id = SpiffeId::parse(bound).unwrap();
        let store = FakeStore::with(&[(&token, State::Fresh(Some(id.clone())))]);
        let err = verifier
            .verify(&data(token.expose_secret()), &store)
            .await
            .unwrap_err();
        let want = if !id.is_member_of(&td()) {
            JoinTokenError::ForeignTrustDomain {
                id,
                trust_domain: td(),
            }
        } else if id.is_reserved_for_lanyard() {
            JoinTokenError::ReservedId { id }
        } else {
            JoinTokenError::NotAnAgentId { id }
        };
        assert_eq!(err, want, "{bound}");
    }
    // Agent IDs are fine.
    let token = JoinToken::generate().unwrap();
    let id = SpiffeId::parse("spiffe://example.org/lanyard/agent/custom/n1").unwrap();
    let store = FakeStore::with(&[(&token, State::Fresh(Some(id.clone())))]);
    let node = verifier
        .verify(&data(token.expose_secret()), &store)
        .await
        .unwrap();
    assert_eq!(node.agent_id, id);
}

#[test]
fn agent_ids_are_those_under_lanyard_agent() {
    use lanyard_attestation::node::is_agent_id;
    for yes in [
        "spiffe://example.org/lanyard/agent/join_token/0123",
        "spiffe://example.org/lanyard/agent/x",
        "spiffe://other.org/lanyard/agent/x509pop/ab/cd",
    ] {
        assert!(is_agent_id(&SpiffeId::parse(yes).unwrap()), "{yes}");
    }
    for no in [
        "spiffe://example.org",
        "spiffe://example.org/lanyard",
        "spiffe://example.org/lanyard/agent",
        "spiffe://example.org/lanyard/server",
        "spiffe://example.org/lanyard/agentx/a",
        "spiffe://example.org/x/lanyard/agent/a",
        "spiffe://example.org/node/n1",
    ] {
        assert!(!is_agent_id(&SpiffeId::parse(no).unwrap()), "{no}");
    }
}

#[test]
fn tokens_and_ids() {
    let token = JoinToken::generate().unwrap();
    let secret = token.expose_secret();
    assert_eq!(secret.len(), 32);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(JoinToken::generate().unwrap(), token);

    let id = token.id();
    assert_eq!(id.as_str().len(), 16);
    assert_eq!(token.id(), id, "the id is a function of the token");
    assert!(!id.as_str().contains(secret) && !secret.contains(id.as_str()));

    // Fixed vector: the id is the first 16 hex digits of SHA-256("abc").
    let abc: JoinToken = "abc".parse().unwrap();
    assert_eq!(abc.id().as_str(), "ba7816bf8f01cfea");

    // Secrets stay out of Debug output.
    assert!(!format!("{token:?}").contains(secret));
    let message = JoinTokenClient::new(token.clone()).attestation_data();
    assert_eq!(message.token, secret);
    assert!(!format!("{message:?}").contains(secret));
    assert!(!format!("{:?}", JoinTokenClient::new(token.clone())).contains(secret));
}

#[test]
fn the_message_round_trips_through_serde() {
    let message = data("some-token");
    let json = serde_json::to_string(&message).unwrap();
    let back: JoinTokenAttestationData = serde_json::from_str(&json).unwrap();
    assert_eq!(back, message);
}
