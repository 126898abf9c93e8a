//! The Workload API connection adapter (crates/workload/src/authority.rs), which reads a client's
//! HTTP/2 frames and HPACK header blocks before tonic does, reached through the hidden
//! `lanyard_workload::fuzzing` entry point (feature `fuzzing`).
//!
//! The first input byte picks how the rest is cut into successive reads (see
//! `lanyard_fuzz::split_reads`); the rest is what the client sends. Properties:
//! - the adapter never panics;
//! - cutting the stream differently changes nothing: the output, the error and the mode are the
//!   same when the stream arrives in one read;
//! - a connection that is not rewritten is passed on unchanged (the output is a prefix of the
//!   input);
//! - a rewritten connection is what the server can read with a fresh HPACK decoder: header frames
//!   within the maximum frame size, without padding, every header block decodes, and every
//!   `:authority` in it is a valid URI authority.

#![no_main]

use lanyard_workload::fuzzing::{RewriteOutcome, rewrite_client_bytes};
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const MAX_FRAME_SIZE: usize = 16_384;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

fuzz_target!(|data: &[u8]| {
    let (reads, stream) = lanyard_fuzz::split_reads(data);
    let chunked = rewrite_client_bytes(&reads);
    let whole = rewrite_client_bytes(&[stream]);
    assert_eq!(
        chunked, whole,
        "the result depends on how the stream was cut"
    );

    let RewriteOutcome {
        out,
        error,
        rewriting,
    } = whole;
    if error.is_some() {
        return;
    }
    if rewriting {
        check_server_view(&out);
    } else {
        assert!(
            stream.starts_with(&out),
            "a connection not rewritten was altered"
        );
    }
});

/// Reads the rewritten stream as the server does: complete frames after the preface.
fn check_server_view(out: &[u8]) {
    let mut rest = out
        .strip_prefix(PREFACE)
        .expect("a rewritten stream starts with the preface");
    let mut decoder = loona_hpack::Decoder::new();
    let mut block: Option<Vec<u8>> = None;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let (frame_type, flags) = (rest[3], rest[4]);
        let Some(payload) = rest.get(9..9 + len) else {
            // A frame still being forwarded.
            return;
        };
        rest = &rest[9 + len..];
        match frame_type {
            TYPE_HEADERS => {
                assert!(block.is_none(), "HEADERS inside a header block");
                assert!(len <= MAX_FRAME_SIZE, "HEADERS frame of {len} bytes");
                assert_eq!(flags & FLAG_PADDED, 0, "rewritten HEADERS keep padding");
                let fragment = if flags & FLAG_PRIORITY != 0 {
                    payload.get(5..).expect("priority fields")
                } else {
                    payload
                };
                block = Some(fragment.to_vec());
            }
            TYPE_CONTINUATION => {
                assert!(len <= MAX_FRAME_SIZE, "CONTINUATION frame of {len} bytes");
                block
                    .as_mut()
                    .expect("CONTINUATION outside a header block")
                    .extend_from_slice(payload);
            }
            _ => {
                assert!(
                    block.is_none(),
                    "frame type {frame_type} inside a header block"
                );
                continue;
            }
        }
        if flags & FLAG_END_HEADERS != 0
            && let Some(fragment) = block.take()
        {
            let headers = decoder
                .decode(&fragment)
                .unwrap_or_else(|e| panic!("a rewritten header block does not decode: {e:?}"));
            for (name, value) in headers {
                if name == b":authority" {
                    assert!(
                        http::uri::Authority::try_from(value.as_slice()).is_ok(),
                        "invalid :authority passed on: {:?}",
                        String::from_utf8_lossy(&value)
                    );
                }
            }
        }
    }
    assert!(
        block.is_none(),
        "a rewritten header block was left unfinished"
    );
}
