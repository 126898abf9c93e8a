//! Who a task acts for. A task's `on_behalf_of` is either a token from an identity provider the
//! server trusts (configured by issuer, JWKS file and the audience its tokens must carry for
//! lanyard), which the server verifies — signature, `iss`, `aud`, `exp`, `nbf` — and reduces to
//! its `sub`; or a plain name nobody vouched for, which only a permit annotated
//! `@on_behalf_of("unverified")` accepts and which every token then marks `"verified": false`.
//!
//! The providers' keys are read from their files at start and again with the policies (SIGHUP,
//! `lanyard policy reload`): whatever fetches a provider's JWKS writes the file; the server never
//! reaches out to the network for keys.

use std::path::Path;
use std::time::SystemTime;

use lanyard_core::{Bundle, TrustDomain, verify_jwt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::IdentityProviderConfig;

/// Largest JWKS file read.
const MAX_JWKS_FILE_BYTES: u64 = 1024 * 1024;

/// The providers the server trusts, with their keys as last read.
#[derive(Debug, Default)]
pub(crate) struct IdentityProviders {
    providers: Vec<Provider>,
}

#[derive(Debug)]
struct Provider {
    issuer: String,
    audience: String,
    keys: Bundle,
}

/// The principal a task acts for, once resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Principal {
    /// The provider token's `sub`, or the name as given.
    pub(crate) name: String,
    /// The provider that vouched for `name`; `""` when nobody did.
    pub(crate) issuer: String,
}

impl IdentityProviders {
    /// Reads every provider's JWKS file. Any provider that cannot be read is an error: a server
    /// does not start (or reload) trusting fewer providers than configured without saying so.
    pub(crate) fn load(configs: &[IdentityProviderConfig]) -> Result<Self, String> {
        let mut providers: Vec<Provider> = Vec::with_capacity(configs.len());
        for config in configs {
            if providers.iter().any(|p| p.issuer == config.issuer) {
                return Err(format!(
                    "identity provider {:?} is configured twice",
                    config.issuer
                ));
            }
            let keys = read_jwks(&config.issuer, &config.jwks_file)?;
            providers.push(Provider {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                keys,
            });
        }
        Ok(Self { providers })
    }

    /// The principal `on_behalf_of` names: `None` for an empty one; the `sub` of a token from a
    /// trusted provider, verified at `now`; a plain name, unverified. A token (three
    /// base64url parts) that does not verify is refused: it is never taken as a plain name.
    pub(crate) fn resolve(
        &self,
        on_behalf_of: &str,
        now: SystemTime,
    ) -> Result<Option<Principal>, String> {
        if on_behalf_of.is_empty() {
            return Ok(None);
        }
        if !looks_like_jwt(on_behalf_of) {
            return Ok(Some(Principal {
                name: on_behalf_of.to_owned(),
                issuer: String::new(),
            }));
        }
        let issuer = unverified_issuer(on_behalf_of)
            .ok_or("on_behalf_of is a token without an `iss` claim")?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.issuer == issuer)
            .ok_or_else(|| {
                format!(
                    "on_behalf_of is a token from {:?}, which is not an identity provider this server trusts",
                    crate::limits::clip(&issuer, 256)
                )
            })?;
        let verified = verify_jwt(on_behalf_of, &provider.audience, &provider.keys, now)
            .map_err(|e| format!("the on_behalf_of token from {issuer:?} is not valid: {e}"))?;
        // Checked on the verified claims: the unverified read only picked the keys.
        if verified.claims().get("iss").and_then(Value::as_str) != Some(provider.issuer.as_str()) {
            return Err("the on_behalf_of token's `iss` is not its provider's".to_owned());
        }
        match verified.claims().get("sub").and_then(Value::as_str) {
            Some(sub) if !sub.is_empty() => Ok(Some(Principal {
                name: sub.to_owned(),
                issuer: provider.issuer.clone(),
            })),
            _ => Err(format!(
                "the on_behalf_of token from {issuer:?} names nobody: it has no `sub`"
            )),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.providers.len()
    }
}

impl Principal {
    pub(crate) fn verified(&self) -> bool {
        !self.issuer.is_empty()
    }

    /// What the policies see of a task's principal: `on_behalf_of`, `on_behalf_of_verified`,
    /// `on_behalf_of_issuer` (empty, false, empty for none).
    pub(crate) fn grant_context(principal: Option<&Self>) -> (String, bool, String) {
        principal.map_or_else(Default::default, |p| {
            (p.name.clone(), p.verified(), p.issuer.clone())
        })
    }

    /// The token's `obo` member: `{"sub", "iss"?, "verified"}`.
    pub(crate) fn claim(&self) -> Value {
        let mut claim = json!({ "sub": self.name, "verified": self.verified() });
        if self.verified() {
            claim["iss"] = json!(self.issuer);
        }
        claim
    }

    /// Reads an `obo` member back (from a parent token the server signed).
    pub(crate) fn from_claim(claim: &Value) -> Option<Self> {
        let name = claim.get("sub")?.as_str()?.to_owned();
        let issuer = if claim.get("verified")?.as_bool()? {
            claim.get("iss")?.as_str()?.to_owned()
        } else {
            String::new()
        };
        Some(Self { name, issuer })
    }
}

fn read_jwks(issuer: &str, path: &Path) -> Result<Bundle, String> {
    let fail = |what: String| {
        format!(
            "identity provider {issuer:?}: JWKS file {}: {what}",
            path.display()
        )
    };
    let len = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .len();
    if len > MAX_JWKS_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_JWKS_FILE_BYTES} bytes")));
    }
    let json = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let name = provider_name(issuer)
        .or_else(|_| TrustDomain::new("identity-provider"))
        .map_err(|e| fail(e.to_string()))?;
    let keys = Bundle::parse_signing_jwks(name, &json).map_err(|e| fail(e.to_string()))?;
    if keys.jwt_authorities().is_empty() {
        return Err(fail("holds no signing key lanyard can use".to_owned()));
    }
    Ok(keys)
}

/// A name for the provider's keys in verification errors: the issuer's host.
fn provider_name(issuer: &str) -> Result<TrustDomain, lanyard_core::IdError> {
    let host = issuer
        .split_once("://")
        .map_or(issuer, |(_, rest)| rest)
        .split(['/', ':', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    TrustDomain::new(&host)
}

/// Three non-empty base64url parts, the first a JSON object (`{"` is `eyJ`): the compact form
/// of a JWS. A dotted name such as `john.q.public` is not one.
fn looks_like_jwt(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && text.starts_with("eyJ")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `iss` read before the signature is checked, only to pick the provider's keys.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn plain_names_and_tokens_are_told_apart() {
        assert!(looks_like_jwt("eyJh.eyJi.c2ln"));
        for name in [
            "alice",
            "alice@example.com",
            "spiffe://example.org/human/alice",
            "a.b",
            "a..c",
            "a.b.c.d",
            "a b.c.d",
            "john.q.public",
        ] {
            assert!(!looks_like_jwt(name), "{name}");
        }
    }

    #[test]
    fn a_token_is_never_taken_as_a_plain_name() {
        let none = IdentityProviders::default();
        let now = SystemTime::now();
        assert_eq!(none.resolve("", now), Ok(None));
        assert_eq!(
            none.resolve("alice", now).unwrap().unwrap(),
            Principal {
                name: "alice".into(),
                issuer: String::new()
            }
        );
        // eyJpc3MiOiJodHRwczovL2lkcCJ9 = {"iss":"https://idp"}
        let err = none
            .resolve(
                "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcCJ9.c2ln",
                now,
            )
            .unwrap_err();
        assert!(
            err.contains("not an identity provider this server trusts"),
            "{err}"
        );
        let err = none
            .resolve("eyJhbGciOiJFUzI1NiJ9.eyJ9.c2ln", now)
            .unwrap_err();
        assert!(err.contains("without an `iss`"), "{err}");
    }

    #[test]
    fn claims_round_trip() {
        for principal in [
            Principal {
                name: "alice".into(),
                issuer: "https://idp".into(),
            },
            Principal {
                name: "bob".into(),
                issuer: String::new(),
            },
        ] {
            assert_eq!(Principal::from_claim(&principal.claim()), Some(principal));
        }
        assert_eq!(Principal::from_claim(&json!("alice")), None);
    }

    #[test]
    fn provider_names_come_from_the_issuer_host() {
        assert_eq!(
            provider_name("https://Login.Example.com:8443/tenant/v2.0")
                .unwrap()
                .as_str(),
            "login.example.com"
        );
        assert!(provider_name("not a url").is_err());
    }
}
