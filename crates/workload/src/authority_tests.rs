#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use proptest::prelude::*;

use super::*;

const PYTHON_AUTHORITY: &[u8] = b"tmp%2Fapi.sock";

fn frame(frame_type: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame_header(payload.len(), frame_type, flags, stream_id, &mut out);
    out.extend_from_slice(payload);
    out
}

fn settings() -> Vec<u8> {
    // SETTINGS_ENABLE_PUSH = 0
    frame(0x4, 0, 0, &[0, 2, 0, 0, 0, 0])
}

fn data(stream_id: u32, payload: &[u8]) -> Vec<u8> {
    frame(0x0, 0, stream_id, payload)
}

fn request_headers(authority: &[u8], path: &str) -> HeaderList {
    vec![
        (b":method".to_vec(), b"POST".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
        (b":path".to_vec(), path.as_bytes().to_vec()),
        (b":authority".to_vec(), authority.to_vec()),
        (b"content-type".to_vec(), b"application/grpc".to_vec()),
        (b"te".to_vec(), b"trailers".to_vec()),
        (b"workload.spiffe.io".to_vec(), b"true".to_vec()),
    ]
}

fn encode(encoder: &mut loona_hpack::Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

/// Splits a translated byte stream into frames (after the preface).
fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert!(bytes.starts_with(PREFACE));
    let mut rest = &bytes[PREFACE.len()..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        frames.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    frames
}

/// Decodes every header block of a translated stream as the server would.
fn server_view(bytes: &[u8]) -> Vec<HeaderList> {
    let mut decoder = loona_hpack::Decoder::new();
    let mut blocks = Vec::new();
    let mut block = Vec::new();
    for (frame_type, flags, _, payload) in frames(bytes) {
        if frame_type == TYPE_HEADERS || frame_type == TYPE_CONTINUATION {
            assert!(payload.len() <= MAX_FRAME_SIZE);
            let skip = if frame_type == TYPE_HEADERS && flags & FLAG_PRIORITY != 0 {
                5
            } else {
                0
            };
            block.extend_from_slice(&payload[skip..]);
            if flags & FLAG_END_HEADERS != 0 {
                blocks.push(decoder.decode(&block).unwrap());
                block.clear();
            }
        }
    }
    blocks
}

fn translate(input: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    rewriter.feed(input, &mut out)?;
    Ok(out)
}

fn translate_bytewise(input: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    for byte in input {
        rewriter.feed(std::slice::from_ref(byte), &mut out)?;
    }
    Ok(out)
}

/// Preface, SETTINGS, one request per authority (HEADERS + DATA each), on one connection.
fn connection(authorities: &[&[u8]]) -> (Vec<u8>, Vec<HeaderList>) {
    let mut encoder = loona_hpack::Encoder::new();
    let mut bytes = PREFACE.to_vec();
    bytes.extend(settings());
    let mut sent = Vec::new();
    for (i, authority) in authorities.iter().enumerate() {
        let stream_id = 2 * i as u32 + 1;
        let headers = request_headers(authority, "/SpiffeWorkloadAPI/FetchJWTSVID");
        let block = encode(&mut encoder, &headers);
        bytes.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream_id, &block));
        bytes.extend(data(stream_id, b"\0\0\0\0\x05hello"));
        sent.push(headers);
    }
    (bytes, sent)
}

fn with_authority(headers: &[(Vec<u8>, Vec<u8>)], authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| {
            if n == b":authority" {
                (n.clone(), authority.to_vec())
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect()
}

#[test]
fn python_authority_is_rejected_by_http_and_localhost_accepted() {
    assert!(!is_valid_authority(PYTHON_AUTHORITY));
    assert!(is_valid_authority(b"localhost"));
    assert!(!is_valid_authority(b"/tmp/api.sock"));
}

#[test]
fn valid_authority_passes_through_unchanged() {
    let (bytes, _) = connection(&[b"localhost", b"localhost"]);
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    rewriter.feed(&bytes, &mut out).unwrap();
    assert_eq!(out, bytes);
    assert!(rewriter.is_pass_through());
}

#[test]
fn invalid_authority_is_rewritten_on_every_request() {
    let (bytes, sent) = connection(&[PYTHON_AUTHORITY, PYTHON_AUTHORITY, PYTHON_AUTHORITY]);
    let out = translate(&bytes).unwrap();
    let expected: Vec<_> = sent
        .iter()
        .map(|h| with_authority(h, b"localhost"))
        .collect();
    assert_eq!(server_view(&out), expected);
    // DATA and SETTINGS frames are copied byte for byte.
    let kinds: Vec<_> = frames(&out).into_iter().map(|f| (f.0, f.2, f.3)).collect();
    assert_eq!(kinds[0], (0x4, 0, vec![0, 2, 0, 0, 0, 0]));
    assert_eq!(kinds[2], (0x0, 1, b"\0\0\0\0\x05hello".to_vec()));
    // Bytes arriving one at a time give the same result.
    assert_eq!(translate_bytewise(&bytes).unwrap(), out);
}

#[test]
fn a_later_valid_authority_on_a_rewritten_connection_is_kept() {
    let (bytes, sent) = connection(&[PYTHON_AUTHORITY, b"example.org"]);
    let out = translate(&bytes).unwrap();
    let view = server_view(&out);
    assert_eq!(view[0], with_authority(&sent[0], b"localhost"));
    assert_eq!(view[1], sent[1]);
}

#[test]
fn huffman_coded_block_from_rfc7541_decodes_and_passes_through() {
    // RFC 7541 C.4.1: :method GET, :scheme http, :path /, :authority www.example.com (Huffman).
    let block = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &block,
    ));
    assert_eq!(translate(&bytes).unwrap(), bytes);
}

#[test]
fn padding_and_priority_are_handled_and_continuations_collected() {
    let mut encoder = loona_hpack::Encoder::new();
    let headers = request_headers(PYTHON_AUTHORITY, "/SpiffeWorkloadAPI/FetchX509SVID");
    let block = encode(&mut encoder, &headers);
    let (head, tail) = block.split_at(10);
    let mut payload = vec![3u8]; // pad length
    payload.extend([0x80, 0, 0, 0, 16]); // exclusive dependency on stream 0, weight 16
    payload.extend(head);
    payload.extend([0, 0, 0]);
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        3,
        &payload,
    ));
    bytes.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, tail));
    let out = translate(&bytes).unwrap();
    let out_frames = frames(&out);
    assert_eq!(out_frames.len(), 1);
    let (frame_type, flags, stream, payload) = &out_frames[0];
    assert_eq!((*frame_type, *stream), (TYPE_HEADERS, 3));
    assert_eq!(*flags, FLAG_PRIORITY | FLAG_END_STREAM | FLAG_END_HEADERS);
    assert_eq!(&payload[..5], &[0x80, 0, 0, 0, 16]);
    assert_eq!(
        server_view(&out),
        vec![with_authority(&headers, b"localhost")]
    );
}

#[test]
fn large_rewritten_block_is_split_into_continuations() {
    let mut encoder = loona_hpack::Encoder::new();
    let mut headers = request_headers(PYTHON_AUTHORITY, "/x");
    headers.push((b"x-big".to_vec(), vec![b'a'; 15_000]));
    headers.push((b"x-big2".to_vec(), vec![b'b'; 15_000]));
    let block = encode(&mut encoder, &headers);
    let mut bytes = PREFACE.to_vec();
    let (a, rest) = block.split_at(MAX_FRAME_SIZE);
    bytes.extend(frame(TYPE_HEADERS, 0, 1, a));
    bytes.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, rest));
    let out = translate(&bytes).unwrap();
    let out_frames = frames(&out);
    assert!(out_frames.len() >= 2);
    assert_eq!(out_frames[0].0, TYPE_HEADERS);
    assert!(out_frames[1..].iter().all(|f| f.0 == TYPE_CONTINUATION));
    assert_eq!(
        server_view(&out),
        vec![with_authority(&headers, b"localhost")]
    );
}

#[test]
fn not_http2_passes_through() {
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    rewriter.feed(request, &mut out).unwrap();
    assert_eq!(out, request);
    assert!(rewriter.is_pass_through());
}

#[test]
fn truncated_input_waits_without_output() {
    let (bytes, _) = connection(&[PYTHON_AUTHORITY]);
    // Cut inside the HEADERS frame: only the preface and SETTINGS can go on.
    let cut = PREFACE.len() + 15 + 12;
    let out = translate(&bytes[..cut]).unwrap();
    assert_eq!(out, bytes[..PREFACE.len() + 15]);
}

fn preface_and(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    for f in frames {
        bytes.extend(f);
    }
    bytes
}

#[test]
fn hostile_frames_close_the_connection() {
    let cases: Vec<(Vec<u8>, FrameError)> = vec![
        (
            preface_and(&[frame(TYPE_HEADERS, 0, 1, &vec![0; MAX_FRAME_SIZE + 1])]),
            FrameError::FrameTooLarge {
                len: MAX_FRAME_SIZE + 1,
            },
        ),
        (
            preface_and(&[frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82])]),
            FrameError::UnexpectedContinuation,
        ),
        (
            preface_and(&[frame(TYPE_HEADERS, 0, 1, &[0x82]), data(1, b"x")]),
            FrameError::ExpectedContinuation { stream_id: 1 },
        ),
        (
            preface_and(&[
                frame(TYPE_HEADERS, 0, 1, &[0x82]),
                frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &[0x84]),
            ]),
            FrameError::ExpectedContinuation { stream_id: 1 },
        ),
        (
            preface_and(&[frame(
                TYPE_HEADERS,
                FLAG_PADDED | FLAG_END_HEADERS,
                1,
                &[9, 0x82],
            )]),
            FrameError::MalformedHeaders,
        ),
        (
            preface_and(&[frame(TYPE_HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, &[])]),
            FrameError::MalformedHeaders,
        ),
        (
            preface_and(&[frame(
                TYPE_HEADERS,
                FLAG_PRIORITY | FLAG_END_HEADERS,
                1,
                &[0, 0],
            )]),
            FrameError::MalformedHeaders,
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(translate(&bytes), Err(expected.clone()), "{expected}");
        assert_eq!(translate_bytewise(&bytes), Err(expected));
    }
}

#[test]
fn corrupt_hpack_closes_the_connection() {
    let blocks: [&[u8]; 5] = [
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // index far out of range / integer overflow
        &[0xbf],                                     // index 63: no such dynamic entry
        &[0x00, 0x85, 0xff],                         // string longer than the block
        &[0x3f, 0xe1, 0x1f],                         // table size update to 4097
        &[0x00, 0x81, 0xff, 0x00],                   // Huffman string that is all EOS padding
    ];
    for block in blocks {
        let bytes = preface_and(&[frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, block)]);
        assert!(
            matches!(translate(&bytes), Err(FrameError::Hpack(_))),
            "{block:02x?}"
        );
    }
}

#[test]
fn dynamic_table_size_updates_are_honoured() {
    // A size update to 0 evicts everything: a later reference to the dynamic table must fail.
    let mut encoder = loona_hpack::Encoder::new();
    let first = encode(&mut encoder, &request_headers(PYTHON_AUTHORITY, "/a"));
    let second = encode(&mut encoder, &request_headers(PYTHON_AUTHORITY, "/a"));
    let mut shrink = vec![0x20];
    shrink.extend(&second);
    let ok = preface_and(&[
        frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &first),
        frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &second),
    ]);
    assert!(translate(&ok).is_ok());
    let evicted = preface_and(&[
        frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &first),
        frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &shrink),
    ]);
    assert!(matches!(translate(&evicted), Err(FrameError::Hpack(_))));
}

#[test]
fn header_list_bomb_is_refused() {
    // One 4000-byte entry in the dynamic table, then 64 one-byte references to it.
    let mut literal = vec![0x40];
    encode_string(b"x", &mut literal);
    encode_string(&[b'v'; 4000], &mut literal);
    let mut bomb = literal;
    bomb.extend(std::iter::repeat_n(0xbe, 64)); // index 62: the first dynamic entry
    let bytes = preface_and(&[frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &bomb)]);
    assert_eq!(translate(&bytes), Err(FrameError::HeaderListTooLarge));
}

#[test]
fn a_failed_rewriter_stays_failed() {
    let bytes = preface_and(&[frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82])]);
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    assert!(rewriter.feed(&bytes, &mut out).is_err());
    assert_eq!(rewriter.feed(b"more", &mut out), Err(FrameError::Failed));
}

#[test]
fn integers_encode_per_rfc7541() {
    // RFC 7541 C.1.1–C.1.3.
    let mut out = Vec::new();
    encode_integer(10, 5, 0, &mut out);
    assert_eq!(out, [0x0a]);
    out.clear();
    encode_integer(1337, 5, 0, &mut out);
    assert_eq!(out, [0x1f, 0x9a, 0x0a]);
    out.clear();
    encode_integer(42, 8, 0, &mut out);
    assert_eq!(out, [0x2a]);
}

#[tokio::test]
async fn adapter_rewrites_over_a_real_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (bytes, sent) = connection(&[PYTHON_AUTHORITY, PYTHON_AUTHORITY]);
    let (mut client, server) = tokio::io::duplex(64);
    let writer = tokio::spawn(async move {
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        client
    });
    let mut adapter = AuthorityAdapter::new(server);
    let mut out = Vec::new();
    adapter.read_to_end(&mut out).await.unwrap();
    writer.await.unwrap();
    let expected: Vec<_> = sent
        .iter()
        .map(|h| with_authority(h, b"localhost"))
        .collect();
    assert_eq!(server_view(&out), expected);
}

#[tokio::test]
async fn adapter_turns_into_pass_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (mut bytes, _) = connection(&[b"localhost"]);
    bytes.extend(vec![7u8; 100_000]);
    let (mut client, server) = tokio::io::duplex(1024);
    let expected = bytes.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        client
    });
    let mut adapter = AuthorityAdapter::new(server);
    let mut out = Vec::new();
    adapter.read_to_end(&mut out).await.unwrap();
    writer.await.unwrap();
    assert_eq!(out, expected);
    assert!(adapter.rewriter.is_none());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = translate(&bytes);
        let mut after_preface = PREFACE.to_vec();
        after_preface.extend(&bytes);
        let _ = translate(&after_preface);
    }

    #[test]
    fn random_header_blocks_never_panic(
        blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 1..8),
        flags in proptest::collection::vec(any::<u8>(), 8),
    ) {
        let mut bytes = PREFACE.to_vec();
        for (i, block) in blocks.iter().enumerate() {
            let frame_type = if flags[i] & 0x80 != 0 { TYPE_CONTINUATION } else { TYPE_HEADERS };
            bytes.extend(frame(frame_type, flags[i], 1 + 2 * (i as u32 % 2), block));
        }
        let _ = translate(&bytes);
    }

    #[test]
    fn any_split_gives_the_same_output(split in 0usize..400) {
        let (bytes, _) = connection(&[PYTHON_AUTHORITY, PYTHON_AUTHORITY]);
        let split = split.min(bytes.len());
        let mut rewriter = AuthorityRewriter::new();
        let mut out = Vec::new();
        rewriter.feed(&bytes[..split], &mut out).unwrap();
        rewriter.feed(&bytes[split..], &mut out).unwrap();
        prop_assert_eq!(out, translate(&bytes).unwrap());
    }
}
