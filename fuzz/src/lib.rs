//! Fixtures shared by lanyard's fuzz targets (`fuzz_targets/`, described in `docs/fuzzing.md`).
//!
//! Every fixture is built once per process and then only read, so an execution costs the code
//! under test and nothing else. Time is fixed ([`now`]) so that a crash reproduces whatever the
//! date. Keys are generated per process: no private key is committed, and no target's property
//! depends on a key's value.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use lanyard_ca::{Ca, CaConfig, JwtSvidRequest, MemoryKeyManager, X509SvidRequest};
use lanyard_core::{BundleSet, Clock, DnsName, TrustDomain, verify_jwt_svid, verify_x509_svid};

/// The fuzz targets' "now": 2027-01-15, inside the validity of the x509pop seed certificates
/// (2026 to 2036) and of the CA made here.
pub const NOW_SECS: u64 = 1_800_000_000;

/// The trust domain of the CA and of most seeds.
pub const TRUST_DOMAIN: &str = "example.org";

/// The x509pop root the node-message seeds chain to (written by `write-seeds`).
pub const X509POP_ROOT_DER: &[u8] = include_bytes!("../fixtures/x509pop-root.der");

/// [`NOW_SECS`] as a time.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

/// A clock stopped at [`now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        now()
    }
}

/// `example.org`.
pub fn trust_domain() -> TrustDomain {
    TrustDomain::new(TRUST_DOMAIN).expect("a valid trust domain")
}

/// A CA for `example.org` with in-memory keys, started at [`now`].
pub fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        Ca::new(
            CaConfig::new(trust_domain()),
            Arc::new(MemoryKeyManager::new()),
            Arc::new(FixedClock),
        )
        .expect("a CA")
    })
}

/// The CA's bundle, as a verifier of its SVIDs holds it.
pub fn ca_bundles() -> &'static BundleSet {
    static BUNDLES: OnceLock<BundleSet> = OnceLock::new();
    BUNDLES.get_or_init(|| std::iter::once(ca().bundle()).collect())
}

/// A P-256 public key (DER SubjectPublicKeyInfo) to mint X509-SVIDs for, as the admin API does
/// for a key it generates.
pub fn leaf_spki() -> &'static [u8] {
    static SPKI: OnceLock<Vec<u8>> = OnceLock::new();
    SPKI.get_or_init(|| {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("a P-256 key");
        key.public_key()
            .as_der()
            .expect("an SPKI")
            .as_ref()
            .to_vec()
    })
}

/// Mints an X509-SVID for [`leaf_spki`] and, if the CA agrees to, checks that it verifies
/// against the CA's bundle and names exactly the requested ID and DNS names.
pub fn mint_and_check_x509(req: &X509SvidRequest) {
    let Ok(svid) = ca().mint_x509_svid(leaf_spki(), req) else {
        return;
    };
    let verified = verify_x509_svid(&svid.cert_chain, ca_bundles(), now())
        .unwrap_or_else(|e| panic!("a minted X509-SVID does not verify: {e}"));
    assert_eq!(verified.spiffe_id(), &req.spiffe_id);
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf_der()).expect("a leaf");
    let dns: Vec<String> = leaf
        .subject_alternative_name()
        .expect("a well-formed SAN extension")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let requested: Vec<String> = req.dns_names.iter().map(DnsName::to_string).collect();
    assert_eq!(
        dns, requested,
        "the leaf's DNS SANs differ from the request"
    );
}

/// Mints a JWT-SVID and, if the CA agrees to, checks that the token verifies for each requested
/// audience with the requested `sub` and `aud`.
pub fn mint_and_check_jwt(req: &JwtSvidRequest) {
    let Ok(svid) = ca().mint_jwt_svid(req) else {
        return;
    };
    for audience in &req.audience {
        let verified = verify_jwt_svid(&svid.token, audience, ca_bundles(), now())
            .unwrap_or_else(|e| panic!("a minted JWT-SVID does not verify for {audience:?}: {e}"));
        assert_eq!(verified.spiffe_id(), &req.spiffe_id);
        assert_eq!(verified.audience(), req.audience.as_slice());
    }
}

/// Checks that a decoded message encodes to `encoded_len` bytes that decode to an equal message.
pub fn check_protobuf_round_trip<M>(message: &M)
where
    M: prost::Message + Default + PartialEq,
{
    let bytes = message.encode_to_vec();
    assert_eq!(bytes.len(), message.encoded_len());
    let back = M::decode(bytes.as_slice()).expect("an encoded message decodes");
    assert!(
        back == *message,
        "a message changed through encode and decode"
    );
}

/// Splits `data` into successive reads: the first byte is a seed for the chunk sizes (1 to 64
/// bytes, or everything at once when it is 0), the rest is the stream. Returns the chunks and the
/// whole stream.
pub fn split_reads(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return (Vec::new(), data);
    };
    if seed == 0 {
        return (vec![stream], stream);
    }
    let mut chunks = Vec::new();
    let mut rest = stream;
    let mut state = u32::from(seed);
    while !rest.is_empty() {
        // A tiny LCG: cheap, and the same seed always gives the same cuts.
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = 1 + (state >> 16) as usize % 64;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    (chunks, stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reads_covers_the_stream_in_order() {
        for seed in 0..=255u8 {
            let mut data = vec![seed];
            data.extend(0..=200u8);
            let (chunks, stream) = split_reads(&data);
            assert_eq!(chunks.concat(), stream);
            assert_eq!(stream, &data[1..]);
            assert!(chunks.iter().all(|c| !c.is_empty()));
        }
    }
}
