//! Signed checkpoints in the C2SP formats: the `tlog-checkpoint` body (origin, size, base64
//! root, optional extension lines) inside a `signed-note` envelope, signed with Ed25519
//! (signature type `0x01`). Parsing is strict and bounded; every way a note can be malformed has
//! its own [`NoteError`] variant.
//!
//! Specs: <https://c2sp.org/signed-note>, <https://c2sp.org/tlog-checkpoint>.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::merkle::Hash;

/// Largest note accepted, in bytes.
pub const MAX_NOTE_LEN: usize = 16 * 1024;
/// Most signature lines accepted (the spec requires accepting at least 16).
pub const MAX_SIGNATURES: usize = 16;

/// The signed-note signature type byte for Ed25519.
const ALG_ED25519: u8 = 0x01;
const ED25519_PUBLIC_KEY_LEN: usize = 32;
const ED25519_SIGNATURE_LEN: usize = 64;
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a note, checkpoint or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is longer than [`MAX_NOTE_LEN`].
    #[error("note is {len} bytes, more than the {MAX_NOTE_LEN} allowed")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The note holds an ASCII control character other than newline.
    #[error("note holds a control character at byte {offset}")]
    ControlCharacter {
        /// Where.
        offset: usize,
    },
    /// The note does not end with a newline.
    #[error("note does not end with a newline")]
    MissingFinalNewline,
    /// No blank line separates the text from the signatures.
    #[error("note has no blank line before its signatures")]
    MissingSeparator,
    /// The note has no signature lines.
    #[error("note has no signature lines")]
    NoSignatures,
    /// The note has more than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    /// A signature line does not start with an em dash and a space.
    #[error("signature line {line} does not start with \"\u{2014} \"")]
    MalformedSignatureLine {
        /// 0-based index among the signature lines.
        line: usize,
    },
    /// A key name is empty or holds a space or `+`.
    #[error("key name is empty or holds a space or '+'")]
    InvalidKeyName,
    /// A signature is not valid base64.
    #[error("signature line {line} is not valid base64")]
    SignatureBase64 {
        /// 0-based index among the signature lines.
        line: usize,
    },
    /// A signature is too short to hold a key ID and a signature.
    #[error("signature line {line} is too short")]
    SignatureTooShort {
        /// 0-based index among the signature lines.
        line: usize,
    },
    /// The checkpoint text has fewer than three lines.
    #[error("checkpoint text has fewer than three lines")]
    MissingCheckpointLine,
    /// The origin line is empty or holds a newline.
    #[error("checkpoint origin is empty or malformed")]
    InvalidOrigin,
    /// The size line is not a decimal `u64` without leading zeros.
    #[error("checkpoint size is not a decimal number without leading zeros")]
    InvalidSize,
    /// The root hash line is not the base64 of 32 bytes.
    #[error("checkpoint root hash is not the base64 of 32 bytes")]
    InvalidRootHash,
    /// An extension line is empty or holds a newline.
    #[error("checkpoint extension line is empty or malformed")]
    InvalidExtension,
    /// A verifier key is not `<name>+<8 hex digits>+<base64 key>`.
    #[error("verifier key is not <name>+<hash>+<base64 key>")]
    MalformedVerifierKey,
    /// A verifier key's signature type is not Ed25519 (`0x01`).
    #[error("verifier key has signature type {0:#04x}, not Ed25519 (0x01)")]
    UnsupportedAlgorithm(u8),
    /// A verifier key's public key is not 32 bytes.
    #[error("verifier key's public key is not 32 bytes")]
    InvalidPublicKey,
    /// A verifier key's hash does not match its name and key.
    #[error("verifier key hash {declared:08x} does not match its name and key ({computed:08x})")]
    KeyIdMismatch {
        /// The hash in the key string.
        declared: u32,
        /// The hash computed from name and key.
        computed: u32,
    },
    /// The signing key is not an Ed25519 PKCS#8 document.
    #[error("signing key is not an Ed25519 PKCS#8 document")]
    InvalidSigningKey,
    /// A signature by the trusted key did not verify.
    #[error("signature by {name} does not verify")]
    InvalidSignature {
        /// The key name.
        name: String,
    },
    /// No signature line is from the trusted key.
    #[error("no signature from a trusted key")]
    NoKnownSignature,
    /// The checkpoint's origin is not the trusted key's name.
    #[error("checkpoint origin {origin:?} is not the log {expected:?}")]
    OriginMismatch {
        /// The origin line.
        origin: String,
        /// The trusted key's name.
        expected: String,
    },
}

/// A tree head: the origin (the log's name), the size and the root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    name: String,
    key_id: u32,
    signature: Vec<u8>,
}

/// A note as parsed: its text (ending in a newline) and its signature lines, none verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// A signed note whose text is a well-formed checkpoint. Its signatures are checked by
/// [`CheckpointVerifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    note: SignedNote,
    checkpoint: Checkpoint,
}

/// Signs checkpoints with an Ed25519 key. The key name is the log's origin.
pub struct CheckpointSigner {
    name: String,
    key_id: u32,
    key: Ed25519KeyPair,
}

/// A trusted checkpoint key, parsed from `<name>+<hash hex>+<base64(0x01 || public key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckpointVerifier {
    name: String,
    key_id: u32,
    public_key: [u8; ED25519_PUBLIC_KEY_LEN],
}

// === impl Checkpoint ===

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Result<Self, NoteError> {
        let origin = origin.into();
        if !is_valid_line(&origin) {
            return Err(NoteError::InvalidOrigin);
        }
        Ok(Self {
            origin,
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// Adds an extension line (opaque; the spec recommends against them).
    pub fn with_extension(mut self, line: impl Into<String>) -> Result<Self, NoteError> {
        let line = line.into();
        if !is_valid_line(&line) {
            return Err(NoteError::InvalidExtension);
        }
        self.extensions.push(line);
        Ok(self)
    }

    /// The log's name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash at that size.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// Extension lines, in order.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text: `<origin>\n<size>\n<base64 root>\n` then one line per extension.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses a note text (ending in a newline) as a checkpoint.
    pub fn from_text(text: &str) -> Result<Self, NoteError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(NoteError::MissingFinalNewline)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(NoteError::MissingCheckpointLine);
        };
        if !is_valid_line(origin) {
            return Err(NoteError::InvalidOrigin);
        }
        let size = parse_size(size)?;
        let root = parse_root(root)?;
        let mut checkpoint = Self::new(origin, size, root)?;
        for line in lines {
            checkpoint = checkpoint.with_extension(line)?;
        }
        Ok(checkpoint)
    }
}

fn is_valid_line(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(char::is_control)
}

fn parse_size(line: &str) -> Result<u64, NoteError> {
    let digits_only = !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = line.len() > 1 && line.starts_with('0');
    if !digits_only || leading_zero {
        return Err(NoteError::InvalidSize);
    }
    line.parse().map_err(|_| NoteError::InvalidSize)
}

fn parse_root(line: &str) -> Result<Hash, NoteError> {
    let bytes = BASE64
        .decode(line)
        .map_err(|_| NoteError::InvalidRootHash)?;
    <Hash>::try_from(bytes.as_slice()).map_err(|_| NoteError::InvalidRootHash)
}

// === impl NoteSignature ===

impl NoteSignature {
    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature bytes, after the key ID.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

// === impl SignedNote ===

impl SignedNote {
    /// The signed text, including its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }
}

impl FromStr for SignedNote {
    type Err = NoteError;

    fn from_str(note: &str) -> Result<Self, Self::Err> {
        if note.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge { len: note.len() });
        }
        if let Some(offset) = note.bytes().position(|b| b < 0x20 && b != b'\n') {
            return Err(NoteError::ControlCharacter { offset });
        }
        if !note.ends_with('\n') {
            return Err(NoteError::MissingFinalNewline);
        }
        // The text ends at the last blank line; signature lines cannot contain one.
        let split = note.rfind("\n\n").ok_or(NoteError::MissingSeparator)?;
        let text = &note[..=split];
        let sig_block = &note[split + 2..];
        if sig_block.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let lines: Vec<&str> = sig_block[..sig_block.len() - 1].split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        let signatures = lines
            .iter()
            .enumerate()
            .map(|(line, text)| parse_signature_line(line, text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }
}

fn parse_signature_line(line: usize, text: &str) -> Result<NoteSignature, NoteError> {
    let rest = text
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(NoteError::MalformedSignatureLine { line })?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(NoteError::MalformedSignatureLine { line })?;
    if !is_valid_key_name(name) {
        return Err(NoteError::InvalidKeyName);
    }
    let bytes = BASE64
        .decode(b64)
        .map_err(|_| NoteError::SignatureBase64 { line })?;
    if bytes.len() <= 4 {
        return Err(NoteError::SignatureTooShort { line });
    }
    let (id, signature) = bytes.split_at(4);
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
        signature: signature.to_vec(),
    })
}

fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

impl fmt::Display for SignedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for sig in &self.signatures {
            let mut bytes = Vec::with_capacity(4 + sig.signature.len());
            bytes.extend_from_slice(&sig.key_id.to_be_bytes());
            bytes.extend_from_slice(&sig.signature);
            writeln!(f, "{SIGNATURE_PREFIX}{} {}", sig.name, BASE64.encode(bytes))?;
        }
        Ok(())
    }
}

// === impl SignedCheckpoint ===

impl SignedCheckpoint {
    /// The checkpoint. Not trustworthy until [`CheckpointVerifier::verify`] accepted it.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The note around it.
    pub fn note(&self) -> &SignedNote {
        &self.note
    }
}

impl FromStr for SignedCheckpoint {
    type Err = NoteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let note: SignedNote = s.parse()?;
        let checkpoint = Checkpoint::from_text(&note.text)?;
        Ok(Self { note, checkpoint })
    }
}

impl fmt::Display for SignedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.note.fmt(f)
    }
}

// === impl CheckpointSigner ===

impl CheckpointSigner {
    /// A signer named `name` (the log's origin, e.g. `example.org/lanyard-audit`) over an
    /// Ed25519 key in PKCS#8 (v1 or v2) DER.
    pub fn from_pkcs8(name: impl Into<String>, pkcs8: &[u8]) -> Result<Self, NoteError> {
        let name = name.into();
        if !is_valid_key_name(&name) {
            return Err(NoteError::InvalidKeyName);
        }
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| NoteError::InvalidSigningKey)?;
        let key_id = key_id(&name, key.public_key().as_ref());
        Ok(Self { name, key_id, key })
    }

    /// The key name, which is also the origin of every checkpoint it signs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The verifier key string clients configure: `<name>+<hash>+<base64(0x01 || key)>`.
    pub fn verifier_key(&self) -> String {
        let mut typed = vec![ALG_ED25519];
        typed.extend_from_slice(self.key.public_key().as_ref());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(typed))
    }

    /// The verifier for this signer's key.
    pub fn verifier(&self) -> CheckpointVerifier {
        let mut public_key = [0u8; ED25519_PUBLIC_KEY_LEN];
        public_key.copy_from_slice(self.key.public_key().as_ref());
        CheckpointVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key,
        }
    }

    /// Signs the tree head (`size`, `root`) with this signer's name as the origin.
    pub fn sign(&self, size: u64, root: Hash) -> Result<SignedCheckpoint, NoteError> {
        self.sign_checkpoint(Checkpoint::new(self.name.clone(), size, root)?)
    }

    /// Signs a checkpoint built by the caller (e.g. with extension lines). Its origin must be
    /// this signer's name.
    pub fn sign_checkpoint(&self, checkpoint: Checkpoint) -> Result<SignedCheckpoint, NoteError> {
        if checkpoint.origin != self.name {
            return Err(NoteError::OriginMismatch {
                origin: checkpoint.origin,
                expected: self.name.clone(),
            });
        }
        let text = checkpoint.to_text();
        let signature = self.sign_text(&text);
        let note = SignedNote {
            text,
            signatures: vec![signature],
        };
        // A note this signer writes must parse again on the verifying side.
        let len = note.to_string().len();
        if len > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge { len });
        }
        Ok(SignedCheckpoint { note, checkpoint })
    }

    /// Signs arbitrary note text (used by tests against the signed-note reference vectors).
    fn sign_text(&self, text: &str) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text.as_bytes()).as_ref().to_vec(),
        }
    }
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .field("key", &format_args!("..."))
            .finish()
    }
}

// === impl CheckpointVerifier ===

impl CheckpointVerifier {
    /// The key name, which is the origin its checkpoints must carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Checks a note's signatures: signatures from other keys (a different name or key ID) are
    /// ignored, every signature from this key must verify, and at least one must be present.
    pub fn verify_note(&self, note: &SignedNote) -> Result<(), NoteError> {
        let key = UnparsedPublicKey::new(&ED25519, &self.public_key);
        let mut verified = false;
        for sig in &note.signatures {
            if sig.name != self.name || sig.key_id != self.key_id {
                continue;
            }
            let ok = sig.signature.len() == ED25519_SIGNATURE_LEN
                && key.verify(note.text.as_bytes(), &sig.signature).is_ok();
            if !ok {
                return Err(NoteError::InvalidSignature {
                    name: sig.name.clone(),
                });
            }
            verified = true;
        }
        if verified {
            Ok(())
        } else {
            Err(NoteError::NoKnownSignature)
        }
    }

    /// Checks a checkpoint's signatures (as [`verify_note`](Self::verify_note)) and that its
    /// origin is this key's name; returns the now trusted checkpoint.
    pub fn verify<'a>(&self, signed: &'a SignedCheckpoint) -> Result<&'a Checkpoint, NoteError> {
        self.verify_note(&signed.note)?;
        if signed.checkpoint.origin != self.name {
            return Err(NoteError::OriginMismatch {
                origin: signed.checkpoint.origin.clone(),
                expected: self.name.clone(),
            });
        }
        Ok(&signed.checkpoint)
    }
}

impl FromStr for CheckpointVerifier {
    type Err = NoteError;

    fn from_str(vkey: &str) -> Result<Self, Self::Err> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedVerifierKey);
        };
        if !is_valid_key_name(name) {
            return Err(NoteError::InvalidKeyName);
        }
        let hex_ok =
            hash.len() == 8 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_ok {
            return Err(NoteError::MalformedVerifierKey);
        }
        let declared =
            u32::from_str_radix(hash, 16).map_err(|_| NoteError::MalformedVerifierKey)?;
        let typed = BASE64
            .decode(key)
            .map_err(|_| NoteError::MalformedVerifierKey)?;
        let (&alg, public_key) = typed.split_first().ok_or(NoteError::MalformedVerifierKey)?;
        if alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedAlgorithm(alg));
        }
        let public_key: [u8; ED25519_PUBLIC_KEY_LEN] = public_key
            .try_into()
            .map_err(|_| NoteError::InvalidPublicKey)?;
        let computed = key_id(name, &public_key);
        if computed != declared {
            return Err(NoteError::KeyIdMismatch { declared, computed });
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: computed,
            public_key,
        })
    }
}

impl fmt::Display for CheckpointVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut typed = vec![ALG_ED25519];
        typed.extend_from_slice(&self.public_key);
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(typed)
        )
    }
}

impl fmt::Debug for CheckpointVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointVerifier({self})")
    }
}

/// `SHA-256(name || 0x0A || 0x01 || public key)[:4]`, big-endian.
fn key_id(name: &str, public_key: &[u8]) -> u32 {
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[ALG_ED25519]);
    ctx.update(public_key);
    let d = ctx.finish();
    let b = d.as_ref();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests;
