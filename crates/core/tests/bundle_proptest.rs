//! Property tests: the bundle parsers never panic, whatever the input, and what lanyard writes it
//! reads back unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod bundle_fixtures;

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bundle_fixtures::{Ca, JwtKey, KeyKind, td};
use lanyard_core::{Bundle, BundleSet, JwtAuthority, X509Authority};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Real authorities to build bundles from: made once, they are slow to generate.
struct Pool {
    roots: Vec<Vec<u8>>,
    jwt_keys: Vec<Vec<u8>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        roots: (0..4).map(|_| Ca::root("example.org").der).collect(),
        jwt_keys: [
            KeyKind::P256,
            KeyKind::P256,
            KeyKind::P384,
            KeyKind::P521,
            KeyKind::Rsa2048,
        ]
        .into_iter()
        .map(|kind| JwtKey::generate(kind, "unused").spki)
        .collect(),
    })
}

fn trust_domain_name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,20}"
}

prop_compose! {
    fn bundle()(
        name in trust_domain_name(),
        roots in proptest::sample::subsequence((0..4).collect::<Vec<_>>(), 0..=4),
        keys in proptest::sample::subsequence((0..5).collect::<Vec<_>>(), 0..=5),
        kids in proptest::collection::vec("\\PC{1,12}", 5),
        sequence in any::<u64>(),
        hint in proptest::option::of(any::<u64>()),
    ) -> Bundle {
        let pool = pool();
        let mut bundle = Bundle::new(td(&name));
        for i in roots {
            bundle.add_x509_authority(X509Authority::from_der(pool.roots[i].clone()).unwrap());
        }
        for i in keys {
            // A kid unique within the bundle: the index makes it so.
            let kid = format!("{i}-{}", kids[i]);
            bundle.add_jwt_authority(JwtAuthority::new(kid, pool.jwt_keys[i].clone()).unwrap());
        }
        bundle.set_sequence(sequence);
        bundle.set_refresh_hint(hint.map(Duration::from_secs));
        bundle
    }
}

/// JSON that looks enough like a bundle to reach the key parsers: known and unknown values for
/// every member, well- and ill-formed base64, real and broken certificates.
fn jwk() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    let word = |known: &'static [&'static str]| {
        prop_oneof![
            proptest::sample::select(known).prop_map(Value::from),
            "\\PC{0,6}".prop_map(Value::from),
            Just(Value::Null),
            Just(json!(1)),
        ]
    };
    let b64url = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80)
            .prop_map(|b| Value::from(URL_SAFE_NO_PAD.encode(b))),
        proptest::sample::select(vec![32usize, 48, 66, 128, 256])
            .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n))
            .prop_map(|b| Value::from(URL_SAFE_NO_PAD.encode(b))),
        "\\PC{0,10}".prop_map(Value::from),
        Just(Value::Null),
    ];
    let cert = prop_oneof![
        (0..4usize, any::<bool>(), any::<usize>()).prop_map(|(i, truncate, at)| {
            let der = &pool().roots[i];
            let der = if truncate {
                &der[..at % der.len()]
            } else {
                &der[..]
            };
            Value::from(STANDARD.encode(der))
        }),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Value::from(STANDARD.encode(b))),
        text.clone(),
    ];
    let x5c = prop_oneof![
        Just(Value::Null),
        proptest::collection::vec(cert, 0..3).prop_map(Value::from),
        text.clone(),
    ];
    (
        word(&["x509-svid", "jwt-svid", "sig", "wit-svid"]),
        word(&["EC", "RSA", "OKP", "oct"]),
        word(&["P-256", "P-384", "P-521", "Ed25519"]),
        (b64url.clone(), b64url.clone(), b64url.clone(), b64url),
        text,
        x5c,
    )
        .prop_map(|(key_use, kty, crv, (x, y, n, e), kid, x5c)| {
            let mut jwk = serde_json::Map::new();
            for (name, value) in [
                ("use", key_use),
                ("kty", kty),
                ("crv", crv),
                ("x", x),
                ("y", y),
                ("n", n),
                ("e", e),
                ("kid", kid),
                ("x5c", x5c),
            ] {
                if !value.is_null() {
                    jwk.insert(name.to_owned(), value);
                }
            }
            Value::Object(jwk)
        })
}

fn bundle_like() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(jwk(), 0..4),
        prop_oneof![Just(Value::Null), any::<u64>().prop_map(Value::from), any::<f64>().prop_map(|f| json!(f))],
        prop_oneof![Just(Value::Null), any::<i64>().prop_map(Value::from)],
    )
        .prop_map(|(keys, sequence, hint)| {
            json!({"keys": keys, "spiffe_sequence": sequence, "spiffe_refresh_hint": hint})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Bundle::parse_json(td("example.org"), &bytes);
        let _ = Bundle::parse_jwks(td("example.org"), &bytes);
        let _ = BundleSet::parse_bundle_map(&bytes);
        let _ = X509Authority::parse_concatenated_der(&bytes);
        let _ = X509Authority::from_der(bytes.clone());
        let _ = JwtAuthority::new("k", bytes);
    }

    #[test]
    fn parsers_never_panic_on_bundle_like_json(doc in bundle_like()) {
        let bytes = doc.to_string().into_bytes();
        if let Ok(bundle) = Bundle::parse_json(td("example.org"), &bytes) {
            // Whatever was accepted writes back to something that reads the same.
            let again = Bundle::parse_json(td("example.org"), bundle.to_json().as_bytes()).unwrap();
            prop_assert_eq!(again, bundle);
        }
        let _ = Bundle::parse_jwks(td("example.org"), &bytes);
        let map = json!({"trust_domains": {"example.org": doc}}).to_string();
        let _ = BundleSet::parse_bundle_map(map.as_bytes());
    }

    #[test]
    fn to_json_round_trips(bundle in bundle()) {
        let parsed = Bundle::parse_json(bundle.trust_domain().clone(), bundle.to_json().as_bytes()).unwrap();
        prop_assert_eq!(&parsed, &bundle);
        let jwks = Bundle::parse_jwks(bundle.trust_domain().clone(), bundle.jwks_json().as_bytes()).unwrap();
        prop_assert_eq!(jwks.jwt_authorities(), bundle.jwt_authorities());
        let der = X509Authority::parse_concatenated_der(&bundle.x509_authorities_der()).unwrap();
        prop_assert_eq!(der.as_slice(), bundle.x509_authorities());
    }

    #[test]
    fn bundle_map_round_trips(bundles in proptest::collection::vec(bundle(), 0..4)) {
        let set: BundleSet = bundles
            .into_iter()
            .map(|mut b| {
                b.set_refresh_hint(None);
                b
            })
            .collect();
        let parsed = BundleSet::parse_bundle_map(set.to_bundle_map_json().as_bytes()).unwrap();
        prop_assert_eq!(parsed, set);
    }
}
