//! The entry point `fuzz/` uses to reach the connection adapter, which is crate-private: bytes in,
//! what the server would read out. Compiled only with the `fuzzing` feature and hidden from the
//! docs; it is not part of the API and may change with the fuzz targets.

use crate::authority::AuthorityRewriter;

/// What the adapter made of a client's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteOutcome {
    /// The bytes the server would read, in order.
    pub out: Vec<u8>,
    /// Why the adapter closed the connection, if it did; `out` then holds what it had already
    /// passed on.
    pub error: Option<String>,
    /// True if the adapter ended up re-encoding header blocks (the connection's first header
    /// block carried an `:authority` that is not a valid URI authority).
    pub rewriting: bool,
}

/// Feeds `chunks` to a fresh adapter one after the other, as successive reads from the socket,
/// and stops at the first error.
pub fn rewrite_client_bytes(chunks: &[&[u8]]) -> RewriteOutcome {
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    let mut error = None;
    for chunk in chunks {
        if let Err(e) = rewriter.feed(chunk, &mut out) {
            error = Some(e.to_string());
            break;
        }
    }
    RewriteOutcome {
        out,
        error,
        rewriting: rewriter.is_rewriting(),
    }
}
