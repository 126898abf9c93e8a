//! Property tests: the verifiers never panic, whatever the input.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod bundle_fixtures;

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bundle_fixtures::{Ca, JwtKey, KeyKind, claims, hand_token, jwt_bundle, t0};
use lanyard_core::{BundleSet, verify_jwt_svid, verify_x509_svid};
use proptest::prelude::*;
use serde_json::{Value, json};

struct Fixture {
    key: JwtKey,
    bundles: BundleSet,
    root: Ca,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = JwtKey::generate(KeyKind::P256, "k1");
        let root = Ca::root("example.org");
        let mut bundle = jwt_bundle("example.org", &[&key]);
        bundle.add_x509_authority(root.authority());
        Fixture {
            key,
            bundles: [bundle].into_iter().collect(),
            root,
        }
    })
}

/// A header drawn from the values that matter, plus noise.
fn header() -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        proptest::sample::select(vec![
            "ES256", "ES384", "ES512", "RS256", "PS256", "none", "HS256", "EdDSA"
        ])
        .prop_map(Value::from),
        "\\PC{0,6}".prop_map(Value::from),
        Just(Value::Null),
        any::<i32>().prop_map(Value::from),
    ];
    let typ = prop_oneof![
        proptest::sample::select(vec!["JWT", "JOSE", "jwt"]).prop_map(Value::from),
        Just(Value::Null),
    ];
    let kid = prop_oneof![
        Just(json!("k1")),
        "\\PC{0,4}".prop_map(Value::from),
        Just(Value::Null)
    ];
    (alg, typ, kid, proptest::option::of("[a-z]{1,4}")).prop_map(|(alg, typ, kid, extra)| {
        let mut header = serde_json::Map::new();
        for (name, value) in [("alg", alg), ("typ", typ), ("kid", kid)] {
            if !value.is_null() {
                header.insert(name.to_owned(), value);
            }
        }
        if let Some(extra) = extra {
            header.insert(extra, json!(1));
        }
        Value::Object(header)
    })
}

fn claim_set() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,10}".prop_map(Value::from),
        proptest::collection::vec("\\PC{0,6}".prop_map(Value::from), 0..3).prop_map(Value::from),
    ];
    (
        value.clone(),
        value.clone(),
        value.clone(),
        value,
        any::<bool>(),
    )
        .prop_map(|(sub, aud, exp, nbf, good_base)| {
            let mut c = if good_base {
                claims("spiffe://example.org/w", "aud")
            } else {
                json!({})
            };
            for (name, v) in [("sub", sub), ("aud", aud), ("exp", exp), ("nbf", nbf)] {
                if !v.is_null() {
                    c[name] = v;
                }
            }
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn jwt_verification_never_panics_on_arbitrary_strings(token in "\\PC{0,200}") {
        let _ = verify_jwt_svid(&token, "aud", &fixture().bundles, t0());
    }

    #[test]
    fn jwt_verification_never_panics_on_arbitrary_parts(
        parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..6)
    ) {
        let token: Vec<String> = parts.iter().map(|p| URL_SAFE_NO_PAD.encode(p)).collect();
        let _ = verify_jwt_svid(&token.join("."), "aud", &fixture().bundles, t0());
    }

    #[test]
    fn jwt_verification_never_panics_on_signed_odd_tokens(header in header(), claims in claim_set()) {
        let token = hand_token(&fixture().key, "ES256", &header, &claims);
        let _ = verify_jwt_svid(&token, "aud", &fixture().bundles, t0());
    }

    #[test]
    fn x509_verification_never_panics_on_arbitrary_chains(
        chain in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 0..4),
        cut in any::<usize>(),
    ) {
        let _ = verify_x509_svid(&chain, &fixture().bundles, t0());
        // A real leaf, truncated anywhere, followed by the noise.
        let leaf = fixture().root.leaf("spiffe://example.org/w");
        let mut with_leaf = vec![leaf[..cut % leaf.len()].to_vec()];
        with_leaf.extend(chain);
        let _ = verify_x509_svid(&with_leaf, &fixture().bundles, t0());
    }
}
