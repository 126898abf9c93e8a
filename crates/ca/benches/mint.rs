//! SVIDs minted per second, each next to bare ECDSA signatures with aws-lc-rs in the same run.
//!
//! Run: `cargo bench -p lanyard-ca --bench mint -- --warm-up-time 1 --measurement-time 5`.
//! `docs/benchmarks.md` records the figures. The rcgen and jsonwebtoken rows are there to show
//! why the CA builds certificates and JWS itself.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING,
    EcdsaKeyPair, KeyPair as _, ParsedPublicKey,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lanyard_ca::{Ca, CaConfig, JwtSvidRequest, MemoryKeyManager, X509SvidRequest};
use lanyard_core::{SpiffeId, SystemClock, TrustDomain};
use rcgen::PublicKeyData as _;

struct Fixture {
    ca: Ca,
    id: SpiffeId,
    spki: Vec<u8>,
    csr: Vec<u8>,
    x509_req: X509SvidRequest,
    jwt_req: JwtSvidRequest,
    /// A message of the size of a leaf's TBSCertificate.
    message: Vec<u8>,
    rng: SystemRandom,
    asn1_key: EcdsaKeyPair,
    fixed_key: EcdsaKeyPair,
}

fn fixture() -> Fixture {
    let td = TrustDomain::new("example.org").unwrap();
    let ca = Ca::new(
        CaConfig::new(td),
        Arc::new(MemoryKeyManager::new()),
        Arc::new(SystemClock),
    )
    .unwrap();
    let id = SpiffeId::parse("spiffe://example.org/ns/prod/sa/frontend").unwrap();
    let workload = rcgen::KeyPair::generate().unwrap();
    let spki = workload.subject_public_key_info();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&workload)
        .unwrap()
        .der()
        .to_vec();
    let x509_req = X509SvidRequest::new(id.clone());
    let jwt_req = JwtSvidRequest::new(id.clone(), ["spiffe://example.org/tool"]);
    let tbs_len = ca
        .mint_x509_svid(&spki, &x509_req)
        .unwrap()
        .leaf_der()
        .len()
        - 80;
    Fixture {
        ca,
        id,
        spki,
        csr,
        x509_req,
        jwt_req,
        message: vec![0x5a; tbs_len],
        rng: SystemRandom::new(),
        asn1_key: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap(),
        fixed_key: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
    }
}

fn bench(c: &mut Criterion) {
    let Fixture {
        ca,
        id,
        spki,
        csr,
        x509_req,
        jwt_req,
        message,
        rng,
        asn1_key,
        fixed_key,
    } = fixture();

    let mut g = c.benchmark_group("mint");
    g.throughput(Throughput::Elements(1));
    g.bench_function("bare_ecdsa_p256_sign", |b| {
        b.iter(|| asn1_key.sign(&rng, black_box(&message)).unwrap());
    });
    g.bench_function("x509_svid_from_public_key", |b| {
        b.iter(|| ca.mint_x509_svid(black_box(&spki), &x509_req).unwrap());
    });
    g.bench_function("x509_svid_from_csr", |b| {
        b.iter(|| {
            ca.mint_x509_svid_from_csr(black_box(&csr), &x509_req)
                .unwrap()
        });
    });
    // What a CSR adds: parsing the requester's key and verifying its signature.
    let signature = asn1_key.sign(&rng, &message).unwrap();
    let public = asn1_key.public_key().as_ref().to_vec();
    g.bench_function("bare_ecdsa_p256_parse_key_and_verify", |b| {
        b.iter(|| {
            ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, black_box(&public))
                .unwrap()
                .verify_sig(&message, signature.as_ref())
                .unwrap();
        });
    });
    g.bench_function("bare_p256_public_key_parse", |b| {
        b.iter(|| ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, black_box(&public)).unwrap());
    });
    g.bench_function("bare_ecdsa_p256_sign_fixed", |b| {
        b.iter(|| fixed_key.sign(&rng, black_box(&message[..200])).unwrap());
    });
    g.bench_function("jwt_svid", |b| {
        b.iter(|| ca.mint_jwt_svid(black_box(&jwt_req)).unwrap());
    });

    // For comparison only: the same leaf through rcgen, and a token through jsonwebtoken.
    let rcgen = RcgenLeaf::new(&id);
    g.bench_function("rcgen_leaf_from_public_key", |b| {
        b.iter(|| rcgen.mint(black_box(&spki)))
    });
    let jwt = JsonWebToken::new(&id);
    g.bench_function("jsonwebtoken_es256", |b| {
        b.iter(|| jwt.sign());
    });
    g.finish();
}

/// rcgen doing the same work as `Ca::mint_x509_svid` (for comparison only): parse and validate
/// the key, a random serial, validity, subject, the same extensions, and the signature.
struct RcgenLeaf {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    uri: rcgen::string::Ia5String,
}

impl RcgenLeaf {
    fn new(id: &SpiffeId) -> Self {
        let mut issuer_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        issuer_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Self {
            issuer: rcgen::Issuer::new(issuer_params, rcgen::KeyPair::generate().unwrap()),
            uri: rcgen::string::Ia5String::try_from(id.as_str()).unwrap(),
        }
    }

    fn mint(&self, spki: &[u8]) -> rcgen::Certificate {
        let leaf_public = rcgen::SubjectPublicKeyInfo::from_der(spki).unwrap();
        ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &spki[spki.len() - 65..]).unwrap();
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).unwrap();
        serial[0] &= 0x7f;
        let now = time::OffsetDateTime::now_utc();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        params.not_before = now - Duration::from_secs(10);
        params.not_after = now + Duration::from_secs(3600);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "US");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "SPIFFE");
        params.subject_alt_names = vec![rcgen::SanType::URI(self.uri.clone())];
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
            rcgen::KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.signed_by(&leaf_public, &self.issuer).unwrap()
    }
}

/// jsonwebtoken signing a JWT-SVID-like token (for comparison only).
struct JsonWebToken {
    key: jsonwebtoken::EncodingKey,
    header: jsonwebtoken::Header,
    claims: serde_json::Value,
}

impl JsonWebToken {
    fn new(id: &SpiffeId) -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("0123456789abcdef0123456789abcdef".into());
        Self {
            key: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            header,
            claims: serde_json::json!({
                "sub": id.as_str(), "aud": ["spiffe://example.org/tool"],
                "exp": 4_000_000_000u64, "iat": 1_700_000_000u64,
            }),
        }
    }

    fn sign(&self) -> String {
        jsonwebtoken::encode(&self.header, black_box(&self.claims), &self.key).unwrap()
    }
}

type Op<'a> = Box<dyn FnMut() + 'a>;

/// Ratios measured in alternating rounds (500 bare signatures, then 500 SVIDs, 40 times), so a
/// machine busy with other work slows both sides alike; prints the median and the spread.
fn paired() {
    let f = fixture();
    let time = |n: u32, op: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..n {
            op();
        }
        start.elapsed()
    };
    let rcgen = RcgenLeaf::new(&f.id);
    let jwt = JsonWebToken::new(&f.id);
    let rows: [(&str, Op<'_>, Op<'_>); 5] = [
        (
            "x509_svid_from_public_key / bare_ecdsa_p256_sign",
            Box::new(|| {
                let _ = black_box(f.asn1_key.sign(&f.rng, &f.message).unwrap());
            }),
            Box::new(|| {
                let _ = black_box(f.ca.mint_x509_svid(&f.spki, &f.x509_req).unwrap());
            }),
        ),
        (
            "x509_svid_from_csr / bare_ecdsa_p256_sign",
            Box::new(|| {
                let _ = black_box(f.asn1_key.sign(&f.rng, &f.message).unwrap());
            }),
            Box::new(|| {
                let _ = black_box(f.ca.mint_x509_svid_from_csr(&f.csr, &f.x509_req).unwrap());
            }),
        ),
        (
            "jwt_svid / bare_ecdsa_p256_sign_fixed",
            Box::new(|| {
                let _ = black_box(f.fixed_key.sign(&f.rng, &f.message[..200]).unwrap());
            }),
            Box::new(|| {
                let _ = black_box(f.ca.mint_jwt_svid(&f.jwt_req).unwrap());
            }),
        ),
        (
            "rcgen_leaf_from_public_key / bare_ecdsa_p256_sign",
            Box::new(|| {
                let _ = black_box(f.asn1_key.sign(&f.rng, &f.message).unwrap());
            }),
            Box::new(|| {
                let _ = black_box(rcgen.mint(&f.spki));
            }),
        ),
        (
            "jsonwebtoken_es256 / bare_ecdsa_p256_sign_fixed",
            Box::new(|| {
                let _ = black_box(f.fixed_key.sign(&f.rng, &f.message[..200]).unwrap());
            }),
            Box::new(|| {
                let _ = black_box(jwt.sign());
            }),
        ),
    ];
    for (name, mut bare, mut svid) in rows {
        let mut ratios: Vec<f64> = (0..40)
            .map(|_| {
                let b = time(500, &mut bare);
                let s = time(500, &mut svid);
                b.as_secs_f64() / s.as_secs_f64()
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "paired {name}: median {:.2} (min {:.2}, max {:.2}, 40 rounds)",
            ratios[20], ratios[0], ratios[39]
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches, paired);
