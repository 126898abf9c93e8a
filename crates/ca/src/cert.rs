//! Certificate building: CA certificates (self-signed roots and intermediates under an upstream
//! CA) and X509-SVID leaves, written as DER directly (see `der.rs` for why).
//!
//! The profile is SPIFFE X509-SVID §4–§5 with SPIRE's choices (SPIFFE.md X509-17): leaves get
//! exactly one URI SAN, `CA:FALSE` (critical), keyUsage `digitalSignature|keyEncipherment|
//! keyAgreement` (critical), EKU serverAuth+clientAuth, a random 127-bit serial, SKI and AKI; CA
//! certificates get URI SAN `spiffe://<td>`, `CA:TRUE` (critical), keyUsage `keyCertSign|cRLSign`
//! (critical) and an SKI.

use lanyard_core::{DnsName, SpiffeId, TrustDomain};

use crate::der::{self, DerWriter};
use crate::key::PrivateKey;
use crate::{CaError, oid};

/// Something that signs certificates: the CA's own key or an upstream CA's key.
pub(crate) trait CertSigner {
    /// The DER AlgorithmIdentifier of the signatures `sign` makes.
    fn signature_algorithm_der(&self) -> &'static [u8];
    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, CaError>;
}

impl CertSigner for PrivateKey {
    fn signature_algorithm_der(&self) -> &'static [u8] {
        self.key_type().signature_algorithm_der()
    }

    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, CaError> {
        self.sign_x509(tbs)
    }
}

/// The issuer side of a certificate: its subject name and key identifier.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IssuerName<'a> {
    /// The issuer's subject Name, DER, copied byte for byte (path builders compare bytes).
    pub(crate) name_der: &'a [u8],
    /// The issuer's subject key identifier, if it has one; becomes our AKI.
    pub(crate) key_id: Option<&'a [u8]>,
}

/// What a CA certificate says.
#[derive(Debug)]
pub(crate) struct CaCertParams<'a> {
    pub(crate) trust_domain: &'a TrustDomain,
    /// The CA's own public key (DER SubjectPublicKeyInfo) and its bits.
    pub(crate) spki: &'a [u8],
    pub(crate) public_key_bits: &'a [u8],
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
    /// `None` for a self-signed root.
    pub(crate) issuer: Option<IssuerName<'a>>,
}

/// What a leaf says beyond its key: the ID, DNS names and validity, in Unix seconds.
#[derive(Debug)]
pub(crate) struct LeafParams<'a> {
    pub(crate) spiffe_id: &'a SpiffeId,
    pub(crate) dns_names: &'a [DnsName],
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
}

/// Longest common name allowed by RFC 5280's `ub-common-name`.
const MAX_CN_LEN: usize = 64;

const VERSION_3: &[u8] = &[0xa0, 0x03, 0x02, 0x01, 0x02];
const BASIC_CONSTRAINTS_LEAF: &[u8] = &[
    0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x02, 0x30, 0x00,
];
const BASIC_CONSTRAINTS_CA: &[u8] = &[
    0x30, 0x0f, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x05, 0x30, 0x03, 0x01, 0x01,
    0xff,
];
/// keyUsage, critical: digitalSignature | keyEncipherment | keyAgreement.
const KEY_USAGE_LEAF: &[u8] = &[
    0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01, 0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x03, 0xa8,
];
/// keyUsage, critical: keyCertSign | cRLSign.
const KEY_USAGE_CA: &[u8] = &[
    0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01, 0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x01, 0x06,
];

/// A random positive serial number of 16 bytes: 126 random bits, the top bit clear (positive) and
/// the next set (so the DER INTEGER is always exactly 16 bytes, never shortened).
pub(crate) fn random_serial() -> Result<[u8; 16], CaError> {
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| CaError::Signing)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

/// `C=US, O=SPIFFE`, then `serialNumber=<hex>` so successive CAs have distinct subjects.
fn ca_subject(serial: &[u8]) -> Vec<u8> {
    let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    let mut w = DerWriter::with_capacity(96);
    w.sequence(|w| {
        rdn(w, oid::AT_COUNTRY, der::TAG_PRINTABLE_STRING, b"US");
        rdn(w, oid::AT_ORGANIZATION, der::TAG_UTF8_STRING, b"SPIFFE");
        rdn(
            w,
            oid::AT_SERIAL_NUMBER,
            der::TAG_PRINTABLE_STRING,
            hex.as_bytes(),
        );
    });
    w.into_vec()
}

/// `C=US, O=SPIFFE`, then `CN=<first DNS name>` when there is one that fits.
fn leaf_subject(dns_names: &[DnsName]) -> Vec<u8> {
    let mut w = DerWriter::with_capacity(96);
    w.sequence(|w| {
        rdn(w, oid::AT_COUNTRY, der::TAG_PRINTABLE_STRING, b"US");
        rdn(w, oid::AT_ORGANIZATION, der::TAG_UTF8_STRING, b"SPIFFE");
        if let Some(cn) = dns_names.first().filter(|n| n.as_str().len() <= MAX_CN_LEN) {
            rdn(
                w,
                oid::AT_COMMON_NAME,
                der::TAG_UTF8_STRING,
                cn.as_str().as_bytes(),
            );
        }
    });
    w.into_vec()
}

fn rdn(w: &mut DerWriter, attr_type: &[u8], string_tag: u8, value: &[u8]) {
    w.nested(der::TAG_SET, |w| {
        w.sequence(|w| {
            w.raw(attr_type);
            w.tlv(string_tag, value);
        });
    });
}

fn extension(
    w: &mut DerWriter,
    oid_tlv: &[u8],
    critical: bool,
    value: impl FnOnce(&mut DerWriter),
) {
    w.sequence(|w| {
        w.raw(oid_tlv);
        if critical {
            w.tlv(der::TAG_BOOLEAN, &[0xff]);
        }
        w.nested(der::TAG_OCTET_STRING, value);
    });
}

fn ski_extension(w: &mut DerWriter, key_id: &[u8]) {
    extension(w, oid::EXT_SUBJECT_KEY_ID, false, |w| {
        w.tlv(der::TAG_OCTET_STRING, key_id);
    });
}

/// The complete authorityKeyIdentifier extension for an issuer key id.
pub(crate) fn aki_extension(key_id: &[u8]) -> Vec<u8> {
    let mut w = DerWriter::with_capacity(32);
    extension(&mut w, oid::EXT_AUTHORITY_KEY_ID, false, |w| {
        w.sequence(|w| w.tlv(0x80, key_id));
    });
    w.into_vec()
}

fn validity(not_before: u64, not_after: u64) -> Result<Vec<u8>, CaError> {
    let mut w = DerWriter::with_capacity(34);
    let mut times = DerWriter::with_capacity(32);
    times.time(not_before)?;
    times.time(not_after)?;
    w.tlv(der::TAG_SEQUENCE, &times.into_vec());
    Ok(w.into_vec())
}

/// Signs `tbs` and wraps it into a Certificate.
fn sign_certificate(tbs: &[u8], signer: &dyn CertSigner) -> Result<Vec<u8>, CaError> {
    let signature = signer.sign(tbs)?;
    let alg = signer.signature_algorithm_der();
    let mut w = DerWriter::with_capacity(tbs.len() + alg.len() + signature.len() + 16);
    w.sequence(|w| {
        w.raw(tbs);
        w.raw(alg);
        w.bit_string(&signature);
    });
    Ok(w.into_vec())
}

/// Builds and signs a CA certificate; returns its DER.
pub(crate) fn build_ca_cert(
    params: &CaCertParams<'_>,
    signer: &dyn CertSigner,
) -> Result<Vec<u8>, CaError> {
    let serial = random_serial()?;
    let subject = ca_subject(&serial);
    let ski = crate::leaf_key::key_identifier(params.public_key_bits);
    let validity = validity(params.not_before, params.not_after)?;
    let issuer_name = params.issuer.map_or(subject.as_slice(), |i| i.name_der);
    let td_id = params.trust_domain.id();

    let mut w = DerWriter::with_capacity(1024);
    w.sequence(|w| {
        w.raw(VERSION_3);
        w.unsigned_integer(&serial);
        w.raw(signer.signature_algorithm_der());
        w.raw(issuer_name);
        w.raw(&validity);
        w.raw(&subject);
        w.raw(params.spki);
        w.nested(0xa3, |w| {
            w.sequence(|w| {
                w.raw(BASIC_CONSTRAINTS_CA);
                w.raw(KEY_USAGE_CA);
                ski_extension(w, &ski);
                if let Some(aki) = params.issuer.and_then(|i| i.key_id) {
                    w.raw(&aki_extension(aki));
                }
                extension(w, oid::EXT_SUBJECT_ALT_NAME, false, |w| {
                    w.sequence(|w| w.tlv(0x86, td_id.as_str().as_bytes()));
                });
            });
        });
    });
    sign_certificate(&w.into_vec(), signer)
}

/// Builds and signs an X509-SVID leaf; returns its DER.
///
/// `issuer_name` and `aki_extension` are precomputed per authority so that the per-leaf work is
/// the random serial, a SHA-256 of the key (done when the key was parsed), a few hundred bytes of
/// copying, and the signature.
pub(crate) fn build_leaf(
    signer: &PrivateKey,
    issuer_name: &[u8],
    aki_extension: &[u8],
    key: &crate::leaf_key::LeafKey,
    params: &LeafParams<'_>,
) -> Result<Vec<u8>, CaError> {
    let serial = random_serial()?;
    let validity = validity(params.not_before, params.not_after)?;
    let subject = leaf_subject(params.dns_names);

    let mut w = DerWriter::with_capacity(768 + params.spiffe_id.as_str().len() + key.spki.len());
    w.sequence(|w| {
        w.raw(VERSION_3);
        w.unsigned_integer(&serial);
        w.raw(signer.signature_algorithm_der());
        w.raw(issuer_name);
        w.raw(&validity);
        w.raw(&subject);
        w.raw(&key.spki);
        w.nested(0xa3, |w| {
            w.sequence(|w| {
                w.raw(BASIC_CONSTRAINTS_LEAF);
                w.raw(KEY_USAGE_LEAF);
                extension(w, oid::EXT_EXTENDED_KEY_USAGE, false, |w| {
                    w.raw(oid::EKU_SERVER_CLIENT);
                });
                ski_extension(w, &key.ski);
                w.raw(aki_extension);
                extension(w, oid::EXT_SUBJECT_ALT_NAME, false, |w| {
                    w.sequence(|w| {
                        w.tlv(0x86, params.spiffe_id.as_str().as_bytes());
                        for name in params.dns_names {
                            w.tlv(0x82, name.as_str().as_bytes());
                        }
                    });
                });
            });
        });
    });
    sign_certificate(&w.into_vec(), signer)
}

/// What the CA needs to know about an existing certificate (its own, or an upstream CA's).
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    /// The subject Name, DER, byte for byte.
    pub(crate) subject: Vec<u8>,
    pub(crate) subject_key_id: Option<Vec<u8>>,
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
    /// The subjectPublicKey bits.
    pub(crate) public_key_bits: Vec<u8>,
    /// The whole SubjectPublicKeyInfo, DER.
    pub(crate) spki: Vec<u8>,
    /// basicConstraints says `cA` and keyUsage (if present) allows keyCertSign.
    pub(crate) can_sign_certs: bool,
    /// Issuer and subject names are equal (a root, or at least it claims to be).
    pub(crate) self_issued: bool,
}

impl CertInfo {
    pub(crate) fn parse(der: &[u8]) -> Result<Self, String> {
        use x509_parser::extensions::ParsedExtension;
        use x509_parser::prelude::FromDer as _;

        let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| format!("certificate does not parse: {e}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".into());
        }
        let tbs = &cert.tbs_certificate;
        let subject_key_id = tbs
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        let is_ca = matches!(tbs.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        let cert_sign_ok = match tbs.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        let time = |t: i64| u64::try_from(t).map_err(|_| "validity before 1970".to_owned());
        Ok(Self {
            subject: tbs.subject.as_raw().to_vec(),
            subject_key_id,
            not_before: time(tbs.validity.not_before.timestamp())?,
            not_after: time(tbs.validity.not_after.timestamp())?,
            public_key_bits: tbs.subject_pki.subject_public_key.data.to_vec(),
            spki: tbs.subject_pki.raw.to_vec(),
            can_sign_certs: is_ca && cert_sign_ok,
            self_issued: tbs.subject.as_raw() == tbs.issuer.as_raw(),
        })
    }
}
