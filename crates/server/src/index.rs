//! The in-memory index of registration entries that lets the server answer "which entries may this
//! agent serve" and push changes to agents without touching the database per agent.
//!
//! The index follows the datastore's revision log: [`EntryIndex::catch_up`] reads the changes
//! after the index's revision (one query, whoever wrote them) and applies them in revision order,
//! then hands them to the sync streams that serve an affected parent. The server calls it right
//! after each of its own writes, so a new entry reaches connected agents at once; a periodic call
//! picks up writes of other servers sharing a PostgreSQL database.
//!
//! **Memory.** A million entries must fit in a few hundred MiB, so entries are kept compactly
//! ([`IndexedEntry`]): the server's own 32-hex-digit ids as 16 bytes, parent IDs and selectors
//! interned (one shared `Arc<str>` per distinct string), the rarely used fields behind one
//! optional box, and the entries in a slab addressed by slot number from a hash table of slots
//! and from each parent's set of slots, so an id is stored once.
//!
//! **Pushes.** A sync stream [subscribes](EntryIndex::subscribe) to the parents it serves (its
//! agent's ID and the node aliases it matches). A batch of changes is grouped by parent (old and
//! new) and queued, once, to each subscriber of an affected parent, so one change costs the
//! streams that care and not every open stream. A change to a node alias goes to every
//! subscriber (which aliases an agent matches is a question of its selectors). Each subscriber
//! has a bounded queue; one that falls behind is told to resync in full instead of losing
//! updates.
//!
//! An entry whose own SPIFFE ID is reserved for lanyard (`spiffe://<td>/lanyard/…`) never enters
//! the index: the admin API refuses such entries, so only a row written around it (by an older
//! version, or by hand) can carry one. Kept out here, it is never pushed, minted, nor taken as a
//! node alias (an alias named like the server or an agent would hand out their entries); the
//! admin API, which reads the datastore, still lists it so that it can be deleted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use hashbrown::HashTable;
use lanyard_core::{
    DnsName, EntryId, EntrySpec, RegistrationEntry, Selector, SelectorSet, SpiffeId, TrustDomain,
};
use lanyard_store::{DataStore, EntryChange};
use tokio::sync::mpsc;

/// How many update batches a subscriber may have queued before it must resync in full.
const SUBSCRIBER_CAPACITY: usize = 64;
/// Changes read from the store per query while catching up.
const CATCH_UP_CHUNK: u32 = 10_000;
/// The interner drops strings no entry uses once it has grown to twice its size after the last
/// sweep, and not below this many.
const MIN_SWEEP: usize = 1024;

/// One applied batch of changes, as queued to the sync streams of the parents it touched. Only
/// parents that had a subscriber when the batch was applied are in it.
#[derive(Debug)]
pub(crate) struct IndexUpdate {
    /// The index's revision after this batch.
    pub(crate) revision: u64,
    /// What changed under each parent.
    pub(crate) by_parent: HashMap<Arc<str>, ParentChanges>,
    /// True if a node-alias entry changed: agents' alias memberships must be recomputed.
    pub(crate) aliases_changed: bool,
}

/// The changes of one batch under one parent.
#[derive(Debug, Default)]
pub(crate) struct ParentChanges {
    /// Entries created or updated under this parent (or moved to it).
    pub(crate) puts: Vec<IndexedEntry>,
    /// Ids that were under this parent and are not any more: deleted, moved to another parent, or
    /// (in a batch that deletes and creates an id again) also in some parent's `puts`.
    pub(crate) removed: Vec<EntryId>,
}

/// What node aliases grant one agent at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AliasGrants {
    /// The agent's own ID and the IDs of the unexpired aliases it matches.
    pub(crate) parents: BTreeSet<SpiffeId>,
    /// When the first of those aliases expires.
    pub(crate) next_expiry: Option<SystemTime>,
    /// Whether an alias the agent matches has expired (and so grants nothing any more).
    pub(crate) expired: bool,
}

/// An entry as the index keeps it: the fields of a [`RegistrationEntry`], compactly. Cloning
/// copies the entry's own id and SPIFFE ID and shares the interned strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexedEntry {
    id: EntryKey,
    spiffe_id: Box<str>,
    /// Interned: many entries share a parent.
    parent_id: Arc<str>,
    /// Interned, each `type:value`, in the set's order.
    selectors: Box<[Arc<str>]>,
    revision: u64,
    x509_ttl_secs: u32,
    jwt_ttl_secs: u32,
    admin: bool,
    downstream: bool,
    /// Everything most entries leave empty; when present its TTLs are the entry's.
    rare: Option<Box<Rare>>,
}

/// The entries of the datastore, indexed by id and by parent, and the sync streams subscribed to
/// their parents.
#[derive(Debug)]
pub(crate) struct EntryIndex {
    /// Parents of node-alias entries: an entry whose parent is this ID groups agents by selectors.
    server_id: SpiffeId,
    state: RwLock<IndexState>,
    /// Serializes catch-ups so changes are applied once and in order.
    catching_up: tokio::sync::Mutex<()>,
    /// Taken inside `state`'s lock (write to dispatch, read to subscribe), never the other way
    /// round: a subscriber registered under the read lock sees every batch applied after the
    /// state it reads, and none is dispatched half-applied.
    subscribers: Arc<Mutex<Subscribers>>,
    /// Queue length of each subscriber.
    capacity: usize,
}

/// A sync stream's subscription to the changes under its parents. Dropping it unsubscribes.
#[derive(Debug)]
pub(crate) struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Arc<IndexUpdate>>,
    /// Set by the index when a batch did not fit in the queue.
    lagged: Arc<AtomicBool>,
    subscribers: Arc<Mutex<Subscribers>>,
}

/// What a subscription delivers.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// The next batch touching the subscribed parents.
    Update(Arc<IndexUpdate>),
    /// Batches were lost because the queue was full: send the full set again. Updates queued
    /// after this one whose revision is not above the full set's are already in it.
    Resync,
}

/// An entry id as the index keys it: ids the server makes (32 lowercase hex digits) in 16 bytes,
/// any other id (imported) as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum EntryKey {
    Hex([u8; 16]),
    Text(Box<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rare {
    x509_ttl: Duration,
    jwt_ttl: Duration,
    dns_names: Vec<DnsName>,
    federates_with: Vec<TrustDomain>,
    hint: Box<str>,
    expires_at: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct IndexState {
    revision: u64,
    /// The entries; `None` is a free slot, listed in `free`.
    slots: Vec<Option<IndexedEntry>>,
    free: Vec<u32>,
    /// Slots by entry id (hashed with `hasher`).
    ids: HashTable<u32>,
    hasher: RandomState,
    /// Slots by parent ID, in slot order.
    by_parent: HashMap<Arc<str>, BTreeSet<u32>>,
    /// Rows with an ID reserved for lanyard: counted in `len`, never served.
    reserved: HashSet<EntryKey>,
    strings: Interner,
}

/// One `Arc<str>` per distinct parent ID and selector.
#[derive(Debug, Default)]
struct Interner {
    set: HashSet<Arc<str>>,
    /// Size after the last sweep.
    swept: usize,
}

#[derive(Debug, Default)]
struct Subscribers {
    next_id: u64,
    subs: HashMap<u64, Subscriber>,
    by_parent: HashMap<Box<str>, HashSet<u64>>,
}

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<Arc<IndexUpdate>>,
    lagged: Arc<AtomicBool>,
    parents: Vec<Box<str>>,
}

// === impl EntryIndex ===

impl EntryIndex {
    /// Loads every entry from the store.
    pub(crate) async fn load(
        store: &dyn DataStore,
        server_id: SpiffeId,
    ) -> Result<Self, lanyard_store::Error> {
        Self::load_with_capacity(store, server_id, SUBSCRIBER_CAPACITY).await
    }

    async fn load_with_capacity(
        store: &dyn DataStore,
        server_id: SpiffeId,
        capacity: usize,
    ) -> Result<Self, lanyard_store::Error> {
        let index = Self {
            server_id,
            state: RwLock::new(IndexState::default()),
            catching_up: tokio::sync::Mutex::new(()),
            subscribers: Arc::default(),
            capacity: capacity.max(1),
        };
        index.catch_up(store).await?;
        Ok(index)
    }

    /// Applies every change committed since the index's revision, then tells subscribers.
    pub(crate) async fn catch_up(&self, store: &dyn DataStore) -> Result<(), lanyard_store::Error> {
        let _guard = self.catching_up.lock().await;
        loop {
            let since = self.revision();
            let batch = store.entry_changes_since(since, CATCH_UP_CHUNK).await?;
            if batch.changes.is_empty() {
                return Ok(());
            }
            let full = batch.changes.len() >= CATCH_UP_CHUNK as usize;
            self.apply(batch.changes);
            if !full {
                return Ok(());
            }
        }
    }

    /// Applies one batch and queues it to the subscribers of the parents it touched.
    fn apply(&self, changes: Vec<EntryChange>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let subscribers = lock(&self.subscribers);
        let wanted = |parent: &str| subscribers.by_parent.contains_key(parent);
        let mut by_parent: HashMap<Arc<str>, ParentChanges> = HashMap::new();
        let mut aliases_changed = false;
        let server_id = self.server_id.as_str();
        for change in changes {
            state.revision = state.revision.max(change.revision());
            let key = EntryKey::new(change.entry_id());
            state.reserved.remove(&key);
            let served = match &change {
                EntryChange::Put(entry) => !entry.spiffe_id().is_reserved_for_lanyard(),
                EntryChange::Delete { .. } => false,
            };
            if let Some(old) = state.remove(&key) {
                aliases_changed |= &*old.parent_id == server_id;
                let moved = match &change {
                    EntryChange::Put(entry) => {
                        !served || entry.parent_id().as_str() != &*old.parent_id
                    }
                    EntryChange::Delete { .. } => true,
                };
                if moved && wanted(&old.parent_id) {
                    by_parent
                        .entry(old.parent_id)
                        .or_default()
                        .removed
                        .push(change.entry_id().clone());
                }
            }
            let EntryChange::Put(entry) = change else {
                continue;
            };
            if !served {
                tracing::warn!(
                    entry = %entry.id(),
                    spiffe_id = %entry.spiffe_id(),
                    "an entry in the datastore has an ID reserved for lanyard's server and agents; it is not served: delete it",
                );
                state.reserved.insert(key);
                continue;
            }
            let indexed = IndexedEntry::new(&entry, &mut state.strings);
            aliases_changed |= &*indexed.parent_id == server_id;
            if wanted(&indexed.parent_id) {
                by_parent
                    .entry(indexed.parent_id.clone())
                    .or_default()
                    .puts
                    .push(indexed.clone());
            }
            state.insert(indexed);
        }
        state.strings.maybe_sweep();
        let update = Arc::new(IndexUpdate {
            revision: state.revision,
            by_parent,
            aliases_changed,
        });
        subscribers.dispatch(&update);
    }

    /// Subscribes to the changes under the parents `agent` may serve at `now`, and returns them.
    /// Register before reading the entries to send: every batch applied after that read reaches
    /// the subscription.
    pub(crate) fn subscribe(
        &self,
        agent: &SpiffeId,
        agent_selectors: &SelectorSet,
        now: SystemTime,
    ) -> (Subscription, AliasGrants) {
        let state = self.read();
        let grants = state.grants(&self.server_id, agent, agent_selectors, now);
        let (tx, rx) = mpsc::channel(self.capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut subscribers = lock(&self.subscribers);
        let id = subscribers.next_id;
        subscribers.next_id += 1;
        subscribers.subs.insert(
            id,
            Subscriber {
                tx,
                lagged: lagged.clone(),
                parents: Vec::new(),
            },
        );
        subscribers.set_parents(id, &grants.parents);
        drop(subscribers);
        let subscription = Subscription {
            id,
            rx,
            lagged,
            subscribers: self.subscribers.clone(),
        };
        (subscription, grants)
    }

    /// Recomputes what node aliases grant `agent` at `now` and moves `subscription` to those
    /// parents, atomically with respect to batches being applied.
    pub(crate) fn resubscribe(
        &self,
        subscription: &Subscription,
        agent: &SpiffeId,
        agent_selectors: &SelectorSet,
        now: SystemTime,
    ) -> AliasGrants {
        let state = self.read();
        let grants = state.grants(&self.server_id, agent, agent_selectors, now);
        lock(&self.subscribers).set_parents(subscription.id, &grants.parents);
        grants
    }

    pub(crate) fn revision(&self) -> u64 {
        self.read().revision
    }

    /// Entries in the datastore: those served and those with a reserved ID.
    pub(crate) fn len(&self) -> usize {
        let state = self.read();
        state.ids.len() + state.reserved.len()
    }

    /// The entry `id`, built back into a [`RegistrationEntry`].
    pub(crate) fn get(&self, id: &EntryId) -> Option<RegistrationEntry> {
        let state = self.read();
        let slot = state.find(&EntryKey::new(id))?;
        state.slots[slot as usize].as_ref()?.to_entry()
    }

    /// The parents whose entries `agent` may serve at `now`: its own ID and every unexpired node
    /// alias whose selectors the agent has. No alias here has a reserved ID (see the module docs),
    /// so none makes an agent serve the entries of the server or of another agent.
    pub(crate) fn parents_of(
        &self,
        agent: &SpiffeId,
        agent_selectors: &SelectorSet,
        now: SystemTime,
    ) -> BTreeSet<SpiffeId> {
        self.grants(agent, agent_selectors, now).parents
    }

    /// What the node aliases grant `agent` at `now`, and when that changes next without a write.
    pub(crate) fn grants(
        &self,
        agent: &SpiffeId,
        agent_selectors: &SelectorSet,
        now: SystemTime,
    ) -> AliasGrants {
        self.read()
            .grants(&self.server_id, agent, agent_selectors, now)
    }

    /// Calls `f` with every entry under `parents` (in no particular order) and returns the
    /// index's revision, all under one read lock: the entries are exactly those of that revision.
    pub(crate) fn entries_under(
        &self,
        parents: &BTreeSet<SpiffeId>,
        mut f: impl FnMut(&IndexedEntry),
    ) -> u64 {
        let state = self.read();
        for slots in parents
            .iter()
            .filter_map(|p| state.by_parent.get(p.as_str()))
        {
            for entry in slots
                .iter()
                .filter_map(|&s| state.slots[s as usize].as_ref())
            {
                f(entry);
            }
        }
        state.revision
    }

    /// Calls `f` with each of `ids` and the entry it names, if the index has it; returns the
    /// index's revision, which the answers are exact for.
    pub(crate) fn visit(
        &self,
        ids: &[EntryId],
        mut f: impl FnMut(&EntryId, Option<&IndexedEntry>),
    ) -> u64 {
        let state = self.read();
        for id in ids {
            let entry = state
                .find(&EntryKey::new(id))
                .and_then(|s| state.slots[s as usize].as_ref());
            f(id, entry);
        }
        state.revision
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, IndexState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn lock(subscribers: &Mutex<Subscribers>) -> std::sync::MutexGuard<'_, Subscribers> {
    subscribers.lock().unwrap_or_else(|e| e.into_inner())
}

// === impl IndexState ===

impl IndexState {
    fn hash(&self, key: &EntryKey) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &EntryKey) -> Option<u32> {
        let slots = &self.slots;
        self.ids
            .find(self.hash(key), |&s| {
                slots[s as usize].as_ref().is_some_and(|e| &e.id == key)
            })
            .copied()
    }

    /// Removes the entry `key`, if present, and returns it.
    fn remove(&mut self, key: &EntryKey) -> Option<IndexedEntry> {
        let hash = self.hash(key);
        let Self {
            slots,
            ids,
            by_parent,
            free,
            ..
        } = self;
        let found = ids
            .find_entry(hash, |&s| {
                slots[s as usize].as_ref().is_some_and(|e| &e.id == key)
            })
            .ok()?;
        let (slot, _) = found.remove();
        let entry = slots[slot as usize].take()?;
        free.push(slot);
        if let Some(set) = by_parent.get_mut(&*entry.parent_id) {
            set.remove(&slot);
            if set.is_empty() {
                by_parent.remove(&*entry.parent_id);
            }
        }
        Some(entry)
    }

    /// Inserts an entry whose id is not in the index.
    fn insert(&mut self, entry: IndexedEntry) {
        let hash = self.hash(&entry.id);
        let parent = entry.parent_id.clone();
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                // More than 4 billion entries do not fit in memory long before this.
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(entry));
                slot
            }
        };
        let Self {
            slots, ids, hasher, ..
        } = self;
        ids.insert_unique(hash, slot, |&s| {
            slots[s as usize]
                .as_ref()
                .map_or(0, |e| hasher.hash_one(&e.id))
        });
        self.by_parent.entry(parent).or_default().insert(slot);
    }

    fn grants(
        &self,
        server_id: &SpiffeId,
        agent: &SpiffeId,
        agent_selectors: &SelectorSet,
        now: SystemTime,
    ) -> AliasGrants {
        let mut grants = AliasGrants {
            parents: BTreeSet::from([agent.clone()]),
            next_expiry: None,
            expired: false,
        };
        let Some(aliases) = self.by_parent.get(server_id.as_str()) else {
            return grants;
        };
        let held: HashSet<String> = agent_selectors.iter().map(ToString::to_string).collect();
        for alias in aliases
            .iter()
            .filter_map(|&s| self.slots[s as usize].as_ref())
        {
            if !alias.selectors.iter().all(|s| held.contains(&**s)) {
                continue;
            }
            if alias.is_expired(now) {
                grants.expired = true;
                continue;
            }
            // Parsed when indexed: it is an ID.
            let Ok(id) = SpiffeId::parse(&alias.spiffe_id) else {
                continue;
            };
            grants.parents.insert(id);
            if let Some(expiry) = alias.expires_at() {
                grants.next_expiry = Some(grants.next_expiry.map_or(expiry, |e| e.min(expiry)));
            }
        }
        grants
    }
}

// === impl Interner ===

impl Interner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.set.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.set.insert(shared.clone());
        shared
    }

    /// Drops the strings only the interner holds, once the set has doubled since the last sweep:
    /// amortized O(1) per string interned, and never more than twice the live strings.
    fn maybe_sweep(&mut self) {
        if self.set.len() >= (2 * self.swept).max(MIN_SWEEP) {
            self.sweep();
        }
    }

    fn sweep(&mut self) {
        self.set.retain(|s| Arc::strong_count(s) > 1);
        self.swept = self.set.len();
    }
}

// === impl Subscribers ===

impl Subscribers {
    fn set_parents(&mut self, id: u64, parents: &BTreeSet<SpiffeId>) {
        self.unlink(id);
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        sub.parents = parents.iter().map(|p| Box::from(p.as_str())).collect();
        for parent in &sub.parents {
            self.by_parent.entry(parent.clone()).or_default().insert(id);
        }
    }

    /// Takes `id` out of the parent lists (it stays subscribed to nothing).
    fn unlink(&mut self, id: u64) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        for parent in std::mem::take(&mut sub.parents) {
            if let Some(ids) = self.by_parent.get_mut(&parent) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_parent.remove(&parent);
                }
            }
        }
    }

    /// Queues `update` once to every subscriber of a parent it touched, or to all of them when a
    /// node alias changed. A full queue marks the subscriber lagged instead of waiting.
    fn dispatch(&self, update: &Arc<IndexUpdate>) {
        let send = |sub: &Subscriber| {
            if let Err(mpsc::error::TrySendError::Full(_)) = sub.tx.try_send(update.clone()) {
                sub.lagged.store(true, Ordering::Release);
            }
        };
        if update.aliases_changed {
            self.subs.values().for_each(send);
            return;
        }
        let mut sent = HashSet::new();
        for parent in update.by_parent.keys() {
            for id in self.by_parent.get(&**parent).into_iter().flatten() {
                if sent.insert(*id)
                    && let Some(sub) = self.subs.get(id)
                {
                    send(sub);
                }
            }
        }
    }
}

// === impl Subscription ===

impl Subscription {
    /// The next delivery; `None` once the index is gone. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<Delivery> {
        let update = self.rx.recv().await?;
        if self.lagged.swap(false, Ordering::Acquire) {
            // Everything queued is older than the full set the stream sends now.
            while self.rx.try_recv().is_ok() {}
            return Some(Delivery::Resync);
        }
        Some(Delivery::Update(update))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribers = lock(&self.subscribers);
        subscribers.unlink(self.id);
        subscribers.subs.remove(&self.id);
    }
}

// === impl IndexedEntry ===

impl IndexedEntry {
    fn new(entry: &RegistrationEntry, strings: &mut Interner) -> Self {
        let whole_secs = |d: Duration| {
            u32::try_from(d.as_secs())
                .ok()
                .filter(|_| d.subsec_nanos() == 0 && !d.is_zero())
        };
        let x509 = whole_secs(entry.x509_svid_ttl());
        let jwt = whole_secs(entry.jwt_svid_ttl());
        let plain = x509.is_some()
            && jwt.is_some()
            && entry.dns_names().is_empty()
            && entry.federates_with().is_empty()
            && entry.hint().is_empty()
            && entry.expires_at().is_none();
        let rare = (!plain).then(|| {
            Box::new(Rare {
                x509_ttl: entry.x509_svid_ttl(),
                jwt_ttl: entry.jwt_svid_ttl(),
                dns_names: entry.dns_names().to_vec(),
                federates_with: entry.federates_with().to_vec(),
                hint: entry.hint().into(),
                expires_at: entry.expires_at(),
            })
        });
        Self {
            id: EntryKey::new(entry.id()),
            spiffe_id: entry.spiffe_id().as_str().into(),
            parent_id: strings.intern(entry.parent_id().as_str()),
            selectors: entry
                .selectors()
                .iter()
                .map(|s| strings.intern(&s.to_string()))
                .collect(),
            revision: entry.revision(),
            x509_ttl_secs: x509.unwrap_or(0),
            jwt_ttl_secs: jwt.unwrap_or(0),
            admin: entry.admin(),
            downstream: entry.downstream(),
            rare,
        }
    }

    /// Builds the full entry back; `None` only if a field no longer parses, which cannot happen
    /// for fields taken from a [`RegistrationEntry`].
    pub(crate) fn to_entry(&self) -> Option<RegistrationEntry> {
        let selectors = self
            .selectors
            .iter()
            .map(|s| s.parse::<Selector>().ok())
            .collect::<Option<SelectorSet>>()?;
        let spec = EntrySpec {
            id: self.id.to_entry_id(),
            spiffe_id: SpiffeId::parse(&self.spiffe_id).ok()?,
            parent_id: SpiffeId::parse(&self.parent_id).ok()?,
            selectors,
            x509_svid_ttl: self.x509_svid_ttl(),
            jwt_svid_ttl: self.jwt_svid_ttl(),
            dns_names: self.dns_names().to_vec(),
            federates_with: self.federates_with().to_vec(),
            admin: self.admin,
            downstream: self.downstream,
            hint: self.hint().to_owned(),
            expires_at: self.expires_at(),
            revision: self.revision,
        };
        RegistrationEntry::new(spec).ok()
    }

    pub(crate) fn id(&self) -> EntryId {
        self.id.to_entry_id()
    }
    pub(crate) fn spiffe_id(&self) -> &str {
        &self.spiffe_id
    }
    pub(crate) fn parent_id(&self) -> &str {
        &self.parent_id
    }
    /// Each selector as `type:value`.
    pub(crate) fn selectors(&self) -> impl Iterator<Item = &str> {
        self.selectors.iter().map(|s| &**s)
    }
    pub(crate) fn x509_svid_ttl(&self) -> Duration {
        self.rare.as_ref().map_or_else(
            || Duration::from_secs(self.x509_ttl_secs.into()),
            |r| r.x509_ttl,
        )
    }
    pub(crate) fn jwt_svid_ttl(&self) -> Duration {
        self.rare.as_ref().map_or_else(
            || Duration::from_secs(self.jwt_ttl_secs.into()),
            |r| r.jwt_ttl,
        )
    }
    pub(crate) fn dns_names(&self) -> &[DnsName] {
        self.rare.as_ref().map_or(&[], |r| &r.dns_names)
    }
    pub(crate) fn federates_with(&self) -> &[TrustDomain] {
        self.rare.as_ref().map_or(&[], |r| &r.federates_with)
    }
    pub(crate) fn admin(&self) -> bool {
        self.admin
    }
    pub(crate) fn downstream(&self) -> bool {
        self.downstream
    }
    pub(crate) fn hint(&self) -> &str {
        self.rare.as_ref().map_or("", |r| &r.hint)
    }
    pub(crate) fn expires_at(&self) -> Option<SystemTime> {
        self.rare.as_ref().and_then(|r| r.expires_at)
    }
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }
    pub(crate) fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at().is_some_and(|at| at <= now)
    }
}

// === impl EntryKey ===

impl EntryKey {
    fn new(id: &EntryId) -> Self {
        let s = id.as_str();
        let mut bytes = [0u8; 16];
        let hex = s.len() == 32
            && s.as_bytes().chunks(2).zip(&mut bytes).all(|(pair, byte)| {
                match (lower_hex(pair[0]), lower_hex(pair[1])) {
                    (Some(hi), Some(lo)) => {
                        *byte = hi << 4 | lo;
                        true
                    }
                    _ => false,
                }
            });
        if hex {
            Self::Hex(bytes)
        } else {
            Self::Text(s.into())
        }
    }

    #[allow(
        clippy::expect_used,
        reason = "a key is made from an EntryId or is 32 lowercase hex digits: always a valid id"
    )]
    fn to_entry_id(&self) -> EntryId {
        let text = match self {
            Self::Hex(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
            Self::Text(text) => text.to_string(),
        };
        // Made from an `EntryId` (Text), or 32 lowercase hex digits (Hex): a valid id either way.
        EntryId::new(&text).expect("an index key is a valid entry id")
    }
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
