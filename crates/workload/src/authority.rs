//! A connection adapter that lets gRPC C-core and grpc-java clients talk to tonic over a Unix
//! socket.
//!
//! Those clients send the socket path as `:authority` (Python `grpcio` 1.85 sends
//! `tmp%2Fapi.sock`). h2, under tonic, parses `:authority` with `http::uri::Authority`, fails, and
//! resets the stream with `PROTOCOL_ERROR` before any handler runs (hyperium/h2#487). The
//! authority means nothing on a local socket, so this adapter sits between the accepted stream
//! and tonic, reads the client's HTTP/2 frames, and rewrites such an authority to `localhost`.
//!
//! How:
//! - Only the client-to-server direction is inspected; writes pass straight through.
//! - A connection is judged by its first header block. If its `:authority` is absent or valid
//!   (Rust and Go clients send `localhost`), the original bytes go on and the adapter becomes a
//!   plain pass-through: those clients pay one HPACK decode per connection, nothing per request.
//! - Otherwise every later header block on the connection is decoded too (HPACK is stateful: the
//!   client's dynamic table must be followed) and re-encoded as literals without indexing, so the
//!   server's HPACK table stays empty and never disagrees with what it was sent. Every other frame
//!   is copied byte for byte.
//! - Hostile input closes the connection with an error, never a panic: header frames are bounded
//!   by [`MAX_FRAME_SIZE`], a header block by [`MAX_HEADER_BLOCK_LEN`], the decoded header list by
//!   [`MAX_HEADER_LIST_SIZE`], and dynamic table size updates by the 4096 bytes the server allows.
//!   Bytes that are not an HTTP/2 connection preface are passed through for h2 to refuse.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
/// The largest frame payload a client may send: SETTINGS_MAX_FRAME_SIZE, which the server leaves
/// at its HTTP/2 default. Re-encoded header blocks are split at this size too.
pub(crate) const MAX_FRAME_SIZE: usize = 16_384;
/// The largest header block (HEADERS plus CONTINUATION fragments) accepted, encoded.
pub(crate) const MAX_HEADER_BLOCK_LEN: usize = 64 * 1024;
/// The largest decoded header list, counted as RFC 7541 §4.1 does (name + value + 32 per field).
/// gRPC clients send well under 8 KiB; this also stops a block of tiny indexed references to one
/// large table entry from decoding into megabytes.
pub(crate) const MAX_HEADER_LIST_SIZE: usize = 64 * 1024;
/// SETTINGS_HEADER_TABLE_SIZE as the server advertises it (the HTTP/2 default, never changed).
const HPACK_TABLE_SIZE: usize = 4_096;
/// What an unusable `:authority` becomes.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("header frame of {len} bytes exceeds the maximum frame size")]
    FrameTooLarge { len: usize },
    #[error("header block exceeds {MAX_HEADER_BLOCK_LEN} bytes")]
    BlockTooLarge,
    #[error("decoded header list exceeds {MAX_HEADER_LIST_SIZE} bytes")]
    HeaderListTooLarge,
    #[error("malformed padding or priority in a HEADERS frame")]
    MalformedHeaders,
    #[error("expected a CONTINUATION frame for stream {stream_id}")]
    ExpectedContinuation { stream_id: u32 },
    #[error("CONTINUATION frame without a header block in progress")]
    UnexpectedContinuation,
    #[error("HPACK decoding failed: {0}")]
    Hpack(String),
    #[error("the connection already failed")]
    Failed,
}

/// A decoded header list: (name, value) pairs in order.
type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting for the 24-byte client preface.
    Preface,
    /// Following frames until the first header block decides.
    Inspect,
    /// Re-encoding every header block.
    Rewrite,
    /// Copying everything; the adapter has nothing more to do.
    PassThrough,
    Failed,
}

/// The client-to-server translator: bytes in, bytes for the server out. No I/O, so it is tested
/// on crafted input directly.
pub(crate) struct AuthorityRewriter {
    mode: Mode,
    /// Input not yet translated: at most a frame header, or one header frame being collected.
    pending: Vec<u8>,
    /// Bytes of a non-header frame's payload still to copy through.
    forward: usize,
    block: Option<HeaderBlock>,
    decoder: loona_hpack::Decoder<'static>,
}

/// A header block being collected from a HEADERS frame and its CONTINUATION frames.
struct HeaderBlock {
    stream_id: u32,
    /// The HEADERS frame's flags.
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, forwarded unchanged if the block needs no rewrite.
    original: Vec<u8>,
}

/// An accepted stream with the rewriter in front of its read side.
pub(crate) struct AuthorityAdapter<IO> {
    io: IO,
    /// `None` once the connection passes through untouched.
    rewriter: Option<Box<AuthorityRewriter>>,
    /// Translated bytes not yet handed to the server, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
}

// === impl AuthorityRewriter ===

impl AuthorityRewriter {
    pub(crate) fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        Self {
            mode: Mode::Preface,
            pending: Vec::new(),
            forward: 0,
            block: None,
            decoder,
        }
    }

    /// True once the connection was judged not to need rewriting and nothing is held back.
    pub(crate) fn is_pass_through(&self) -> bool {
        self.mode == Mode::PassThrough && self.pending.is_empty()
    }

    /// True once header blocks are being re-encoded (the first one carried an unusable
    /// `:authority`): the fuzz targets check the re-encoded output only then.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn is_rewriting(&self) -> bool {
        self.mode == Mode::Rewrite
    }

    /// Translates bytes from the client, appending what the server should read to `out`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        match self.mode {
            Mode::PassThrough => {
                out.extend_from_slice(input);
                return Ok(());
            }
            Mode::Failed => return Err(FrameError::Failed),
            _ => {}
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(input);
        match self.process(&buf, out) {
            Ok(consumed) => {
                buf.drain(..consumed);
                self.pending = buf;
                Ok(())
            }
            Err(e) => {
                self.mode = Mode::Failed;
                self.block = None;
                Err(e)
            }
        }
    }

    /// Translates as much of `buf` as is complete; returns how many bytes were used.
    fn process(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<usize, FrameError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.mode {
                Mode::PassThrough => {
                    out.extend_from_slice(rest);
                    return Ok(buf.len());
                }
                Mode::Failed => return Err(FrameError::Failed),
                Mode::Preface => {
                    let n = rest.len().min(PREFACE.len());
                    if rest[..n] != PREFACE[..n] {
                        // Not HTTP/2: h2 answers that better than we could.
                        self.mode = Mode::PassThrough;
                    } else if n < PREFACE.len() {
                        return Ok(pos);
                    } else {
                        out.extend_from_slice(PREFACE);
                        pos += PREFACE.len();
                        self.mode = Mode::Inspect;
                    }
                }
                Mode::Inspect | Mode::Rewrite => {
                    if self.forward > 0 {
                        let n = self.forward.min(rest.len());
                        out.extend_from_slice(&rest[..n]);
                        self.forward -= n;
                        pos += n;
                        if self.forward > 0 {
                            return Ok(pos);
                        }
                        continue;
                    }
                    let Some(header) = rest.get(..FRAME_HEADER_LEN) else {
                        return Ok(pos);
                    };
                    let len = usize::from(header[0]) << 16
                        | usize::from(header[1]) << 8
                        | usize::from(header[2]);
                    let frame_type = header[3];
                    let flags = header[4];
                    let stream_id =
                        u32::from_be_bytes([header[5], header[6], header[7], header[8]])
                            & 0x7fff_ffff;
                    if let Some(block) = &self.block
                        && frame_type != TYPE_CONTINUATION
                    {
                        return Err(FrameError::ExpectedContinuation {
                            stream_id: block.stream_id,
                        });
                    }
                    if frame_type != TYPE_HEADERS && frame_type != TYPE_CONTINUATION {
                        out.extend_from_slice(header);
                        pos += FRAME_HEADER_LEN;
                        self.forward = len;
                        continue;
                    }
                    if len > MAX_FRAME_SIZE {
                        return Err(FrameError::FrameTooLarge { len });
                    }
                    let Some(frame) = rest.get(..FRAME_HEADER_LEN + len) else {
                        return Ok(pos);
                    };
                    pos += frame.len();
                    self.header_frame(frame_type, flags, stream_id, frame, out)?;
                }
            }
        }
    }

    fn header_frame(
        &mut self,
        frame_type: u8,
        flags: u8,
        stream_id: u32,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        let payload = &frame[FRAME_HEADER_LEN..];
        if frame_type == TYPE_HEADERS {
            let mut start = 0;
            let mut end = payload.len();
            if flags & FLAG_PADDED != 0 {
                let pad = usize::from(*payload.first().ok_or(FrameError::MalformedHeaders)?);
                start = 1;
                end = end
                    .checked_sub(pad)
                    .filter(|&end| end >= start)
                    .ok_or(FrameError::MalformedHeaders)?;
            }
            let mut priority = None;
            if flags & FLAG_PRIORITY != 0 {
                let fields = payload
                    .get(start..start + 5)
                    .filter(|_| start + 5 <= end)
                    .ok_or(FrameError::MalformedHeaders)?;
                let mut bytes = [0; 5];
                bytes.copy_from_slice(fields);
                priority = Some(bytes);
                start += 5;
            }
            self.block = Some(HeaderBlock {
                stream_id,
                flags,
                priority,
                fragment: payload[start..end].to_vec(),
                original: frame.to_vec(),
            });
        } else {
            let block = self
                .block
                .as_mut()
                .ok_or(FrameError::UnexpectedContinuation)?;
            if block.stream_id != stream_id {
                return Err(FrameError::ExpectedContinuation {
                    stream_id: block.stream_id,
                });
            }
            if block.fragment.len() + payload.len() > MAX_HEADER_BLOCK_LEN {
                return Err(FrameError::BlockTooLarge);
            }
            block.fragment.extend_from_slice(payload);
            block.original.extend_from_slice(frame);
        }
        if flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.finish_block(&block, out)?;
        }
        Ok(())
    }

    fn finish_block(&mut self, block: &HeaderBlock, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let headers = self.decode(&block.fragment)?;
        let needs_rewrite = headers
            .iter()
            .any(|(name, value)| name == b":authority" && !is_valid_authority(value));
        if self.mode == Mode::Inspect && !needs_rewrite {
            out.extend_from_slice(&block.original);
            self.mode = Mode::PassThrough;
            return Ok(());
        }
        self.mode = Mode::Rewrite;
        let mut encoded = Vec::new();
        for (name, value) in &headers {
            let value = if name == b":authority" && !is_valid_authority(value) {
                REPLACEMENT_AUTHORITY
            } else {
                value.as_slice()
            };
            // Literal header field without indexing, new name (RFC 7541 §6.2.2).
            encoded.push(0x00);
            encode_string(name, &mut encoded);
            encode_string(value, &mut encoded);
        }
        write_header_frames(block, &encoded, out);
        Ok(())
    }

    fn decode(&mut self, fragment: &[u8]) -> Result<HeaderList, FrameError> {
        let mut headers = Vec::new();
        let mut size = 0usize;
        let mut too_large = false;
        self.decoder
            .decode_with_cb(fragment, |name, value| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size > MAX_HEADER_LIST_SIZE {
                    too_large = true;
                } else {
                    headers.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| FrameError::Hpack(e.to_string()))?;
        if too_large {
            return Err(FrameError::HeaderListTooLarge);
        }
        Ok(headers)
    }
}

fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// An HPACK string literal without Huffman coding (RFC 7541 §5.2).
fn encode_string(bytes: &[u8], out: &mut Vec<u8>) {
    encode_integer(bytes.len(), 7, 0x00, out);
    out.extend_from_slice(bytes);
}

/// An HPACK integer with an `prefix_bits`-bit prefix (RFC 7541 §5.1).
fn encode_integer(mut value: usize, prefix_bits: u32, first_byte: u8, out: &mut Vec<u8>) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.push(first_byte | value as u8);
        return;
    }
    out.push(first_byte | max_prefix as u8);
    value -= max_prefix;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Writes `fragment` as a HEADERS frame with the block's stream, END_STREAM and priority, followed
/// by as many CONTINUATION frames as the frame size needs. Padding is dropped.
fn write_header_frames(block: &HeaderBlock, fragment: &[u8], out: &mut Vec<u8>) {
    let priority_len = if block.priority.is_some() { 5 } else { 0 };
    let first_len = fragment.len().min(MAX_FRAME_SIZE - priority_len);
    let (first, mut rest) = fragment.split_at(first_len);
    let mut flags = block.flags & (FLAG_END_STREAM | FLAG_PRIORITY);
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    write_frame_header(
        priority_len + first.len(),
        TYPE_HEADERS,
        flags,
        block.stream_id,
        out,
    );
    if let Some(priority) = &block.priority {
        out.extend_from_slice(priority);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_SIZE));
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame_header(chunk.len(), TYPE_CONTINUATION, flags, block.stream_id, out);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

fn write_frame_header(len: usize, frame_type: u8, flags: u8, stream_id: u32, out: &mut Vec<u8>) {
    // `len` ≤ MAX_FRAME_SIZE, so it fits the 24-bit length field.
    out.extend_from_slice(&[
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        frame_type,
        flags,
    ]);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

// === impl AuthorityAdapter ===

impl<IO> AuthorityAdapter<IO> {
    pub(crate) fn new(io: IO) -> Self {
        Self {
            io,
            rewriter: Some(Box::new(AuthorityRewriter::new())),
            out: Vec::new(),
            out_pos: 0,
        }
    }

    pub(crate) fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityAdapter<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let Some(rewriter) = this.rewriter.as_mut() else {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            };
            if rewriter.is_pass_through() {
                this.rewriter = None;
                this.out = Vec::new();
                continue;
            }
            let mut scratch = [0u8; 8 * 1024];
            let mut read = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            rewriter.feed(read.filled(), &mut this.out).map_err(|e| {
                tracing::debug!(error = %e, "closing Workload API connection");
                io::Error::new(io::ErrorKind::InvalidData, e)
            })?;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityAdapter<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
