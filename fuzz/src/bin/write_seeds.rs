//! Writes the seed corpora (`corpus/<target>/`, a few valid inputs per target) and the x509pop
//! root the node-message target trusts (`fixtures/x509pop-root.der`).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --features write-seeds --bin write-seeds
//! ```
//!
//! Keys are generated afresh and thrown away, so each run writes different certificates and
//! signatures; the committed seeds come from one run. Only files named here are (re)written.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lanyard_core::{Bundle, BundleSet, JwtAuthority, TrustDomain, X509Authority};
use lanyard_proto::{admin, node};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _, SanType, SignatureAlgorithm, date_time_ymd,
};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let x509pop = X509Pop::new();
    fs::write(root.join("fixtures/x509pop-root.der"), &x509pop.root_der).expect("write root");

    spiffe_id(&corpus(root, "spiffe_id"));
    selector(&corpus(root, "selector"));
    bundle_json(&corpus(root, "bundle_json"));
    jwt_verify(&corpus(root, "jwt_verify"));
    csr(&corpus(root, "csr"));
    hpack_authority(&corpus(root, "hpack_authority"));
    node_messages(&corpus(root, "node_messages"), &x509pop);
    admin_messages(&corpus(root, "admin_messages"));
}

fn corpus(root: &Path, target: &str) -> PathBuf {
    let dir = root.join("corpus").join(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    dir
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn prefixed(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(bytes);
    out
}

// === per target ===

fn spiffe_id(dir: &Path) {
    for (name, text) in [
        ("workload-id", "spiffe://example.org/ns/prod/sa/web"),
        ("trust-domain-id", "spiffe://example.org"),
        ("trust-domain", "example.org"),
        ("all-allowed-chars", "spiffe://a-b_c.d0/x.y/Z_-9"),
        ("path", "/ns/web"),
        ("segment", "segment"),
        ("dot-segment", "spiffe://example.org/a/../b"),
        ("uppercase-scheme", "SPIFFE://example.org/x"),
        ("userinfo-port", "spiffe://user@example.org:80/x"),
        ("percent", "spiffe://example.org/%41"),
    ] {
        write(dir, name, text);
    }
}

fn selector(dir: &Path) {
    for (name, text) in [
        (
            "unix",
            "unix:uid:1000\nunix:gid:1000\nsystemd:unit:web.service",
        ),
        ("k8s", "k8s:ns:default"),
        (
            "x509pop",
            "x509pop:san:datacenter:us-east-1\nunix:user:root",
        ),
        ("invalid", "nocolon\n:empty\ntype:\nType:x"),
        ("unicode", "unix:path:/usr/bin/\u{fc}n\u{ef}code"),
    ] {
        write(dir, name, text);
    }
}

fn bundle_json(dir: &Path) {
    let td = |name: &str| TrustDomain::new(name).expect("trust domain");
    let example = lanyard_fuzz::ca().bundle();
    write(dir, "ca-bundle", example.to_json());
    write(dir, "ca-jwks", example.jwks_json());

    let mut other = Bundle::new(td("other.org"));
    for alg in [
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_RSA_SHA256,
    ] {
        let key = KeyPair::generate_for(alg).expect("key");
        let cert = ca_params("Other Root")
            .self_signed(&key)
            .expect("self-signed root");
        other.add_x509_authority(X509Authority::from_der(cert.der().to_vec()).expect("root"));
    }
    let rsa = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
    other.add_jwt_authority(
        JwtAuthority::new("rsa-1", rsa.subject_public_key_info()).expect("RSA JWT key"),
    );
    other.set_sequence(7);
    other.set_refresh_hint(Some(std::time::Duration::from_secs(300)));
    write(dir, "other-bundle", other.to_json());

    let map: BundleSet = [example, other].into_iter().collect();
    write(dir, "bundle-map", map.to_bundle_map_json());
    write(dir, "empty-bundle", r#"{"keys":[]}"#);
    write(dir, "empty-map", r#"{"trust_domains":{}}"#);
    write(
        dir,
        "ignored-keys",
        r#"{"keys":[{"kty":"oct","use":"jwt-svid","k":"AA"},{"kty":"EC","use":"x509-svid"},{"kty":"EC","crv":"P-256"}],"spiffe_sequence":1}"#,
    );
}

fn jwt_verify(dir: &Path) {
    let exp = lanyard_fuzz::NOW_SECS + 300;
    let claims = format!(r#"{{"sub":"spiffe://example.org/web","aud":["svc"],"exp":{exp}}}"#);
    // Raw: a well-formed token whose signature is wrong for every key.
    let raw = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(&claims),
        URL_SAFE_NO_PAD.encode([7u8; 64]),
    );
    write(dir, "raw-bad-signature", prefixed(0, raw.as_bytes()));
    write(
        dir,
        "raw-alg-none",
        prefixed(
            0,
            b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy93ZWIifQ.",
        ),
    );

    // Mutate: [1, seed, op] + operand. op % 5 is the operation, op / 5 % 3 the segment.
    for seed in 0..6u8 {
        // No edits: the start-up token as signed, which must verify.
        write(dir, &format!("mutate-{seed}-unchanged"), [1, seed, 2]);
        write(
            dir,
            &format!("mutate-{seed}-edit"),
            [1, seed, 2, 0, 5, b'A'],
        );
    }
    write(
        dir,
        "mutate-0-header-none",
        [&[1, 0, 0][..], br#"{"alg":"none","kid":"k1"}"#].concat(),
    );
    write(
        dir,
        "mutate-0-header-hs256",
        [&[1, 0, 0][..], br#"{"alg":"HS256","kid":"k1"}"#].concat(),
    );
    write(
        dir,
        "mutate-1-claims",
        [
            &[1, 1, 5][..],
            format!(r#"{{"sub":"spiffe://example.org/admin","aud":"svc","exp":{exp}}}"#).as_bytes(),
        ]
        .concat(),
    );
    write(dir, "mutate-2-empty-signature", [1, 2, 11]);
    write(dir, "mutate-splice", [1, 0, 4, 1, 0, 0]);
    write(dir, "mutate-cut", [&[1, 3, 3, 0, 40][..], b"..x"].concat());

    // Sign: [2, signer, header template] + claims (template 7: header, newline, claims).
    let full = format!(
        r#"{{"sub":"spiffe://example.org/web","aud":["svc","x"],"exp":{exp},"nbf":{},"iat":{},"jti":"j1","txn":{{"id":"t"}}}}"#,
        lanyard_fuzz::NOW_SECS - 5,
        lanyard_fuzz::NOW_SECS - 5,
    );
    for (signer, template) in [
        (0u8, 0u8),
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 0),
        (5, 0),
        (0, 1),
        (2, 4),
        (0, 5),
        (2, 6),
    ] {
        write(
            dir,
            &format!("sign-{signer}-{template}"),
            [&[2, signer, template][..], full.as_bytes()].concat(),
        );
    }
    write(
        dir,
        "sign-other-td",
        [
            &[2, 4, 1][..],
            format!(r#"{{"sub":"spiffe://other.org/web","aud":"svc","exp":{exp}}}"#).as_bytes(),
        ]
        .concat(),
    );
    write(
        dir,
        "sign-expired",
        [
            &[2, 0, 0][..],
            format!(
                r#"{{"sub":"spiffe://example.org/web","aud":"svc","exp":{}}}"#,
                lanyard_fuzz::NOW_SECS - 60
            )
            .as_bytes(),
        ]
        .concat(),
    );
    write(
        dir,
        "sign-raw-header",
        [
            &[2, 0, 7][..],
            br#"{"alg":"ES256","kid":"k1","x5u":"https://a"}"#,
            b"\n",
            claims.as_bytes(),
        ]
        .concat(),
    );
}

fn csr(dir: &Path) {
    for (name, alg) in [
        ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("ed25519", &rcgen::PKCS_ED25519),
        ("rsa2048", &rcgen::PKCS_RSA_SHA256),
    ] {
        let key = KeyPair::generate_for(alg).expect("key");
        write(dir, &format!("csr-{name}"), csr_der(&key, false));
        write(dir, &format!("spki-{name}"), key.subject_public_key_info());
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    write(dir, "csr-p256-with-sans", csr_der(&key, true));
}

fn hpack_authority(dir: &Path) {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let settings = frame(0x4, 0, 0, &[0, 2, 0, 0, 0, 0]);
    let window = frame(0x8, 0, 0, &[0, 0, 0x10, 0]);
    let data = |stream| frame(0x0, 0x1, stream, &[0, 0, 0, 0, 2, 0x0a, 0x00]);
    let request = |authority: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"workload.spiffe.io", b"true"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
    };
    let encode = |encoder: &mut loona_hpack::Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]| {
        encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    };

    // grpcio: the socket path as `:authority`, twice on one connection (the second block leans on
    // the dynamic table the first filled).
    let mut encoder = loona_hpack::Encoder::new();
    let first = encode(&mut encoder, &request(b"tmp%2Fapi.sock"));
    let second = encode(&mut encoder, &request(b"tmp%2Fapi.sock"));
    let grpcio = [
        PREFACE,
        &settings,
        &window,
        &frame(0x1, 0x4, 1, &first),
        &data(1),
        &frame(0x1, 0x4, 3, &second),
        &data(3),
    ]
    .concat();
    write(dir, "grpcio-whole", prefixed(0, &grpcio));
    write(dir, "grpcio-chunked", prefixed(7, &grpcio));

    let mut encoder = loona_hpack::Encoder::new();
    let go = encode(&mut encoder, &request(b"localhost"));
    let go = [PREFACE, &settings, &frame(0x1, 0x4, 1, &go), &data(1)].concat();
    write(dir, "localhost-pass-through", prefixed(3, &go));

    // Padding, priority and a CONTINUATION, then a dynamic table size update.
    let mut encoder = loona_hpack::Encoder::new();
    let block = encode(&mut encoder, &request(b"/run/agent.sock"));
    let (head, tail) = block.split_at(block.len() / 2);
    let mut payload = vec![3u8];
    payload.extend_from_slice(&[0x80, 0, 0, 0, 15]);
    payload.extend_from_slice(head);
    payload.extend_from_slice(&[0, 0, 0]);
    let resized = [
        &[0x3f, 0xe1, 0x1f][..],
        &encode(&mut encoder, &request(b"a b")),
    ]
    .concat();
    let padded = [
        PREFACE,
        &settings,
        &frame(0x1, 0x8 | 0x20, 1, &payload),
        &frame(0x9, 0x4, 1, tail),
        &frame(0x1, 0x5, 3, &resized),
    ]
    .concat();
    write(dir, "padded-priority-continuation", prefixed(0, &padded));

    // RFC 7541 C.4.1: Huffman-coded strings.
    let huffman = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    let huffman = [PREFACE, &frame(0x1, 0x4, 1, &huffman)].concat();
    write(dir, "rfc7541-huffman", prefixed(0, &huffman));
    write(
        dir,
        "not-http2",
        prefixed(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    );
}

fn node_messages(dir: &Path, x509pop: &X509Pop) {
    let csr = csr_der(
        &KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key"),
        false,
    );
    let attest = |attestor: &str, payload: Vec<u8>| -> Vec<u8> {
        let first = node::AttestAgentRequest {
            step: Some(node::attest_agent_request::Step::Params(
                node::AttestationParams {
                    attestor: attestor.into(),
                    payload,
                    csr: csr.clone(),
                },
            )),
        };
        let answer = node::AttestAgentRequest {
            step: Some(node::attest_agent_request::Step::ChallengeResponse(vec![
                0x30;
                72
            ])),
        };
        [
            vec![0],
            first.encode_length_delimited_to_vec(),
            answer.encode_length_delimited_to_vec(),
        ]
        .concat()
    };
    write(
        dir,
        "attest-x509pop-p256-intermediate",
        attest("x509pop", x509pop.chains[0].concat()),
    );
    write(
        dir,
        "attest-x509pop-ed25519",
        attest("x509pop", x509pop.chains[1].concat()),
    );
    write(
        dir,
        "attest-x509pop-rsa",
        attest("x509pop", x509pop.chains[2].concat()),
    );
    write(
        dir,
        "attest-join-token",
        attest("join_token", b"1b2c3d4e5f-token_.~".to_vec()),
    );

    let renew = node::RenewAgentRequest { csr: csr.clone() };
    write(dir, "renew", prefixed(1, &renew.encode_to_vec()));
    let sync = node::SyncEntriesRequest { since_revision: 42 };
    write(dir, "sync", prefixed(2, &sync.encode_to_vec()));
    let p384 = csr_der(
        &KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key"),
        true,
    );
    let batch = node::BatchNewX509SvidRequest {
        params: vec![
            node::X509SvidParams {
                entry_id: "0123456789abcdef".into(),
                csr: csr.clone(),
            },
            node::X509SvidParams {
                entry_id: "bad id!".into(),
                csr: p384,
            },
        ],
    };
    write(dir, "batch-x509", prefixed(3, &batch.encode_to_vec()));
    let jwt = node::NewJwtSvidRequest {
        entry_id: "e1".into(),
        audience: vec!["svc".into(), "https://tool.example/\u{e9}\"\\".into()],
    };
    write(dir, "new-jwt", prefixed(4, &jwt.encode_to_vec()));
}

fn admin_messages(dir: &Path) {
    let entry = admin::Entry {
        id: String::new(),
        spiffe_id: "spiffe://example.org/web".into(),
        parent_id: "spiffe://example.org/lanyard/agent/join_token/abc".into(),
        selectors: vec!["unix:uid:1000".into(), "systemd:unit:web.service".into()],
        x509_svid_ttl_seconds: 7200,
        jwt_svid_ttl_seconds: 0,
        dns_names: vec!["web.example.org".into(), "*.svc.example.org".into()],
        federates_with: vec!["other.org".into(), "spiffe://third.org".into()],
        admin: true,
        downstream: false,
        hint: "web frontend".into(),
        expires_at: 1_900_000_000,
        revision: 3,
    };
    let minimal = admin::Entry {
        spiffe_id: "spiffe://example.org/db".into(),
        parent_id: "spiffe://example.org/lanyard/server".into(),
        selectors: vec!["unix:user:postgres".into()],
        ..Default::default()
    };
    let create = admin::BatchCreateEntriesRequest {
        entries: vec![entry.clone(), minimal],
    };
    write(dir, "create-entries", prefixed(0, &create.encode_to_vec()));
    let update = admin::UpdateEntryRequest {
        entry: Some(admin::Entry {
            id: "0123456789abcdef0123456789abcdef".into(),
            ..entry
        }),
    };
    write(dir, "update-entry", prefixed(1, &update.encode_to_vec()));
    let get = admin::GetEntryRequest { id: "e-1_x".into() };
    write(dir, "get-entry", prefixed(2, &get.encode_to_vec()));
    let list = admin::ListEntriesRequest {
        by_spiffe_id: "spiffe://example.org/web".into(),
        by_parent_id: "spiffe://example.org/lanyard/server".into(),
        by_selectors: vec!["unix:uid:1000".into()],
        selector_match: 1,
        page_size: 10,
        page_token: "abc".into(),
    };
    write(dir, "list-entries", prefixed(3, &list.encode_to_vec()));
    let delete = admin::BatchDeleteEntriesRequest {
        ids: vec!["a".into(), "b c".into()],
    };
    write(dir, "delete-entries", prefixed(4, &delete.encode_to_vec()));
    let token = admin::GenerateJoinTokenRequest {
        ttl_seconds: 600,
        spiffe_id: "spiffe://example.org/lanyard/agent/node-1".into(),
    };
    write(dir, "join-token", prefixed(5, &token.encode_to_vec()));
    let agent = admin::GetAgentRequest {
        spiffe_id: "spiffe://example.org/lanyard/agent/x509pop/ab12".into(),
    };
    write(dir, "get-agent", prefixed(6, &agent.encode_to_vec()));
    let federated = admin::SetFederatedBundleRequest {
        trust_domain: "spiffe://other.org".into(),
        spiffe_json: lanyard_fuzz::ca().bundle().to_json(),
    };
    write(
        dir,
        "set-federated-bundle",
        prefixed(7, &federated.encode_to_vec()),
    );
    let delete = admin::DeleteFederatedBundleRequest {
        trust_domain: "other.org".into(),
    };
    write(
        dir,
        "delete-federated-bundle",
        prefixed(8, &delete.encode_to_vec()),
    );
    let x509 = admin::MintX509SvidRequest {
        spiffe_id: "spiffe://example.org/web".into(),
        ttl_seconds: 3600,
        dns_names: vec!["web.example.org".into(), "*.svc.example.org".into()],
    };
    write(dir, "mint-x509", prefixed(9, &x509.encode_to_vec()));
    let jwt = admin::MintJwtSvidRequest {
        spiffe_id: "spiffe://example.org/web".into(),
        audience: vec!["svc".into(), "other".into()],
        ttl_seconds: 300,
    };
    write(dir, "mint-jwt", prefixed(10, &jwt.encode_to_vec()));
}

// === certificates ===

/// An x509pop root and chains under it: P-256 through an intermediate, Ed25519 and RSA direct.
struct X509Pop {
    root_der: Vec<u8>,
    chains: Vec<Vec<Vec<u8>>>,
}

impl X509Pop {
    fn new() -> Self {
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let root_params = ca_params("Node Root");
        let root = root_params.self_signed(&root_key).expect("root");
        let root_issuer = Issuer::from_params(&root_params, &root_key);

        let mid_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mid_params = ca_params("Node Intermediate");
        let mid = mid_params
            .signed_by(&mid_key, &root_issuer)
            .expect("intermediate");
        let mid_issuer = Issuer::from_params(&mid_params, &mid_key);

        let leaf = |alg: &'static SignatureAlgorithm, issuer: &Issuer<'_, &KeyPair>| {
            let key = KeyPair::generate_for(alg).expect("key");
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.distinguished_name = dn("node-1.example.org");
            params.not_before = date_time_ymd(2026, 1, 1);
            params.not_after = date_time_ymd(2036, 1, 1);
            params.subject_alt_names = vec![SanType::URI(
                "x509pop://example.org/datacenter/us-east-1"
                    .try_into()
                    .expect("URI"),
            )];
            params.signed_by(&key, issuer).expect("leaf").der().to_vec()
        };
        let chains = vec![
            vec![
                leaf(&rcgen::PKCS_ECDSA_P256_SHA256, &mid_issuer),
                mid.der().to_vec(),
            ],
            vec![leaf(&rcgen::PKCS_ED25519, &root_issuer)],
            vec![leaf(&rcgen::PKCS_RSA_SHA256, &root_issuer)],
        ];
        Self {
            root_der: root.der().to_vec(),
            chains,
        }
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name = dn(name);
    params.not_before = date_time_ymd(2026, 1, 1);
    params.not_after = date_time_ymd(2036, 1, 1);
    params
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn csr_der(key: &KeyPair, with_sans: bool) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("ignored");
    if with_sans {
        params.subject_alt_names = vec![
            SanType::URI("spiffe://evil.org/admin".try_into().expect("URI")),
            SanType::DnsName("evil.org".try_into().expect("DNS name")),
        ];
    }
    params.serialize_request(key).expect("CSR").der().to_vec()
}

fn frame(frame_type: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        frame_type,
        flags,
    ];
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}
