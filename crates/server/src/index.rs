//! The in-memory index of registration entries that lets the server answer "which entries may this
//! agent serve" and push changes to agents without touching the database per agent.
//!
//! The index follows the datastore's revision log: [`EntryIndex::catch_up`] reads the changes
//! after the index's revision (one query, whoever wrote them) and applies them in revision order,
//! then broadcasts them. The server calls it right after each of its own writes, so a new entry
//! reaches connected agents at once; a periodic call picks up writes of other servers sharing a
//! PostgreSQL database.
//!
//! An entry whose own SPIFFE ID is reserved for lanyard (`spiffe://<td>/lanyard/…`) never enters
//! the index: the admin API refuses such entries, so only a row written around it (by an older
//! version, or by hand) can carry one. Kept out here, it is never pushed, minted, nor taken as a
//! node alias (an alias named like the server or an agent would hand out their entries); the
//! admin API, which reads the datastore, still lists it so that it can be deleted.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use lanyard_core::{EntryId, RegistrationEntry, SelectorSet, SpiffeId};
use lanyard_store::{DataStore, EntryChange};
use tokio::sync::{Mutex, broadcast};

/// How many change batches a slow sync stream may fall behind before it must resync in full.
const BROADCAST_CAPACITY: usize = 1024;
/// Changes read from the store per query while catching up.
const CATCH_UP_CHUNK: u32 = 10_000;

/// One applied batch of changes, as broadcast to sync streams.
#[derive(Debug)]
pub(crate) struct IndexUpdate {
    /// The index's revision after this batch.
    pub(crate) revision: u64,
    /// The ids that changed (created, updated or deleted) in this batch.
    pub(crate) changed: Vec<EntryId>,
    /// The created or updated entries, grouped by parent: a stream looks at its agent's parents
    /// only, instead of every change (1,000 streams × a 1,000-entry batch would otherwise be a
    /// million lookups).
    pub(crate) puts_by_parent: HashMap<SpiffeId, Vec<RegistrationEntry>>,
    /// True if a node-alias entry changed: agents' alias memberships must be recomputed.
    pub(crate) aliases_changed: bool,
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

/// The entries of the datastore, indexed by id and by parent.
#[derive(Debug)]
pub(crate) struct EntryIndex {
    /// Parents of node-alias entries: an entry whose parent is this ID groups agents by selectors.
    server_id: SpiffeId,
    state: RwLock<IndexState>,
    /// Serializes catch-ups so changes are applied once and in order.
    catching_up: Mutex<()>,
    updates: broadcast::Sender<Arc<IndexUpdate>>,
}

#[derive(Debug, Default)]
struct IndexState {
    revision: u64,
    by_id: HashMap<EntryId, RegistrationEntry>,
    by_parent: HashMap<SpiffeId, BTreeSet<EntryId>>,
}

impl EntryIndex {
    /// Loads every entry from the store.
    pub(crate) async fn load(
        store: &dyn DataStore,
        server_id: SpiffeId,
    ) -> Result<Self, lanyard_store::Error> {
        let (updates, _) = broadcast::channel(BROADCAST_CAPACITY);
        let index = Self {
            server_id,
            state: RwLock::new(IndexState::default()),
            catching_up: Mutex::new(()),
            updates,
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
            let update = self.apply(batch.changes);
            // No subscriber is fine: nobody is syncing.
            let _ = self.updates.send(Arc::new(update));
            if !full {
                return Ok(());
            }
        }
    }

    fn apply(&self, changes: Vec<EntryChange>) -> IndexUpdate {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::with_capacity(changes.len());
        let mut puts_by_parent: HashMap<SpiffeId, Vec<RegistrationEntry>> = HashMap::new();
        let mut aliases_changed = false;
        for change in changes {
            state.revision = state.revision.max(change.revision());
            let id = change.entry_id().clone();
            if let Some(old) = state.by_id.remove(&id) {
                aliases_changed |= old.parent_id() == &self.server_id;
                remove_from_parent(&mut state.by_parent, old.parent_id(), &id);
            }
            if let EntryChange::Put(entry) = change {
                if entry.spiffe_id().is_reserved_for_lanyard() {
                    tracing::warn!(
                        entry = %id,
                        spiffe_id = %entry.spiffe_id(),
                        "an entry in the datastore has an ID reserved for lanyard's server and agents; it is not served: delete it",
                    );
                    changed.push(id);
                    continue;
                }
                aliases_changed |= entry.parent_id() == &self.server_id;
                state
                    .by_parent
                    .entry(entry.parent_id().clone())
                    .or_default()
                    .insert(id.clone());
                puts_by_parent
                    .entry(entry.parent_id().clone())
                    .or_default()
                    .push(entry.clone());
                state.by_id.insert(id.clone(), entry);
            }
            changed.push(id);
        }
        IndexUpdate {
            revision: state.revision,
            changed,
            puts_by_parent,
            aliases_changed,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<IndexUpdate>> {
        self.updates.subscribe()
    }

    pub(crate) fn revision(&self) -> u64 {
        self.read().revision
    }

    pub(crate) fn get(&self, id: &EntryId) -> Option<RegistrationEntry> {
        self.read().by_id.get(id).cloned()
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
        let state = self.read();
        let mut grants = AliasGrants {
            parents: BTreeSet::from([agent.clone()]),
            next_expiry: None,
            expired: false,
        };
        if let Some(aliases) = state.by_parent.get(&self.server_id) {
            for alias in aliases.iter().filter_map(|id| state.by_id.get(id)) {
                if !alias.selectors().is_subset(agent_selectors) {
                    continue;
                }
                if alias.is_expired(now) {
                    grants.expired = true;
                    continue;
                }
                grants.parents.insert(alias.spiffe_id().clone());
                if let Some(expiry) = alias.expires_at() {
                    grants.next_expiry = Some(grants.next_expiry.map_or(expiry, |e| e.min(expiry)));
                }
            }
        }
        grants
    }

    /// Every entry under `parents`, with the index's revision.
    pub(crate) fn entries_under(
        &self,
        parents: &BTreeSet<SpiffeId>,
    ) -> (Vec<RegistrationEntry>, u64) {
        let state = self.read();
        let entries = parents
            .iter()
            .filter_map(|p| state.by_parent.get(p))
            .flatten()
            .filter_map(|id| state.by_id.get(id).cloned())
            .collect();
        (entries, state.revision)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, IndexState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn remove_from_parent(
    by_parent: &mut HashMap<SpiffeId, BTreeSet<EntryId>>,
    parent: &SpiffeId,
    id: &EntryId,
) {
    if let Some(ids) = by_parent.get_mut(parent) {
        ids.remove(id);
        if ids.is_empty() {
            by_parent.remove(parent);
        }
    }
}
