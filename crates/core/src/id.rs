//! SPIFFE IDs and trust domains (SPIFFE-ID §2), parsed strictly.
//!
//! lanyard refuses what go-spiffe refuses: an uppercase scheme (`SPIFFE://`) or trust domain is an
//! error, not something to normalize. The `spiffe` Rust crate lowercases such input instead; that is
//! the deliberate difference in spelling, tested in `tests/spiffe_crate_agreement.rs` together with
//! the other one: a parsed ID over 2048 bytes is refused here and accepted there. Since only valid
//! values can exist, everything lanyard emits is lowercase and at most 2048 bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SCHEME_PREFIX: &str = "spiffe://";

/// Longest SPIFFE ID accepted or generated, in bytes (SPIFFE-ID §2.3).
pub const MAX_ID_LEN: usize = 2048;
/// Longest trust-domain name accepted, in bytes (SPIFFE-ID §2.3).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// The first path segment of the IDs lanyard gives itself: `/lanyard/server` for its servers,
/// `/lanyard/agent/…` for its agents. See [`SpiffeId::is_reserved_for_lanyard`].
pub const RESERVED_SEGMENT: &str = "lanyard";

/// Why a string is not a SPIFFE ID, trust domain or path segment. Each variant names one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("scheme is missing or invalid: a SPIFFE ID starts with `spiffe://` in lowercase")]
    WrongScheme,
    #[error("trust domain is missing")]
    MissingTrustDomain,
    #[error("trust domain is {len} bytes long; the limit is {MAX_TRUST_DOMAIN_LEN}")]
    TrustDomainTooLong { len: usize },
    #[error(
        "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores (found {found:?})"
    )]
    TrustDomainChar { found: char },
    #[error("a SPIFFE ID has no port")]
    Port,
    #[error("a SPIFFE ID has no user info")]
    UserInfo,
    #[error("percent-encoding is not allowed in a SPIFFE ID")]
    PercentEncoded,
    #[error("path cannot contain empty segments")]
    EmptySegment,
    #[error("path cannot contain dot segments")]
    DotSegment,
    #[error("path cannot have a trailing slash")]
    TrailingSlash,
    #[error(
        "path segment characters are limited to letters, numbers, dots, dashes, and underscores (found {found:?})"
    )]
    PathChar { found: char },
    #[error("path must start with `/`")]
    PathWithoutLeadingSlash,
    #[error("SPIFFE ID is {len} bytes long; the limit is {MAX_ID_LEN}")]
    TooLong { len: usize },
    #[error(
        "a trust domain has no path: `spiffe://<td>/<path>` is a workload's ID, not a trust domain"
    )]
    TrustDomainWithPath,
}

/// A trust domain name such as `example.org`: lowercase `[a-z0-9._-]`, 1 to 255 bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain {
    name: String,
}

/// A SPIFFE ID: `spiffe://<trust-domain>[/<segment>…]`.
///
/// Equality, ordering and hashing are on the whole string: the trust domain is always lowercase,
/// and the path is case-sensitive (SPIFFE-ID §2.4).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    /// The full ID, `spiffe://td/path`.
    id: String,
    /// Byte offset in `id` where the path starts (== `id.len()` when there is no path).
    path_start: usize,
}

// === impl TrustDomain ===

impl TrustDomain {
    /// Parses a bare trust-domain name (`example.org`). Use [`FromStr`] to accept
    /// `spiffe://example.org` as well.
    pub fn new(name: &str) -> Result<Self, IdError> {
        validate_trust_domain(name)?;
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// The bare name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The trust domain's own ID, `spiffe://<td>`: the ID of its signing authority and the key
    /// used for it in Workload API bundle maps.
    pub fn id(&self) -> SpiffeId {
        let id = format!("{SCHEME_PREFIX}{}", self.name);
        SpiffeId {
            path_start: id.len(),
            id,
        }
    }

    /// Builds `spiffe://<td>/<seg1>/<seg2>…`, checking each segment and the total length.
    pub fn id_from_segments<S: AsRef<str>>(&self, segments: &[S]) -> Result<SpiffeId, IdError> {
        segments
            .iter()
            .try_fold(self.id(), |id, segment| id.join(segment.as_ref()))
    }

    /// Builds an ID from this trust domain and a path such as `/ns/prod/sa/web` (or `""`).
    pub fn id_with_path(&self, path: &str) -> Result<SpiffeId, IdError> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(IdError::PathWithoutLeadingSlash);
        }
        let id = format!("{SCHEME_PREFIX}{}{path}", self.name);
        check_len(&id)?;
        validate_path(path)?;
        Ok(SpiffeId {
            path_start: SCHEME_PREFIX.len() + self.name.len(),
            id,
        })
    }
}

/// Accepts `example.org` and `spiffe://example.org`. Unlike go-spiffe's `TrustDomainFromString`
/// and the `spiffe` crate, an ID with a path (`spiffe://example.org/web`) is refused: where a trust
/// domain is asked for, a workload ID is more likely a mistake than a shorthand.
impl FromStr for TrustDomain {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(":/") {
            let id = SpiffeId::from_str(s)?;
            if !id.is_trust_domain_id() {
                return Err(IdError::TrustDomainWithPath);
            }
            return Ok(id.trust_domain());
        }
        Self::new(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.name)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// === impl SpiffeId ===

impl SpiffeId {
    /// Parses a SPIFFE ID. Same as [`str::parse`].
    pub fn parse(s: &str) -> Result<Self, IdError> {
        s.parse()
    }

    /// The full ID as a string.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust-domain name (`example.org`).
    pub fn trust_domain_name(&self) -> &str {
        &self.id[SCHEME_PREFIX.len()..self.path_start]
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain {
            name: self.trust_domain_name().to_owned(),
        }
    }

    /// The path, `""` for a trust domain's own ID, otherwise starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }

    /// The path's segments, none for a trust domain's own ID.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }

    /// True for `spiffe://<td>` with no path: the ID of a trust domain's authority, never of a
    /// workload (X509-SVID §2: a leaf must have a non-root path).
    pub fn is_trust_domain_id(&self) -> bool {
        self.path_start == self.id.len()
    }

    /// True for `spiffe://<td>/lanyard` and every ID under `spiffe://<td>/lanyard/`: the names
    /// lanyard issues only to itself (its servers) and to the agents it attests. Agents trust the
    /// server by its ID and the server trusts agents by theirs, so an entry, a join token alias or
    /// an admin-minted SVID with one of these IDs would impersonate them.
    ///
    /// The test is on the first path segment, exactly: `/lanyardx`, `/x/lanyard` and `/Lanyard`
    /// (paths are case-sensitive) are ordinary IDs. The trust domain's own ID (`spiffe://<td>`) is
    /// not covered here: it is the CA's name, never a workload's, and is refused by its own rule
    /// ([`is_trust_domain_id`](Self::is_trust_domain_id)).
    pub fn is_reserved_for_lanyard(&self) -> bool {
        self.segments().next() == Some(RESERVED_SEGMENT)
    }

    /// True if this ID belongs to `trust_domain`.
    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        self.trust_domain_name() == trust_domain.as_str()
    }

    /// Appends one path segment: `spiffe://td/a`.join("b") is `spiffe://td/a/b`.
    pub fn join(&self, segment: &str) -> Result<Self, IdError> {
        if segment.contains('/') {
            return Err(IdError::PathChar { found: '/' });
        }
        validate_segment(segment)?;
        let id = format!("{}/{segment}", self.id);
        check_len(&id)?;
        Ok(Self {
            id,
            path_start: self.path_start,
        })
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        // Checked first so that the work done on hostile input is bounded.
        check_len(s)?;
        let rest = s.strip_prefix(SCHEME_PREFIX).ok_or(IdError::WrongScheme)?;
        let (trust_domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        validate_trust_domain(trust_domain)?;
        validate_path(path)?;
        Ok(Self {
            id: s.to_owned(),
            path_start: SCHEME_PREFIX.len() + trust_domain.len(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.id)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// === validation ===

fn check_len(id: &str) -> Result<(), IdError> {
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { len: id.len() });
    }
    Ok(())
}

fn validate_trust_domain(name: &str) -> Result<(), IdError> {
    if name.is_empty() {
        return Err(IdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong { len: name.len() });
    }
    // `u:p@td` has a colon too: name the user info, the more specific mistake, first.
    if name.contains('@') {
        return Err(IdError::UserInfo);
    }
    for c in name.chars() {
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            ':' => return Err(IdError::Port),
            '%' => return Err(IdError::PercentEncoded),
            found => return Err(IdError::TrustDomainChar { found }),
        }
    }
    Ok(())
}

/// `path` is `""` or starts with `/`.
fn validate_path(path: &str) -> Result<(), IdError> {
    let Some(rest) = path.strip_prefix('/') else {
        return if path.is_empty() {
            Ok(())
        } else {
            Err(IdError::PathWithoutLeadingSlash)
        };
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_none() {
            return Err(IdError::TrailingSlash);
        }
        validate_segment(segment)?;
    }
    Ok(())
}

fn validate_segment(segment: &str) -> Result<(), IdError> {
    match segment {
        "" => return Err(IdError::EmptySegment),
        "." | ".." => return Err(IdError::DotSegment),
        _ => {}
    }
    for c in segment.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
            '%' => return Err(IdError::PercentEncoded),
            found => return Err(IdError::PathChar { found }),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "id_tests.rs"]
mod tests;
