//! What the node API spends on callers that have proved nothing yet: attestation is open to the
//! network, so its input is capped before it is parsed, attacker-chosen strings are clipped
//! before they are logged or stored, and refusals are recorded at a bounded rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use lanyard_core::SharedClock;

/// The gRPC path of `AttestAgent`, the one node API call open to anyone.
pub(crate) const ATTEST_AGENT_PATH: &str = "/lanyard.node.v1.Node/AttestAgent";

/// Longest attacker-chosen text kept in a log line or an event, in bytes.
pub(crate) const MAX_LOGGED_TEXT: usize = 256;

/// Most certificates in an x509pop chain: a leaf and a few intermediates.
pub(crate) const MAX_X509POP_CHAIN: usize = 8;

/// Refusals recorded per peer address: a burst, then one per interval.
const PEER_BURST: u32 = 5;
const PEER_REFILL: Duration = Duration::from_secs(10);
/// Refusals recorded from all peers together (many addresses are cheap on a local network).
const GLOBAL_BURST: u32 = 60;
const GLOBAL_REFILL: Duration = Duration::from_secs(1);
/// Peers tracked at once; past this the idle ones are forgotten (the global bucket still holds).
const MAX_TRACKED_PEERS: usize = 10_000;

/// Wraps the body of every `AttestAgent` call so that reading past `max` bytes (all its messages
/// together) fails: the call is open to anyone, and without this a peer could make the server
/// buffer a full-size message before anything checked it. Other calls come from attested agents
/// and keep the service's message limit.
pub(crate) fn cap_attestation_body(
    max: usize,
) -> impl Fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> + Clone {
    move |request| {
        if request.uri().path() == ATTEST_AGENT_PATH {
            request.map(|body| tonic::body::Body::new(http_body_util::Limited::new(body, max)))
        } else {
            request
        }
    }
}

/// At most `max` bytes of `text`, cut on a character boundary, saying how long it was.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// Counts the DER elements in `der` (concatenated certificates) from their headers alone, without
/// parsing them, and refuses more than `max`, a malformed header, or a length past the end.
pub(crate) fn count_der_elements(mut der: &[u8], max: usize) -> Result<usize, String> {
    let mut count = 0;
    while !der.is_empty() {
        count += 1;
        if count > max {
            return Err(format!("more than {max} certificates"));
        }
        let len = der_element_len(der).ok_or("a certificate's DER header is malformed")?;
        der = der.get(len..).ok_or("a certificate runs past the end")?;
    }
    Ok(count)
}

/// The whole length (header and content) of the DER element at the start of `der`.
fn der_element_len(der: &[u8]) -> Option<usize> {
    // Certificates are SEQUENCEs: a one-byte tag; the length is short form (< 128) or long form
    // with 1–4 length bytes (a certificate is never 4 GiB).
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let bytes = der.get(2..2 + n)?;
    let content = bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    (2 + n).checked_add(content)
}

/// Decides which refusals go to the event log: a token bucket per peer address and one for all.
/// Refusals over the rate are counted, and the count rides on the next one recorded.
#[derive(Debug)]
pub(crate) struct RefusalLimiter {
    clock: SharedClock,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    global: Bucket,
    peers: HashMap<IpAddr, Bucket>,
    /// Refusals not recorded since the last one that was.
    suppressed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When the last token was added (or the bucket made).
    refilled_at: SystemTime,
}

/// The limiter's answer for one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Record it, and say how many went unrecorded before it.
    Record { suppressed: u64 },
    /// Over the rate: count it only.
    Suppress,
}

// === impl RefusalLimiter ===

impl RefusalLimiter {
    pub(crate) fn new(clock: SharedClock) -> Self {
        let now = clock.now();
        Self {
            clock,
            state: Mutex::new(LimiterState {
                global: Bucket::full(GLOBAL_BURST, now),
                peers: HashMap::new(),
                suppressed: 0,
            }),
        }
    }

    /// Whether a refusal from `peer` (unknown: counted against the global bucket only) is
    /// recorded.
    pub(crate) fn admit(&self, peer: Option<IpAddr>) -> Admit {
        let now = self.clock.now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;
        if st.peers.len() >= MAX_TRACKED_PEERS {
            // Forget the peers whose buckets are full again: they cost nothing to recreate.
            st.peers
                .retain(|_, b| b.refill(now, PEER_BURST, PEER_REFILL) < PEER_BURST);
        }
        let peer_ok = match peer {
            Some(ip) => st
                .peers
                .entry(ip)
                .or_insert_with(|| Bucket::full(PEER_BURST, now))
                .take(now, PEER_BURST, PEER_REFILL),
            None => true,
        };
        if peer_ok && st.global.take(now, GLOBAL_BURST, GLOBAL_REFILL) {
            Admit::Record {
                suppressed: std::mem::take(&mut st.suppressed),
            }
        } else {
            st.suppressed += 1;
            Admit::Suppress
        }
    }
}

// === impl Bucket ===

impl Bucket {
    fn full(burst: u32, now: SystemTime) -> Self {
        Self {
            tokens: burst,
            refilled_at: now,
        }
    }

    /// Adds the tokens earned since the last refill; returns the count.
    fn refill(&mut self, now: SystemTime, burst: u32, every: Duration) -> u32 {
        let elapsed = now.duration_since(self.refilled_at).unwrap_or_default();
        let earned = elapsed.as_nanos() / every.as_nanos().max(1);
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(burst);
            // Whole intervals only, so partial progress is not lost.
            self.refilled_at += every * earned.min(burst);
            if self.tokens == burst {
                self.refilled_at = now;
            }
        }
        self.tokens
    }

    fn take(&mut self, now: SystemTime, burst: u32, every: Duration) -> bool {
        if self.refill(now, burst, every) == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use std::sync::Arc;

    use lanyard_core::ManualClock;

    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip("join_token", 256), "join_token");
        let long = "é".repeat(200);
        let clipped = clip(&long, 5);
        assert_eq!(clipped, "éé… (400 bytes)");
        assert_eq!(clip("", 0), "");
    }

    #[test]
    fn der_elements_are_counted_from_headers() {
        let cert = |len: usize| {
            let mut der = vec![0x30, 0x82];
            der.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
            der.extend(std::iter::repeat_n(0u8, len));
            der
        };
        let two = [cert(300), cert(500)].concat();
        assert_eq!(count_der_elements(&two, 8), Ok(2));
        assert_eq!(count_der_elements(&[0x30, 0x01, 0x00], 8), Ok(1));
        assert_eq!(count_der_elements(&[], 8), Ok(0));
        let nine = cert(10).repeat(9);
        assert!(
            count_der_elements(&nine, 8)
                .unwrap_err()
                .contains("more than 8")
        );
        // Truncated content, a truncated header, and absurd length forms.
        assert!(count_der_elements(&cert(300)[..200], 8).is_err());
        assert!(count_der_elements(&[0x30], 8).is_err());
        assert!(count_der_elements(&[0x30, 0x80], 8).is_err());
        assert!(count_der_elements(&[0x30, 0x85, 1, 1, 1, 1, 1], 8).is_err());
        assert!(count_der_elements(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], 8).is_err());
    }

    #[test]
    fn refusals_are_recorded_at_a_bounded_rate_per_peer_and_overall() {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        ));
        let limiter = RefusalLimiter::new(clock.clone());
        let a = Some(IpAddr::from([127, 0, 0, 2]));
        let b = Some(IpAddr::from([127, 0, 0, 3]));

        let recorded = (0..100)
            .filter(|_| limiter.admit(a) != Admit::Suppress)
            .count();
        assert_eq!(recorded, PEER_BURST as usize);
        // Another peer has its own bucket; the first one's suppressed count rides on its record.
        assert_eq!(limiter.admit(b), Admit::Record { suppressed: 95 });
        // One interval later, one more from the first peer.
        clock.advance(PEER_REFILL);
        assert_eq!(limiter.admit(a), Admit::Record { suppressed: 0 });
        assert_eq!(limiter.admit(a), Admit::Suppress);

        // Many addresses together are held by the global bucket.
        let global = (0..1000u32)
            .map(|i| Some(IpAddr::from(std::net::Ipv4Addr::from(0x7f00_1000 + i))))
            .filter(|peer| limiter.admit(*peer) != Admit::Suppress)
            .count();
        assert!(global < GLOBAL_BURST as usize, "{global}");
        clock.advance(GLOBAL_REFILL);
        assert!(matches!(
            limiter.admit(Some(IpAddr::from([10, 0, 0, 1]))),
            Admit::Record { .. }
        ));
    }
}
