//! Whom a task acts for, against a real server and agent: `on_behalf_of` is an identity
//! provider's token (signed here by jsonwebtoken, keys in a JWKS file the server reads), which
//! the server verifies and reduces to its `sub`; expired, foreign, misaddressed, forged and
//! anonymous tokens are refused and recorded. A plain name is accepted only by a permit annotated
//! `@on_behalf_of("unverified")`, and the token then says `"verified": false`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lanyard_e2e::CliOutput;
use lanyard_e2e::tasks::{TaskSetup, jwt_claims};
use serde_json::{Value, json};

const AGENT_ID: &str = "spiffe://example.org/lanyard/agent/identity";
const WORKLOAD: &str = "spiffe://example.org/agents/assistant";
const ISSUER: &str = "https://idp.example.test";
/// The audience the provider's tokens carry for lanyard.
const AUDIENCE: &str = "lanyard-tasks";

/// `read` only for people a trusted provider vouched for; `list` for anyone, but a plain name is
/// not accepted (no `@on_behalf_of`); `export` accepts a plain name.
const POLICY: &str = r#"
@id("read-for-people")
permit(principal, action == Action::"read", resource == Tool::"tickets")
when { context.on_behalf_of_verified && context.on_behalf_of_issuer == "https://idp.example.test" };

@id("list")
permit(principal, action == Action::"list", resource == Tool::"tickets");

@id("export-for-names")
@on_behalf_of("unverified")
permit(principal, action == Action::"export", resource == Tool::"tickets");
"#;

/// An identity provider: an ES256 key, published as a JWKS file.
struct Provider {
    key: EncodingKey,
    kid: String,
}

impl Provider {
    fn new(kid: &str) -> Self {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        Self {
            key: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            kid: kid.to_owned(),
        }
    }

    fn jwks(&self) -> String {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap()
    }

    fn token(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Good claims for alice, changed by `edit`.
fn claims(edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = json!({
        "iss": ISSUER,
        "sub": "alice@example.test",
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
    });
    edit(&mut c);
    c
}

struct Setup {
    tasks: TaskSetup,
    provider: Provider,
    _jwks_dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Self {
        let provider = Provider::new("idp-1");
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("idp.jwks");
        std::fs::write(&jwks, provider.jwks()).unwrap();
        let config = format!(
            "[[identity_providers]]\nissuer = \"{ISSUER}\"\njwks_file = \"{}\"\naudience = \"{AUDIENCE}\"\n",
            jwks.display()
        );
        Self {
            tasks: TaskSetup::start(POLICY, &config, WORKLOAD, &[AGENT_ID]),
            provider,
            _jwks_dir: dir,
        }
    }

    fn begin(&self, op: &str, on_behalf_of: &str) -> CliOutput {
        self.tasks.agent().cli(&[
            "task",
            "begin",
            "--audience",
            "tickets",
            "--op",
            op,
            "--on-behalf-of",
            on_behalf_of,
            "--output",
            "json",
        ])
    }

    fn refused(&self, op: &str, on_behalf_of: &str) -> String {
        let out = self.begin(op, on_behalf_of);
        assert!(!out.success, "granted: {}", out.stdout);
        assert!(out.stderr.contains("PermissionDenied"), "{}", out.stderr);
        out.stderr
    }

    /// The reasons of the audit log's records of `kind`, in order.
    fn reasons(&self, kind: &str) -> Vec<String> {
        let list = self
            .tasks
            .server
            .cli(&["audit", "list", "--kind", kind, "--output", "json"])
            .json();
        list["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["details"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }
}

#[test]
fn a_providers_token_names_the_person_and_the_token_says_who_vouched() {
    let setup = Setup::start();
    let idp_token = setup.provider.token(&claims(|_| {}));
    let out = setup.begin("read", &idp_token);
    assert!(out.success, "{}", out.stderr);
    let granted = out.json();
    assert_eq!(granted["task"]["on_behalf_of"], "alice@example.test");
    let token = granted["token"].as_str().unwrap();
    let c = jwt_claims(token);
    assert_eq!(
        c["lanyard"]["obo"],
        json!({"sub": "alice@example.test", "iss": ISSUER, "verified": true})
    );
    // The provider's token itself is nowhere in the credential.
    assert!(!token.contains(&idp_token));
    // A tool learns it through ValidateTaskToken.
    let valid = setup
        .tasks
        .agent()
        .cli(&[
            "task",
            "validate",
            "--token",
            token,
            "--audience",
            "tickets",
            "--op",
            "read",
            "--output",
            "json",
        ])
        .json();
    assert_eq!(valid["on_behalf_of"], "alice@example.test");
    assert_eq!(valid["on_behalf_of_verified"], true);
    assert_eq!(valid["on_behalf_of_issuer"], ISSUER);
    // The policy saw it verified: the same person as a plain name is not allowed to read.
    let plain = setup.refused("read", "alice@example.test");
    assert!(plain.contains("no policy permits it"), "{plain}");
}

#[test]
fn expired_foreign_misaddressed_forged_and_anonymous_tokens_are_refused_and_recorded() {
    let setup = Setup::start();
    let cases: [(&str, String, &str); 6] = [
        (
            "expired",
            setup.provider.token(&claims(|c| {
                c["iat"] = json!(now() - 7200);
                c["exp"] = json!(now() - 3600);
            })),
            "token expired",
        ),
        (
            "wrong issuer",
            setup
                .provider
                .token(&claims(|c| c["iss"] = json!("https://evil.example.test"))),
            "not an identity provider this server trusts",
        ),
        (
            "wrong audience",
            setup
                .provider
                .token(&claims(|c| c["aud"] = json!("another-app"))),
            "does not contain \"lanyard-tasks\"",
        ),
        (
            "bad signature",
            // Another key under the provider's key id.
            Provider::new("idp-1").token(&claims(|_| {})),
            "signature is invalid",
        ),
        (
            "unknown key",
            Provider::new("idp-2").token(&claims(|_| {})),
            "no key with ID \"idp-2\"",
        ),
        (
            "no subject",
            setup.provider.token(&claims(|c| {
                c.as_object_mut().unwrap().remove("sub");
            })),
            "names nobody",
        ),
    ];
    for (case, token, expected) in &cases {
        let stderr = setup.refused("read", token);
        assert!(stderr.contains(expected), "{case}: {stderr}");
    }
    let reasons = setup.reasons("task.refused");
    assert_eq!(reasons.len(), cases.len(), "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.contains("on_behalf_of")),
        "{reasons:?}"
    );
    // Nothing was issued.
    let tasks = setup
        .tasks
        .server
        .cli(&["task", "list", "--output", "json"])
        .json();
    assert_eq!(tasks["tasks"].as_array().map_or(0, Vec::len), 0);
}

#[test]
fn a_plain_name_is_accepted_only_where_a_policy_says_so_and_marked_unverified() {
    let setup = Setup::start();
    let refused = setup.refused("list", "user:bob");
    assert!(
        refused.contains("no trusted identity provider vouched for")
            && refused.contains("@on_behalf_of(\"unverified\")"),
        "{refused}"
    );
    assert_eq!(setup.reasons("task.denied").len(), 1);
    // Nobody named at all: `list` is allowed.
    let out = setup.tasks.agent().cli(&[
        "task",
        "begin",
        "--audience",
        "tickets",
        "--op",
        "list",
        "--output",
        "json",
    ]);
    assert!(out.success, "{}", out.stderr);
    assert!(jwt_claims(out.json()["token"].as_str().unwrap())["lanyard"]["obo"].is_null());
    // `export` accepts a name, and the token says nobody vouched for it.
    let out = setup.begin("export", "user:bob");
    assert!(out.success, "{}", out.stderr);
    let c = jwt_claims(out.json()["token"].as_str().unwrap());
    assert_eq!(
        c["lanyard"]["obo"],
        json!({"sub": "user:bob", "verified": false})
    );
}
