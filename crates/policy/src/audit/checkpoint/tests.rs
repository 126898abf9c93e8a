#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use aws_lc_rs::signature::Ed25519KeyPair;

use super::*;
use crate::audit::merkle::{leaf_hash, root_of};

const ORIGIN: &str = "example.org/lanyard-audit";

fn new_pkcs8() -> Vec<u8> {
    let key = Ed25519KeyPair::generate().unwrap();
    key.to_pkcs8().unwrap().as_ref().to_vec()
}

fn pkcs8_from_seed(seed: &[u8]) -> Vec<u8> {
    let key = Ed25519KeyPair::from_seed_unchecked(seed).unwrap();
    key.to_pkcs8().unwrap().as_ref().to_vec()
}

fn signer(name: &str) -> CheckpointSigner {
    CheckpointSigner::from_pkcs8(name, &new_pkcs8()).unwrap()
}

fn root(n: u8) -> Hash {
    root_of(&(0..n).map(|i| leaf_hash(&[i])).collect::<Vec<_>>())
}

// Vectors from golang.org/x/mod/sumdb/note (`note_test.go`: TestSign, TestOpen), the reference
// implementation of C2SP signed-note. The private key string there is
// `PRIVATE+KEY+PeterNeumann+c74f20a3+<base64(0x01 || seed)>`.
const GO_SEED_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const GO_PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const GO_ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

#[test]
fn go_reference_key_id_signature_and_note_match() {
    let seed = BASE64.decode(GO_SEED_B64).unwrap();
    assert_eq!(seed[0], ALG_ED25519);
    let signer =
        CheckpointSigner::from_pkcs8("PeterNeumann", &pkcs8_from_seed(&seed[1..])).unwrap();
    assert_eq!(signer.key_id(), 0xc74f20a3);
    assert_eq!(signer.verifier_key(), GO_VKEY);

    let note = SignedNote {
        text: GO_TEXT.to_owned(),
        signatures: vec![signer.sign_text(GO_TEXT)],
    };
    assert_eq!(note.to_string(), format!("{GO_TEXT}\n{GO_PETER_SIG}"));

    let verifier: CheckpointVerifier = GO_VKEY.parse().unwrap();
    assert_eq!(verifier.to_string(), GO_VKEY);
    let parsed: SignedNote = format!("{GO_TEXT}\n{GO_PETER_SIG}{GO_ENOCH_SIG}")
        .parse()
        .unwrap();
    assert_eq!(parsed.text(), GO_TEXT);
    assert_eq!(parsed.signatures().len(), 2);
    // Enoch's signature is from a key this verifier does not know: ignored.
    verifier.verify_note(&parsed).unwrap();
    let enoch: CheckpointVerifier = GO_ENOCH_VKEY.parse().unwrap();
    enoch.verify_note(&parsed).unwrap();
    let only_enoch: SignedNote = format!("{GO_TEXT}\n{GO_ENOCH_SIG}").parse().unwrap();
    assert_eq!(
        verifier.verify_note(&only_enoch),
        Err(NoteError::NoKnownSignature)
    );
}

/// The example in docs/audit.md, reproduced from a fixed seed.
#[test]
fn documented_example_note_verifies() {
    let signer =
        CheckpointSigner::from_pkcs8("example.org/lanyard-audit", &pkcs8_from_seed(&[7; 32]))
            .unwrap();
    let leaves: Vec<Hash> = (0u8..3).map(|i| leaf_hash(&[i])).collect();
    let signed = signer.sign(3, root_of(&leaves)).unwrap();
    let text = signed.to_string();
    let doc = include_str!("../../../../../docs/audit.md");
    assert!(
        doc.contains(&signer.verifier_key()),
        "docs/audit.md verifier key is stale: {}",
        signer.verifier_key()
    );
    assert!(
        doc.contains(&text),
        "docs/audit.md example is stale:\n{text}"
    );
    let verifier: CheckpointVerifier = signer.verifier_key().parse().unwrap();
    verifier.verify(&text.parse().unwrap()).unwrap();
}

#[test]
fn sign_parse_verify_round_trip() {
    let signer = signer(ORIGIN);
    let signed = signer.sign(42, root(42)).unwrap();
    let text = signed.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], ORIGIN);
    assert_eq!(lines[1], "42");
    assert_eq!(lines[3], "");
    assert!(lines[4].starts_with("\u{2014} example.org/lanyard-audit "));

    let parsed: SignedCheckpoint = text.parse().unwrap();
    assert_eq!(parsed, signed);
    let verifier: CheckpointVerifier = signer.verifier_key().parse().unwrap();
    assert_eq!(verifier, signer.verifier());
    let checkpoint = verifier.verify(&parsed).unwrap();
    assert_eq!(checkpoint.origin(), ORIGIN);
    assert_eq!(checkpoint.size(), 42);
    assert_eq!(checkpoint.root(), &root(42));
}

#[test]
fn extension_lines_round_trip() {
    let signer = signer(ORIGIN);
    let checkpoint = Checkpoint::new(ORIGIN, 0, root(0))
        .unwrap()
        .with_extension("time 1765000000")
        .unwrap();
    let signed = signer.sign_checkpoint(checkpoint).unwrap();
    let parsed: SignedCheckpoint = signed.to_string().parse().unwrap();
    assert_eq!(parsed.checkpoint().extensions(), ["time 1765000000"]);
    signer.verifier().verify(&parsed).unwrap();
    assert_eq!(
        Checkpoint::new(ORIGIN, 0, root(0))
            .unwrap()
            .with_extension(""),
        Err(NoteError::InvalidExtension)
    );
}

#[test]
fn wrong_key_or_name_has_no_known_signature() {
    let signed = signer(ORIGIN).sign(3, root(3)).unwrap();
    // Same name, another key: a different key ID, so the signature is not ours.
    assert_eq!(
        signer(ORIGIN).verifier().verify(&signed),
        Err(NoteError::NoKnownSignature)
    );
    // The right key under another name.
    let pkcs8 = new_pkcs8();
    let a = CheckpointSigner::from_pkcs8(ORIGIN, &pkcs8).unwrap();
    let b = CheckpointSigner::from_pkcs8("example.org/other", &pkcs8).unwrap();
    let signed = a.sign(3, root(3)).unwrap();
    assert_eq!(
        b.verifier().verify(&signed),
        Err(NoteError::NoKnownSignature)
    );
}

#[test]
fn altered_body_fails() {
    let signer = signer(ORIGIN);
    let verifier = signer.verifier();
    let text = signer.sign(5, root(5)).unwrap().to_string();
    let root5 = BASE64.encode(root(5));
    for altered in [
        text.replacen("\n5\n", "\n6\n", 1),
        text.replacen("\n5\n", "\n4\n", 1),
        text.replacen(&root5, &BASE64.encode(root(4)), 1),
    ] {
        let parsed: SignedCheckpoint = altered.parse().unwrap();
        assert_eq!(
            verifier.verify(&parsed),
            Err(NoteError::InvalidSignature {
                name: ORIGIN.to_owned()
            })
        );
    }
    // A known key's signature that does not verify rejects the note even next to a good one.
    let good = signer.sign(5, root(5)).unwrap();
    let mut twice = good.note().clone();
    let mut bad = twice.signatures[0].clone();
    bad.signature[0] ^= 1;
    twice.signatures.push(bad);
    assert!(matches!(
        verifier.verify_note(&twice),
        Err(NoteError::InvalidSignature { .. })
    ));
}

#[test]
fn newline_changes_are_refused() {
    let signer = signer(ORIGIN);
    let text = signer.sign(5, root(5)).unwrap().to_string();
    let no_final = text.strip_suffix('\n').unwrap();
    assert_eq!(
        no_final.parse::<SignedCheckpoint>(),
        Err(NoteError::MissingFinalNewline)
    );
    assert_eq!(
        format!("{text}\n").parse::<SignedCheckpoint>(),
        Err(NoteError::NoSignatures)
    );
    let no_blank = text.replacen("\n\n", "\n", 1);
    assert_eq!(
        no_blank.parse::<SignedCheckpoint>(),
        Err(NoteError::MissingSeparator)
    );
    // An extra blank line inside the body: the body no longer parses as a checkpoint.
    let extra = text.replacen(&format!("{ORIGIN}\n"), &format!("{ORIGIN}\n\n"), 1);
    assert_eq!(
        extra.parse::<SignedCheckpoint>(),
        Err(NoteError::InvalidSize)
    );
}

#[test]
fn unknown_key_signatures_are_ignored_but_one_known_is_required() {
    let signer = signer(ORIGIN);
    let other = signer_named_like_but_other_id();
    let signed = signer.sign(5, root(5)).unwrap();
    let mut note = signed.note().clone();
    note.signatures.insert(0, other.sign_text(note.text()));
    note.signatures.push(NoteSignature {
        name: ORIGIN.to_owned(),
        key_id: signer.key_id() ^ 1,
        signature: vec![0; 64],
    });
    let parsed: SignedCheckpoint = note.to_string().parse().unwrap();
    signer.verifier().verify(&parsed).unwrap();

    let mut only_unknown = signed.note().clone();
    only_unknown.signatures = vec![other.sign_text(only_unknown.text())];
    let parsed: SignedCheckpoint = only_unknown.to_string().parse().unwrap();
    assert_eq!(
        signer.verifier().verify(&parsed),
        Err(NoteError::NoKnownSignature)
    );
}

fn signer_named_like_but_other_id() -> CheckpointSigner {
    signer("witness.example/w1")
}

#[test]
fn origin_must_be_the_key_name() {
    let signer = signer(ORIGIN);
    let foreign = Checkpoint::new("example.org/other-log", 1, root(1)).unwrap();
    assert!(matches!(
        signer.sign_checkpoint(foreign.clone()),
        Err(NoteError::OriginMismatch { .. })
    ));
    // Signed by our key, but claiming another log.
    let note = SignedNote {
        text: foreign.to_text(),
        signatures: vec![signer.sign_text(&foreign.to_text())],
    };
    let parsed: SignedCheckpoint = note.to_string().parse().unwrap();
    assert_eq!(
        signer.verifier().verify(&parsed),
        Err(NoteError::OriginMismatch {
            origin: "example.org/other-log".to_owned(),
            expected: ORIGIN.to_owned()
        })
    );
}

#[test]
fn malformed_notes_get_distinct_errors() {
    let signer = signer(ORIGIN);
    let good = signer.sign(5, root(5)).unwrap().to_string();
    let (body, sig_line) = good.split_once("\n\n").unwrap();
    let body = format!("{body}\n");
    let sig = sig_line
        .strip_prefix("\u{2014} example.org/lanyard-audit ")
        .unwrap()
        .trim_end();
    let cases: Vec<(String, NoteError)> = vec![
        (
            "a".repeat(MAX_NOTE_LEN + 1),
            NoteError::TooLarge {
                len: MAX_NOTE_LEN + 1,
            },
        ),
        (
            good.replacen("5", "5\r", 1),
            NoteError::ControlCharacter {
                offset: ORIGIN.len() + 2,
            },
        ),
        (
            format!("{body}\n{}", sig_line.repeat(MAX_SIGNATURES + 1)),
            NoteError::TooManySignatures,
        ),
        (
            format!("{body}\n- {ORIGIN} {sig}\n"),
            NoteError::MalformedSignatureLine { line: 0 },
        ),
        (
            format!("{body}\n{sig_line}\u{2014} {ORIGIN}\n"),
            NoteError::MalformedSignatureLine { line: 1 },
        ),
        (
            format!("{body}\n\u{2014} a+b {sig}\n"),
            NoteError::InvalidKeyName,
        ),
        (
            format!("{body}\n\u{2014}  {sig}\n"),
            NoteError::InvalidKeyName,
        ),
        (
            format!("{body}\n\u{2014} {ORIGIN} {sig}!\n"),
            NoteError::SignatureBase64 { line: 0 },
        ),
        (
            format!("{body}\n\u{2014} {ORIGIN} AAAAAA==\n"),
            NoteError::SignatureTooShort { line: 0 },
        ),
        (
            format!("{ORIGIN}\n5\n\n{sig_line}"),
            NoteError::MissingCheckpointLine,
        ),
        (
            format!("{}\n{sig_line}", body.replacen(ORIGIN, "", 1)),
            NoteError::InvalidOrigin,
        ),
        (
            format!("{}\n{sig_line}", body.replacen("\n5\n", "\n05\n", 1)),
            NoteError::InvalidSize,
        ),
        (
            format!("{}\n{sig_line}", body.replacen("\n5\n", "\n+5\n", 1)),
            NoteError::InvalidSize,
        ),
        (
            format!(
                "{}\n{sig_line}",
                body.replacen("\n5\n", "\n18446744073709551616\n", 1)
            ),
            NoteError::InvalidSize,
        ),
        (
            format!("{ORIGIN}\n5\n{}\n\n{sig_line}", BASE64.encode([0u8; 31])),
            NoteError::InvalidRootHash,
        ),
        (
            format!("{ORIGIN}\n5\nnot base64\n\n{sig_line}"),
            NoteError::InvalidRootHash,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(input.parse::<SignedCheckpoint>(), Err(want), "{input:?}");
    }
    // Non-canonical base64 of the root (trailing bits set) is refused too.
    let root_b64 = BASE64.encode(root(5));
    // 32 bytes use 43 sextets: the last one carries 2 unused low bits. Set one of them.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = root_b64.clone().into_bytes();
    let sextet = ALPHABET.iter().position(|&c| c == bytes[42]).unwrap();
    bytes[42] = ALPHABET[sextet ^ 1];
    let non_canonical = String::from_utf8(bytes).unwrap();
    let input = format!(
        "{}\n{sig_line}",
        body.replacen(&root_b64, &non_canonical, 1)
    );
    assert!(input.parse::<SignedCheckpoint>().is_err());
}

#[test]
fn malformed_verifier_keys_get_distinct_errors() {
    let signer = signer(ORIGIN);
    let vkey = signer.verifier_key();
    // The base64 key may itself contain '+'.
    let key_b64 = vkey.splitn(3, '+').nth(2).unwrap();
    let key = BASE64.decode(key_b64).unwrap();
    let hash = format!("{:08x}", signer.key_id());
    let mut wrong_alg = key.clone();
    wrong_alg[0] = 0x02;
    let cases = [
        (ORIGIN.to_owned(), NoteError::MalformedVerifierKey),
        (format!("{ORIGIN}+{hash}"), NoteError::MalformedVerifierKey),
        (format!("+{hash}+{key_b64}"), NoteError::InvalidKeyName),
        // Upper-case hex is not the format. (Not `hash.to_uppercase()`: a key id of digits only,
        // 2 % of random keys, has no case, which made this test fail now and then.)
        (
            format!("{ORIGIN}+ABCDEF12+{key_b64}"),
            NoteError::MalformedVerifierKey,
        ),
        (
            format!("{ORIGIN}+{}+{key_b64}", &hash[1..]),
            NoteError::MalformedVerifierKey,
        ),
        (
            format!("{ORIGIN}+{hash}+{key_b64}x"),
            NoteError::MalformedVerifierKey,
        ),
        (format!("{ORIGIN}+{hash}+"), NoteError::MalformedVerifierKey),
        (
            format!("{ORIGIN}+{hash}+{}", BASE64.encode(&wrong_alg)),
            NoteError::UnsupportedAlgorithm(0x02),
        ),
        (
            format!("{ORIGIN}+{hash}+{}", BASE64.encode(&key[..32])),
            NoteError::InvalidPublicKey,
        ),
        (
            format!("{ORIGIN}+{:08x}+{key_b64}", signer.key_id() ^ 1),
            NoteError::KeyIdMismatch {
                declared: signer.key_id() ^ 1,
                computed: signer.key_id(),
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(input.parse::<CheckpointVerifier>(), Err(want), "{input:?}");
    }
    assert_eq!(
        CheckpointSigner::from_pkcs8(ORIGIN, b"not a key").map(|_| ()),
        Err(NoteError::InvalidSigningKey)
    );
    assert_eq!(
        CheckpointSigner::from_pkcs8("has space", &new_pkcs8()).map(|_| ()),
        Err(NoteError::InvalidKeyName)
    );
}

#[test]
fn signer_debug_prints_no_key_bytes() {
    let pkcs8 = pkcs8_from_seed(&[7; 32]);
    let signer = CheckpointSigner::from_pkcs8(ORIGIN, &pkcs8).unwrap();
    let debug = format!("{signer:?}");
    assert!(debug.contains("..."));
    assert!(!debug.contains("0707"), "{debug}");
    assert!(!debug.contains(&BASE64.encode([7u8; 32])[..8]), "{debug}");
    // Not even the public key: the key ID identifies it.
    let public = &signer.verifier_key()[ORIGIN.len() + 10..];
    assert!(!debug.contains(&public[4..20]), "{debug}");
}

#[test]
fn every_truncation_or_deleted_char_is_refused_without_panic() {
    let signer = signer(ORIGIN);
    let verifier = signer.verifier();
    let text = signer.sign(1234, root(9)).unwrap().to_string();
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    for &end in &boundaries {
        let prefix = &text[..end];
        if let Ok(parsed) = prefix.parse::<SignedCheckpoint>() {
            assert!(verifier.verify(&parsed).is_err(), "{prefix:?}");
        }
    }
    for (n, &at) in boundaries.iter().enumerate() {
        let next = boundaries.get(n + 1).copied().unwrap_or(text.len());
        let mangled = format!("{}{}", &text[..at], &text[next..]);
        if let Ok(parsed) = mangled.parse::<SignedCheckpoint>() {
            assert!(verifier.verify(&parsed).is_err(), "{mangled:?}");
        }
    }
}
