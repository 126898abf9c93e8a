//! The records the store holds besides registration entries (which are lanyard-core's
//! [`RegistrationEntry`]), and the filter, paging and change types of its API.

use std::time::SystemTime;

use lanyard_core::{EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// The `next_token` of the previous page, or `None` for the first page. Opaque to callers.
    pub token: Option<String>,
    /// Most items to return; 0 means no limit (everything after `token`).
    pub size: u32,
}

/// A page of results, in a stable order (entries by id, agents by SPIFFE ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as [`PageRequest::token`] to get the next page; `None` when this is the last page.
    pub next_token: Option<String>,
}

/// How an entry's selectors must relate to the selectors of a filter (SPIRE's match behaviours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectorMatch {
    /// The entry's selectors are exactly the given ones.
    Exact,
    /// The entry's selectors are a subset of the given ones: the entries a caller with the given
    /// selectors may be served.
    Subset,
    /// The entry's selectors include all of the given ones.
    Superset,
    /// The entry has at least one of the given selectors.
    Any,
}

/// A selector condition of an entry listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorFilter {
    pub selectors: SelectorSet,
    pub mode: SelectorMatch,
}

/// Conditions of an entry listing; all that are set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    pub spiffe_id: Option<SpiffeId>,
    pub parent_id: Option<SpiffeId>,
    pub selectors: Option<SelectorFilter>,
}

/// One change to the set of registration entries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every change is a Put; boxing would cost an allocation per change"
)]
pub enum EntryChange {
    /// The entry was created or updated; it carries its new revision.
    Put(RegistrationEntry),
    /// The entry was deleted at `revision`.
    Delete { id: EntryId, revision: u64 },
}

/// The answer to "what changed after revision N".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryChanges {
    /// In revision order. An entry changed several times appears once, with its latest state.
    pub changes: Vec<EntryChange>,
    /// The store's revision when the changes were read. When `changes` was not cut short by the
    /// limit, a reader that applied them is up to date as of this revision.
    pub current_revision: u64,
}

/// What node attestation established about an agent; the input of agent creates and updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// The agent's SPIFFE ID (`spiffe://<td>/lanyard/agent/<attestor>/<id>`).
    pub spiffe_id: SpiffeId,
    /// The node attestor that vouched for it (`join_token`, `x509pop`).
    pub attestation_type: String,
    /// Serial number of the agent's current SVID, as the server formats it.
    pub serial: String,
    /// When the agent's current SVID expires.
    pub expires_at: SystemTime,
    /// Selectors the node attestor produced for the node.
    pub selectors: SelectorSet,
}

/// A renewed agent SVID, recorded as pending until the agent presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRenewal {
    pub spiffe_id: SpiffeId,
    /// The serial of the SVID the agent renewed with; it must be the record's current serial.
    pub presented_serial: String,
    /// The serial of the renewed SVID.
    pub new_serial: String,
    /// When the renewed SVID expires.
    pub expires_at: SystemTime,
}

/// An attested agent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedAgent {
    pub spiffe_id: SpiffeId,
    pub attestation_type: String,
    /// The serial of the agent SVID the server accepts.
    pub serial: String,
    /// The serial of a renewed SVID the agent has not presented yet, also accepted; the first call
    /// with it makes it [`serial`](Self::serial).
    pub new_serial: Option<String>,
    pub expires_at: SystemTime,
    pub selectors: SelectorSet,
    /// A banned agent keeps its record so that it cannot attest again; evicting (deleting) the
    /// record lifts the ban.
    pub banned: bool,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// Conditions of an agent listing; all that are set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    pub banned: Option<bool>,
    pub attestation_type: Option<String>,
    /// Only agents whose SVID expires strictly before this time.
    pub expires_before: Option<SystemTime>,
}

/// What consuming a join token yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenGrant {
    /// The SPIFFE ID the token was created for, if any.
    pub spiffe_id: Option<SpiffeId>,
    pub expires_at: SystemTime,
}

/// Whether a bundle write may replace a stored bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BundleWrite {
    /// Replace only a bundle with a lower sequence number (or none): a late writer carrying an
    /// old bundle is refused with [`Error::Conflict`](crate::Error::Conflict).
    IfNewer,
    /// Replace whatever is stored (an administrator setting a federated bundle by hand).
    Unconditional,
}

/// A trust bundle as stored: the SPIFFE bundle JSON document is kept as text and parsed by the
/// caller (`lanyard_core::Bundle::parse_json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRecord {
    pub trust_domain: TrustDomain,
    pub document: String,
    pub sequence: u64,
    pub updated_at: SystemTime,
}

/// One server's CA journal: an opaque blob owned by lanyard-ca.
#[derive(Clone, PartialEq, Eq)]
pub struct CaJournal {
    pub server_id: String,
    pub data: Vec<u8>,
    /// Starts at 1 and grows by one with each write; writers pass the version they read.
    pub version: u64,
    pub updated_at: SystemTime,
}

/// What a server says about itself at each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The id that names its CA journal (16 hex digits, kept in its data directory).
    pub server_id: String,
    /// Where its node API listens (`host:port`).
    pub node_address: String,
    /// Where its `/ready` is served, if anywhere.
    pub health_address: Option<String>,
    /// The lanyard version it runs.
    pub version: String,
    pub started_at: SystemTime,
    /// When its active X.509 authority expires.
    pub ca_expires_at: Option<SystemTime>,
    /// No credential it has handed out (or will before its next beat) is valid after this.
    pub signs_until: SystemTime,
}

/// A server as of its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    pub info: ServerInfo,
    /// When it last beat, by the store's clock.
    pub last_seen: SystemTime,
}

/// An audit record to append; the store gives it its `seq` and `time`.
///
/// The store keeps the fields verbatim; the server builds them with `lanyard_policy::audit`'s
/// bounds (kind ≤ 64 bytes, actor and subject ≤ 2048, details ≤ 64 KiB of canonical JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditAppend {
    /// What happened, a short dotted name (`entry.created`, `task.granted`).
    pub kind: String,
    /// Who did it (a SPIFFE ID, `admin:uid=0`, `server:<id>`).
    pub actor: String,
    /// What it was done to (an entry id, a SPIFFE ID, a task id).
    pub subject: String,
    /// Canonical JSON text, stored and returned byte for byte.
    pub details: String,
}

/// One record of the audit log as stored: leaf `seq` of the Merkle log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// 0, 1, 2, … in commit order, without gaps: "records after N" never skips one.
    pub seq: u64,
    /// When the store appended it, to the microsecond.
    pub time: SystemTime,
    pub kind: String,
    pub actor: String,
    pub subject: String,
    pub details: String,
}

/// Conditions of an audit listing; all that are set must hold. Results are in `seq` order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only records with `seq` at or above this.
    pub from_seq: u64,
    pub kind: Option<String>,
    pub actor: Option<String>,
    pub subject: Option<String>,
    /// Only records written at or after this time.
    pub since: Option<SystemTime>,
}

/// A signed checkpoint of the audit log, as one server signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The number of records it covers.
    pub size: u64,
    /// The signing key's name (one per server).
    pub signer: String,
    /// The signed note, as text.
    pub note: String,
    /// The leaf hashes of the records this checkpoint adds to the signer's previous one, 32
    /// bytes each, in seq order (records `size - leaf_hashes.len()/32 .. size`). They let a
    /// verifier name the exact record that changed, not only the range between checkpoints.
    pub leaf_hashes: Vec<u8>,
    pub created_at: SystemTime,
}

/// A task: a credential granted to one workload for one tool and a few operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Random, unique (`txn` in the token).
    pub id: String,
    /// The workload it was granted to (`sub` of the token).
    pub spiffe_id: SpiffeId,
    /// The entry through which the workload holds `spiffe_id`.
    pub entry_id: EntryId,
    /// The agent that asked for it on the workload's behalf.
    pub agent_id: SpiffeId,
    /// The one tool (`aud` of the token).
    pub audience: String,
    /// Granted operations, in the order asked.
    pub operations: Vec<String>,
    /// `""` if none given.
    pub purpose: String,
    /// `""` if the task acts for no one else.
    pub on_behalf_of: String,
    /// The policies that allowed it, sorted.
    pub policy_ids: Vec<String>,
    /// `jti` of the token.
    pub token_id: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    /// When the task was ended early (by `EndTask`), if it was.
    pub ended_at: Option<SystemTime>,
    /// The task this one was delegated from (begun with its token), if any.
    pub parent_id: Option<String>,
    /// Hops from the root task: 0 for a task begun without a parent.
    pub depth: u32,
}

/// A task grant waiting for a human's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Random, unique.
    pub id: String,
    /// The workload that asked.
    pub spiffe_id: SpiffeId,
    /// The task request as JSON (kept verbatim; the server reads it back).
    pub request: String,
    /// The policies that allowed it and asked for approval, sorted.
    pub policy_ids: Vec<String>,
    pub state: ApprovalState,
    /// Who decided (`admin:uid=N`), `""` while pending.
    pub decided_by: String,
    /// The reason given with a denial.
    pub reason: String,
    /// The task granted once it was approved and the caller came back for it.
    pub task_id: Option<String>,
    pub created_at: SystemTime,
    /// Undecided by then, it is refused.
    pub expires_at: SystemTime,
    pub decided_at: Option<SystemTime>,
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    /// Approved, and the task was granted (once).
    Granted,
}

/// Conditions of a task listing; all that are set must hold. Results are ordered by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks granted to one of these SPIFFE IDs; empty means any.
    pub spiffe_ids: Vec<SpiffeId>,
    pub audience: Option<String>,
}

// === impl EntryChange ===

impl EntryChange {
    /// The revision at which this change was written.
    pub fn revision(&self) -> u64 {
        match self {
            Self::Put(entry) => entry.revision(),
            Self::Delete { revision, .. } => *revision,
        }
    }

    /// The id of the entry that changed.
    pub fn entry_id(&self) -> &EntryId {
        match self {
            Self::Put(entry) => entry.id(),
            Self::Delete { id, .. } => id,
        }
    }
}

// === impl CaJournal ===

impl std::fmt::Debug for CaJournal {
    // The journal may hold key material references; print its size, not its bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaJournal")
            .field("server_id", &self.server_id)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .field("version", &self.version)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}
