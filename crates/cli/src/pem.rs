//! PEM encoding of DER blobs, for files that software like nginx and openssl reads.

use base64::Engine as _;

/// Encodes `der` as one PEM block with `label` (`CERTIFICATE`, `PRIVATE KEY`).
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // `as_bytes().chunks` splits ASCII base64 at 64 characters, the line length RFC 7468 asks for.
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn wraps_at_64_columns() {
        let pem = super::encode("CERTIFICATE", &[0u8; 60]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 16);
        assert_eq!(lines[3], "-----END CERTIFICATE-----");
    }
}
