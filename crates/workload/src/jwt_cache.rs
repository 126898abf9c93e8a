//! A cache of JWT-SVIDs keyed by (SPIFFE ID, audiences), for the agent's
//! [`IdentitySource::fetch_jwt_svid`](crate::IdentitySource::fetch_jwt_svid).
//!
//! A token is served until half its lifetime has passed (measured from when it was cached), then
//! minted again, as SPIRE's agent does: a caller always gets a token with at least half its life
//! left. Time comes from an injected [`Clock`](lanyard_core::Clock).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::SystemTime;

use lanyard_core::{SharedClock, SpiffeId};

/// Entries kept at most by default. A workload asking for many audiences cannot grow the agent
/// without bound: past this, the entries nearest their refresh time are dropped first.
pub const DEFAULT_JWT_CACHE_CAPACITY: usize = 10_000;

/// JWT-SVIDs by (SPIFFE ID, audiences). Audiences are compared as a set: `[b, a]` finds the token
/// minted for `[a, b]`.
#[derive(Debug)]
pub struct JwtSvidCache {
    clock: SharedClock,
    capacity: usize,
    /// Locked only for map operations, never across an await.
    entries: Mutex<HashMap<CacheKey, CachedJwtSvid>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    spiffe_id: SpiffeId,
    /// Sorted and without duplicates.
    audiences: Vec<String>,
}

#[derive(Debug, Clone)]
struct CachedJwtSvid {
    token: String,
    /// Half-way between caching and expiry: from here on the token is minted again.
    refresh_at: SystemTime,
}

impl CacheKey {
    fn new(spiffe_id: &SpiffeId, audiences: &[String]) -> Self {
        let mut audiences = audiences.to_vec();
        audiences.sort();
        audiences.dedup();
        Self {
            spiffe_id: spiffe_id.clone(),
            audiences,
        }
    }
}

// === impl JwtSvidCache ===

impl JwtSvidCache {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            capacity: DEFAULT_JWT_CACHE_CAPACITY,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps at most `capacity` tokens (at least one).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The cached token, if it has not reached half its life.
    pub fn get(&self, spiffe_id: &SpiffeId, audiences: &[String]) -> Option<String> {
        let key = CacheKey::new(spiffe_id, audiences);
        let now = self.clock.now();
        let mut entries = self.lock();
        match entries.get(&key) {
            Some(cached) if now < cached.refresh_at => Some(cached.token.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Caches `token`, which expires at `expires_at`. A token already past half its life (or
    /// expired) is not cached.
    pub fn insert(
        &self,
        spiffe_id: &SpiffeId,
        audiences: &[String],
        token: String,
        expires_at: SystemTime,
    ) {
        let now = self.clock.now();
        let Ok(lifetime) = expires_at.duration_since(now) else {
            return;
        };
        let refresh_at = now + lifetime / 2;
        if refresh_at <= now {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, cached| now < cached.refresh_at);
        }
        while entries.len() >= self.capacity {
            let Some(soonest) = entries
                .iter()
                .min_by_key(|(_, cached)| cached.refresh_at)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            entries.remove(&soonest);
        }
        entries.insert(
            CacheKey::new(spiffe_id, audiences),
            CachedJwtSvid { token, refresh_at },
        );
    }

    /// The cached token, or a new one from `mint` (token and expiry), which is then cached.
    /// Concurrent misses for one key may each mint; the last one is kept.
    pub async fn get_or_mint<F, Fut, E>(
        &self,
        spiffe_id: &SpiffeId,
        audiences: &[String],
        mint: F,
    ) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, SystemTime), E>>,
    {
        if let Some(token) = self.get(spiffe_id, audiences) {
            return Ok(token);
        }
        let (token, expires_at) = mint().await?;
        self.insert(spiffe_id, audiences, token.clone(), expires_at);
        Ok(token)
    }

    /// Drops every token of `spiffe_id` (its entry was deleted).
    pub fn remove_identity(&self, spiffe_id: &SpiffeId) {
        self.lock().retain(|key, _| &key.spiffe_id != spiffe_id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, CachedJwtSvid>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::Duration;

    use lanyard_core::{Clock, ManualClock};

    use super::*;

    fn setup() -> (Arc<ManualClock>, JwtSvidCache, SpiffeId) {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let cache = JwtSvidCache::new(clock.clone());
        (
            clock,
            cache,
            SpiffeId::parse("spiffe://example.org/web").unwrap(),
        )
    }

    fn auds(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn serves_until_half_life_then_misses() {
        let (clock, cache, id) = setup();
        let exp = clock.now() + Duration::from_secs(300);
        cache.insert(&id, &auds(&["a"]), "t1".into(), exp);
        assert_eq!(cache.get(&id, &auds(&["a"])).as_deref(), Some("t1"));
        clock.advance(Duration::from_secs(149));
        assert_eq!(cache.get(&id, &auds(&["a"])).as_deref(), Some("t1"));
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.get(&id, &auds(&["a"])), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn audiences_are_a_set_and_ids_are_separate() {
        let (clock, cache, id) = setup();
        let exp = clock.now() + Duration::from_secs(300);
        cache.insert(&id, &auds(&["a", "b"]), "ab".into(), exp);
        assert_eq!(
            cache.get(&id, &auds(&["b", "a", "a"])).as_deref(),
            Some("ab")
        );
        assert_eq!(cache.get(&id, &auds(&["a"])), None);
        let other = SpiffeId::parse("spiffe://example.org/db").unwrap();
        assert_eq!(cache.get(&other, &auds(&["a", "b"])), None);
        cache.remove_identity(&id);
        assert_eq!(cache.get(&id, &auds(&["a", "b"])), None);
    }

    #[test]
    fn expired_tokens_are_not_cached() {
        let (clock, cache, id) = setup();
        cache.insert(&id, &auds(&["a"]), "old".into(), clock.now());
        cache.insert(
            &id,
            &auds(&["b"]),
            "older".into(),
            clock.now() - Duration::from_secs(1),
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn capacity_drops_the_entry_nearest_refresh() {
        let (clock, cache, id) = setup();
        let cache = JwtSvidCache {
            capacity: 2,
            ..cache
        };
        cache.insert(
            &id,
            &auds(&["short"]),
            "s".into(),
            clock.now() + Duration::from_secs(10),
        );
        cache.insert(
            &id,
            &auds(&["long"]),
            "l".into(),
            clock.now() + Duration::from_secs(100),
        );
        cache.insert(
            &id,
            &auds(&["new"]),
            "n".into(),
            clock.now() + Duration::from_secs(50),
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&id, &auds(&["short"])), None);
        assert_eq!(cache.get(&id, &auds(&["long"])).as_deref(), Some("l"));
        assert_eq!(cache.get(&id, &auds(&["new"])).as_deref(), Some("n"));
    }

    #[tokio::test]
    async fn get_or_mint_mints_once_per_half_life() {
        let (clock, cache, id) = setup();
        let minted = std::sync::atomic::AtomicUsize::new(0);
        let mint = || async {
            let n = minted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, Infallible>((format!("token{n}"), clock.now() + Duration::from_secs(60)))
        };
        let first = cache.get_or_mint(&id, &auds(&["a"]), mint).await.unwrap();
        let second = cache.get_or_mint(&id, &auds(&["a"]), mint).await.unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("token0", "token0"));
        clock.advance(Duration::from_secs(30));
        let third = cache.get_or_mint(&id, &auds(&["a"]), mint).await.unwrap();
        assert_eq!(third, "token1");
    }

    #[tokio::test]
    async fn mint_errors_are_returned_and_not_cached() {
        let (_clock, cache, id) = setup();
        let result: Result<String, &str> = cache
            .get_or_mint(&id, &auds(&["a"]), || async { Err("down") })
            .await;
        assert_eq!(result, Err("down"));
        assert!(cache.is_empty());
    }
}
