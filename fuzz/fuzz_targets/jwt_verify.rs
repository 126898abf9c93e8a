//! JWT-SVID verification (`lanyard_core::verify_jwt_svid`, crates/core/src/jwt.rs) against fixed
//! bundles: `example.org` holds `k1` (P-256), `k2` (P-384) and `k3` (RSA-2048); `other.org`
//! holds its own P-256 key, also named `k1`. A further P-256 key is in no bundle.
//!
//! The first input byte picks a mode:
//! - 0, raw: the rest is the token;
//! - 1, mutate: a token signed at start-up (one per key and algorithm) is altered: a segment
//!   replaced by the fuzzer's bytes (base64url-encoded, or raw), bytes overwritten, the token cut
//!   and extended, or segments of different signed tokens spliced together;
//! - 2, sign: the fuzzer's claims (and optionally header) are signed by a key the fuzzer picks,
//!   including keys that do not match the header or are in no bundle.
//!
//! Properties:
//! - verification never panics;
//! - raw and mutated tokens verify only if their signed part (`header.claims`) is byte for byte
//!   one that a bundle key signed at start-up, and then with that token's claims, `sub` and `kid`:
//!   no token is accepted for a message its key did not sign;
//! - a token the fuzzer had signed verifies only if the signing key is in the bundle of `sub`'s
//!   trust domain under the reported `kid`, the header's `alg` is the algorithm the key signed
//!   with, and the claims pass: `aud` contains the audience, `exp` and `nbf` hold at the fixed
//!   time (with the leeway).

#![no_main]

use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lanyard_core::jwt::JWT_LEEWAY;
use lanyard_core::{
    Bundle, BundleSet, JwtAlgorithm, JwtAuthority, TrustDomain, VerifiedJwtSvid, verify_jwt_svid,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const AUDIENCE: &str = "svc";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signer {
    K1,
    K2,
    K3Pkcs1,
    K3Pss,
    Other,
    Outsider,
}

const SIGNERS: [Signer; 6] = [
    Signer::K1,
    Signer::K2,
    Signer::K3Pkcs1,
    Signer::K3Pss,
    Signer::Other,
    Signer::Outsider,
];

struct Keys {
    k1: EcdsaKeyPair,
    k2: EcdsaKeyPair,
    k3: RsaKeyPair,
    other: EcdsaKeyPair,
    outsider: EcdsaKeyPair,
    bundles: BundleSet,
}

/// A token signed at start-up, and what verifying it must give.
struct Seed {
    token: String,
    claims: Map<String, Value>,
    signer: Signer,
}

struct Fixture {
    keys: Keys,
    seeds: Vec<Seed>,
}

const HEADERS: [&str; 7] = [
    r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#,
    r#"{"alg":"ES256"}"#,
    r#"{"alg":"ES384","kid":"k2"}"#,
    r#"{"alg":"RS256","kid":"k3"}"#,
    r#"{"alg":"PS256","kid":"k3"}"#,
    r#"{"alg":"ES256","kid":"k2"}"#,
    r#"{"alg":"RS256"}"#,
];

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(token) = std::str::from_utf8(rest) {
                check_unsigned(fixture, token);
            }
        }
        1 => {
            if let Some(token) = mutate(fixture, rest) {
                check_unsigned(fixture, &token);
            }
        }
        _ => sign_and_check(fixture, rest),
    }
});

/// A token the harness did not sign in this execution.
fn check_unsigned(fixture: &Fixture, token: &str) {
    let Ok(verified) = verify(&fixture.keys, token) else {
        return;
    };
    let signed = signing_input(token);
    let seed = fixture
        .seeds
        .iter()
        .find(|s| signing_input(&s.token) == signed)
        .unwrap_or_else(|| panic!("accepted a message no key signed: {token}"));
    assert_eq!(verified.claims(), &seed.claims, "{token}");
    let (td, kid) = home(seed.signer).expect("seeds are signed by bundle keys");
    assert_eq!(verified.spiffe_id().trust_domain_name(), td);
    assert_eq!(verified.key_id(), kid);
}

fn sign_and_check(fixture: &Fixture, data: &[u8]) {
    let [signer, template, rest @ ..] = data else {
        return;
    };
    let signer = SIGNERS[usize::from(*signer) % SIGNERS.len()];
    let (header, claims) = match HEADERS.get(usize::from(*template) % (HEADERS.len() + 1)) {
        Some(header) => (header.as_bytes(), rest),
        None => match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        },
    };
    let token = sign(&fixture.keys, signer, header, claims);
    let Ok(verified) = verify(&fixture.keys, &token) else {
        return;
    };
    let (td, kid) = home(signer).unwrap_or_else(|| panic!("a key in no bundle verified: {token}"));
    assert_eq!(verified.spiffe_id().trust_domain_name(), td, "{token}");
    assert_eq!(verified.key_id(), kid, "{token}");
    assert_eq!(verified.algorithm(), algorithm(signer), "{token}");
    assert!(verified.audience().iter().any(|a| a == AUDIENCE));
    let now = lanyard_fuzz::now();
    assert!(
        now < verified.expiry() + JWT_LEEWAY,
        "expired token accepted: {token}"
    );
    assert_eq!(
        verified.claims().get("sub").and_then(Value::as_str),
        Some(verified.spiffe_id().as_str())
    );
    if let Some(nbf) = verified.claims().get("nbf") {
        let nbf = nbf.as_f64().expect("an accepted nbf is a number");
        let latest = (now + JWT_LEEWAY)
            .duration_since(UNIX_EPOCH)
            .expect("after 1970");
        assert!(
            nbf <= latest.as_secs_f64(),
            "token not yet valid accepted: {token}"
        );
    }
}

/// Alters a start-up token as the input says; `None` if the result is not UTF-8.
fn mutate(fixture: &Fixture, data: &[u8]) -> Option<String> {
    let [pick, op, rest @ ..] = data else {
        return None;
    };
    let seeds = &fixture.seeds;
    let token = &seeds[usize::from(*pick) % seeds.len()].token;
    let parts: Vec<&str> = token.split('.').collect();
    let segment = usize::from(op / 5) % 3;
    match op % 5 {
        0 => {
            let mut parts: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
            parts[segment] = URL_SAFE_NO_PAD.encode(rest);
            Some(parts.join("."))
        }
        1 => {
            let mut parts = parts;
            parts[segment] = std::str::from_utf8(rest).ok()?;
            Some(parts.join("."))
        }
        2 => {
            let mut bytes = token.clone().into_bytes();
            for edit in rest.chunks_exact(3) {
                let pos = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % bytes.len();
                bytes[pos] = edit[2];
            }
            String::from_utf8(bytes).ok()
        }
        3 => {
            let (cut, tail) = rest.split_first_chunk::<2>()?;
            let cut = usize::from(u16::from_be_bytes(*cut)) % (token.len() + 1);
            Some(format!(
                "{}{}",
                &token[..cut],
                std::str::from_utf8(tail).ok()?
            ))
        }
        _ => {
            // Header, claims and signature, each from a token the input picks.
            let part = |i: usize, which: usize| -> String {
                let pick = usize::from(rest.get(i).copied().unwrap_or(0)) % seeds.len();
                seeds[pick]
                    .token
                    .split('.')
                    .nth(which)
                    .unwrap_or("")
                    .to_owned()
            };
            Some(format!("{}.{}.{}", part(0, 0), part(1, 1), part(2, 2)))
        }
    }
}

fn verify(keys: &Keys, token: &str) -> Result<VerifiedJwtSvid, lanyard_core::JwtSvidError> {
    verify_jwt_svid(token, AUDIENCE, &keys.bundles, lanyard_fuzz::now())
}

/// `header.claims`, the part a JWS signature covers.
fn signing_input(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(signed, _)| signed)
}

/// Where a signer's public key is published: trust domain and `kid`.
fn home(signer: Signer) -> Option<(&'static str, &'static str)> {
    match signer {
        Signer::K1 => Some(("example.org", "k1")),
        Signer::K2 => Some(("example.org", "k2")),
        Signer::K3Pkcs1 | Signer::K3Pss => Some(("example.org", "k3")),
        Signer::Other => Some(("other.org", "k1")),
        Signer::Outsider => None,
    }
}

/// The algorithm a signer's signatures are made with.
fn algorithm(signer: Signer) -> JwtAlgorithm {
    match signer {
        Signer::K1 | Signer::Other | Signer::Outsider => JwtAlgorithm::Es256,
        Signer::K2 => JwtAlgorithm::Es384,
        Signer::K3Pkcs1 => JwtAlgorithm::Rs256,
        Signer::K3Pss => JwtAlgorithm::Ps256,
    }
}

fn sign(keys: &Keys, signer: Signer, header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let rng = SystemRandom::new();
    let ecdsa = |key: &EcdsaKeyPair| {
        key.sign(&rng, input.as_bytes())
            .expect("ECDSA signing")
            .as_ref()
            .to_vec()
    };
    let signature = match signer {
        Signer::K1 => ecdsa(&keys.k1),
        Signer::K2 => ecdsa(&keys.k2),
        Signer::Other => ecdsa(&keys.other),
        Signer::Outsider => ecdsa(&keys.outsider),
        Signer::K3Pkcs1 | Signer::K3Pss => {
            let padding = if signer == Signer::K3Pkcs1 {
                &RSA_PKCS1_SHA256
            } else {
                &RSA_PSS_SHA256
            };
            let mut signature = vec![0; keys.k3.public_modulus_len()];
            keys.k3
                .sign(padding, &rng, input.as_bytes(), &mut signature)
                .expect("RSA signing");
            signature
        }
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ec = |alg| EcdsaKeyPair::generate(alg).expect("EC key generation");
        let k1 = ec(&ECDSA_P256_SHA256_FIXED_SIGNING);
        let k2 = ec(&ECDSA_P384_SHA384_FIXED_SIGNING);
        let other = ec(&ECDSA_P256_SHA256_FIXED_SIGNING);
        let outsider = ec(&ECDSA_P256_SHA256_FIXED_SIGNING);
        let k3 = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");

        let spki = |der: PublicKeyX509Der<'static>| der.as_ref().to_vec();
        let authority = |kid: &str, der: Vec<u8>| JwtAuthority::new(kid, der).expect("a JWT key");
        let mut example = Bundle::new(lanyard_fuzz::trust_domain());
        for (kid, der) in [
            ("k1", spki(k1.public_key().as_der().expect("SPKI"))),
            ("k2", spki(k2.public_key().as_der().expect("SPKI"))),
            ("k3", spki(k3.public_key().as_der().expect("SPKI"))),
        ] {
            assert!(example.add_jwt_authority(authority(kid, der)));
        }
        let mut other_bundle = Bundle::new(TrustDomain::new("other.org").expect("a trust domain"));
        other_bundle.add_jwt_authority(authority(
            "k1",
            spki(other.public_key().as_der().expect("SPKI")),
        ));
        let bundles: BundleSet = [example, other_bundle].into_iter().collect();
        let keys = Keys {
            k1,
            k2,
            k3,
            other,
            outsider,
            bundles,
        };

        let exp = lanyard_fuzz::NOW_SECS + 300;
        let iat = lanyard_fuzz::NOW_SECS - 10;
        let specs: [(Signer, &str, String); 6] = [
            (
                Signer::K1,
                HEADERS[0],
                format!(
                    r#"{{"sub":"spiffe://example.org/web","aud":["svc"],"exp":{exp},"iat":{iat}}}"#
                ),
            ),
            (
                Signer::K2,
                HEADERS[2],
                format!(
                    r#"{{"sub":"spiffe://example.org/db","aud":"svc","exp":{exp},"nbf":{iat}}}"#
                ),
            ),
            (
                Signer::K3Pkcs1,
                HEADERS[3],
                format!(r#"{{"sub":"spiffe://example.org/a/b","aud":["x","svc"],"exp":{exp}.5}}"#),
            ),
            (
                Signer::K3Pss,
                HEADERS[4],
                format!(
                    r#"{{"sub":"spiffe://example.org/pss","aud":["svc"],"exp":{exp},"txn":"t-1"}}"#
                ),
            ),
            (
                Signer::K1,
                HEADERS[1],
                format!(r#"{{"sub":"spiffe://example.org/nokid","aud":["svc"],"exp":{exp}}}"#),
            ),
            (
                Signer::Other,
                HEADERS[0],
                format!(r#"{{"sub":"spiffe://other.org/web","aud":["svc"],"exp":{exp}}}"#),
            ),
        ];
        let seeds = specs
            .into_iter()
            .map(|(signer, header, claims)| {
                let token = sign(&keys, signer, header.as_bytes(), claims.as_bytes());
                let verified = verify(&keys, &token)
                    .unwrap_or_else(|e| panic!("seed token refused ({e}): {claims}"));
                Seed {
                    claims: verified.claims().clone(),
                    token,
                    signer,
                }
            })
            .collect();
        Fixture { keys, seeds }
    })
}
