//! Revoked JWT-SVIDs: the tokens of tasks that ended before their tokens expired, named by `jti`,
//! each with the time it expires anyway.
//!
//! A service that validates JWT-SVIDs itself ([`verify_jwt_svid`](crate::verify_jwt_svid) with
//! bundles from the Workload API) follows its agent's list (`lanyard.task.v1.Tasks/
//! WatchRevocations`) and asks [`RevocationList::check`] after the signature checks out; the
//! agent's own `ValidateJWTSVID` runs the same check on the same list.
//!
//! Only a token with a string `jti` can be revoked: the list names tokens by it, so a JWT-SVID
//! without one (or with an empty one) always passes. Task tokens always carry one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::VerifiedJwtSvid;
use crate::jwt::JWT_LEEWAY;

/// The revoked tokens, by `jti`. Ordered by `jti`, so two lists with the same tokens are equal and
/// iterate alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    /// `jti` → the token's expiry (`exp`). Never holds an empty `jti`.
    entries: BTreeMap<String, SystemTime>,
}

/// A token refused because its `jti` is on the [`RevocationList`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token {jti:?} has been revoked")]
pub struct Revoked {
    jti: String,
}

// === impl RevocationList ===

impl RevocationList {
    /// A list with nothing revoked.
    pub fn new() -> Self {
        Self::default()
    }

    /// The list as the wire carries it: `(jti, expiry in Unix seconds)`, as the node API's
    /// `RevokedToken` and the task service's `RevokedToken` have it. Pairs go through
    /// [`insert`](Self::insert).
    pub fn from_unix_seconds(entries: impl IntoIterator<Item = (String, i64)>) -> Self {
        let mut list = Self::new();
        for (jti, expires_at) in entries {
            // Every i64 of seconds is a SystemTime on Unix; elsewhere a time too far out to hold
            // is a token no clock reaches, and is left out rather than stored wrong.
            if let Some(expires_at) = unix_time(expires_at) {
                list.insert(jti, expires_at);
            }
        }
        list
    }

    /// Revokes the token `jti`, which expires at `expires_at`. An empty `jti` is ignored: no
    /// token is named by it. A `jti` listed twice keeps the later expiry, so the longer-lived
    /// revocation wins.
    pub fn insert(&mut self, jti: String, expires_at: SystemTime) {
        if jti.is_empty() {
            return;
        }
        let kept = self.entries.entry(jti).or_insert(expires_at);
        *kept = (*kept).max(expires_at);
    }

    /// Refuses a token whose `jti` is listed, whatever the time: whether a token has expired is
    /// [`verify_jwt_svid`](crate::verify_jwt_svid)'s call, so call this on a token that passed it.
    /// A token without a string `jti` is not revocable and passes.
    pub fn check(&self, token: &VerifiedJwtSvid) -> Result<(), Revoked> {
        self.check_jti(token.claims().get("jti").and_then(|jti| jti.as_str()))
    }

    /// True if `jti` is listed.
    pub fn contains(&self, jti: &str) -> bool {
        self.entries.contains_key(jti)
    }

    /// When the token `jti` expires, if it is listed.
    pub fn expiry(&self, jti: &str) -> Option<SystemTime> {
        self.entries.get(jti).copied()
    }

    /// Drops the tokens that [`verify_jwt_svid`](crate::verify_jwt_svid) refuses at `at` by their
    /// expiry alone: those past their `exp` by more than its [`JWT_LEEWAY`]. Entries within the
    /// leeway stay, or a revoked token would be accepted for its last seconds.
    pub fn prune(&mut self, at: SystemTime) {
        self.entries.retain(|_, expires_at| {
            expires_at
                .checked_add(JWT_LEEWAY)
                .is_none_or(|end| at < end)
        });
    }

    /// `(jti, expiry)`, ordered by `jti`.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, SystemTime)> {
        self.entries
            .iter()
            .map(|(jti, expires_at)| (jti.as_str(), *expires_at))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn check_jti(&self, jti: Option<&str>) -> Result<(), Revoked> {
        match jti {
            Some(jti) if self.contains(jti) => Err(Revoked {
                jti: jti.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// Pairs go through [`RevocationList::insert`].
impl FromIterator<(String, SystemTime)> for RevocationList {
    fn from_iter<I: IntoIterator<Item = (String, SystemTime)>>(entries: I) -> Self {
        let mut list = Self::new();
        for (jti, expires_at) in entries {
            list.insert(jti, expires_at);
        }
        list
    }
}

// === impl Revoked ===

impl Revoked {
    /// The `jti` of the refused token.
    pub fn jti(&self) -> &str {
        &self.jti
    }
}

/// Unix seconds (negative: before 1970) as a time, if this platform can hold it.
fn unix_time(seconds: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

#[cfg(test)]
#[path = "revocation_tests.rs"]
mod tests;
