//! The [`DataStore`] trait: everything the server keeps, behind one object-safe interface so that
//! the backend is chosen at run time from a URL.

use std::fmt;

use async_trait::async_trait;
use lanyard_core::{EntryId, RegistrationEntry, SpiffeId, TrustDomain};

use crate::{
    AgentFilter, AgentInfo, AgentRenewal, Approval, ApprovalState, AttestedAgent, AuditAppend,
    AuditFilter, AuditRow, Backend, BundleRecord, BundleWrite, CaJournal, EntryChanges,
    EntryFilter, JoinTokenGrant, Page, PageRequest, Result, ServerInfo, ServerRecord,
    StoredCheckpoint, TaskFilter, TaskRecord,
};

/// The server's durable state. Every method that writes is one transaction: it happens entirely
/// or not at all, and once it has returned `Ok` it survives a crash of the process.
///
/// Times written by the store (`created_at`, `updated_at`, token use) come from the store's
/// injected clock; times are kept to the microsecond.
#[async_trait]
pub trait DataStore: Send + Sync + fmt::Debug {
    /// Which database this store runs on.
    fn backend(&self) -> Backend;

    /// Answers once the database answers a query (for readiness checks).
    async fn ping(&self) -> Result<()>;

    /// Closes every connection, waiting for in-flight operations to finish. Later calls fail.
    async fn close(&self);

    /// Subscribes to notices of writes other servers must act on (entries, bundles, audit
    /// records of [`NOTIFIED_AUDIT_KINDS`](crate::NOTIFIED_AUDIT_KINDS)); returns once subscribed,
    /// so a reader that catches up after this call misses nothing. PostgreSQL only: on SQLite
    /// the feed yields nothing until the store closes. `Listen` if the subscription fails,
    /// `Closed` after [`close`](Self::close).
    async fn change_feed(&self) -> Result<crate::ChangeFeed>;

    // --- registration entries ---

    /// Creates entries in one transaction and returns one result per input, in order: the stored
    /// entry with its new revision, or why that item was refused (`AlreadyExists` when its id or
    /// its (spiffe_id, parent_id, selectors) is taken, also by an earlier item of the same
    /// batch). The `revision` of the inputs is ignored. The outer error means nothing was written.
    async fn create_entries(
        &self,
        entries: Vec<RegistrationEntry>,
    ) -> Result<Vec<Result<RegistrationEntry>>>;

    /// Creates one entry (a batch of one).
    async fn create_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry> {
        let mut results = self.create_entries(vec![entry]).await?;
        match results.pop() {
            Some(result) => result,
            // create_entries returns exactly one result per input.
            None => Err(crate::Error::InvalidArgument {
                field: "entries",
                reason: "the store returned no result for the entry".to_owned(),
            }),
        }
    }

    async fn get_entry(&self, id: &EntryId) -> Result<Option<RegistrationEntry>>;

    /// Entries matching `filter`, ordered by id.
    async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &PageRequest,
    ) -> Result<Page<RegistrationEntry>>;

    async fn count_entries(&self) -> Result<u64>;

    /// Replaces every field of the entry with the same id and gives it a new revision (the input's
    /// revision is ignored). `NotFound` if there is no such entry; `AlreadyExists` if another
    /// entry has the new (spiffe_id, parent_id, selectors).
    async fn update_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry>;

    /// Deletes entries in one transaction; one result per input, in order (`NotFound` for an
    /// unknown id, or an id named twice). Each deletion gets a revision and a tombstone.
    async fn delete_entries(&self, ids: &[EntryId]) -> Result<Vec<Result<()>>>;

    /// The revision of the latest entry write (0 for an empty store).
    async fn current_revision(&self) -> Result<u64>;

    /// Entry writes after `revision`, oldest first, at most `limit` (0: no limit), read from one
    /// snapshot. To keep up, call again with the revision of the last change returned.
    /// `ChangesUnavailable` if the tombstones needed were pruned or `revision` is in the future.
    async fn entry_changes_since(&self, revision: u64, limit: u32) -> Result<EntryChanges>;

    /// Forgets deletions at or below `revision` (clamped to the current revision); afterwards
    /// `entry_changes_since` refuses older revisions. Returns how many tombstones were removed.
    async fn prune_entry_tombstones(&self, revision: u64) -> Result<u64>;

    // --- attested agents ---

    /// Records a newly attested agent (not banned). `AlreadyExists` if its SPIFFE ID is known.
    async fn create_agent(&self, agent: &AgentInfo) -> Result<AttestedAgent>;

    /// Replaces the attestation type, SVID serial, expiry and selectors of a known agent after it
    /// attested again, and forgets any pending renewed serial: every SVID issued before is
    /// refused from then on. Leaves `banned` alone.
    async fn update_agent(&self, agent: &AgentInfo) -> Result<AttestedAgent>;

    /// Records a renewed agent SVID as pending, if the agent renewed with its current serial and
    /// is not banned (`Conflict` otherwise). The current serial stays accepted until
    /// [`promote_agent_serial`](Self::promote_agent_serial).
    async fn renew_agent(&self, renewal: &AgentRenewal) -> Result<AttestedAgent>;

    /// Makes the pending serial current if it is `serial`, retiring the old one; false if the
    /// pending serial is not `serial` (already promoted by a concurrent call, or replaced).
    async fn promote_agent_serial(&self, id: &SpiffeId, serial: &str) -> Result<bool>;

    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AttestedAgent>>;

    /// Agents matching `filter`, ordered by SPIFFE ID.
    async fn list_agents(
        &self,
        filter: &AgentFilter,
        page: &PageRequest,
    ) -> Result<Page<AttestedAgent>>;

    async fn count_agents(&self) -> Result<u64>;

    /// Evicts an agent: its record goes, so it must attest again (and may, even if it was banned).
    async fn delete_agent(&self, id: &SpiffeId) -> Result<()>;

    /// Bans an agent: the record stays, marked so that it can neither renew nor attest again.
    async fn ban_agent(&self, id: &SpiffeId) -> Result<AttestedAgent>;

    // --- join tokens ---

    /// Stores a join token (only its SHA-256) that expires at `expires_at`, optionally for one
    /// agent SPIFFE ID.
    async fn create_join_token(
        &self,
        token: &str,
        spiffe_id: Option<&SpiffeId>,
        expires_at: std::time::SystemTime,
    ) -> Result<()>;

    /// Uses a join token, atomically: of any number of concurrent calls with one token at most one
    /// succeeds. Errors: `JoinTokenNotFound`, `JoinTokenUsed`, `JoinTokenExpired`.
    async fn consume_join_token(&self, token: &str) -> Result<JoinTokenGrant>;

    /// Removes tokens that have expired (used or not) and tokens used before `used_before`;
    /// returns how many.
    async fn prune_join_tokens(&self, used_before: std::time::SystemTime) -> Result<u64>;

    // --- bundles ---

    /// Stores the bundle of `trust_domain` (this server's own or a federated one).
    async fn set_bundle(
        &self,
        trust_domain: &TrustDomain,
        document: &str,
        sequence: u64,
        mode: BundleWrite,
    ) -> Result<BundleRecord>;

    async fn get_bundle(&self, trust_domain: &TrustDomain) -> Result<Option<BundleRecord>>;

    /// Every stored bundle, ordered by trust domain.
    async fn list_bundles(&self) -> Result<Vec<BundleRecord>>;

    async fn delete_bundle(&self, trust_domain: &TrustDomain) -> Result<()>;

    // --- CA journal ---

    async fn get_ca_journal(&self, server_id: &str) -> Result<Option<CaJournal>>;

    /// Every server's CA journal, ordered by server id: the trust domain's bundle is the union
    /// of their authorities.
    async fn list_ca_journals(&self) -> Result<Vec<CaJournal>>;

    /// Writes a server's CA journal if its stored version is `expected_version` (`None`: there
    /// must be none yet); returns the new version. `Conflict` if another writer got there first.
    async fn put_ca_journal(
        &self,
        server_id: &str,
        data: &[u8],
        expected_version: Option<u64>,
    ) -> Result<u64>;

    // --- servers ---

    /// Records that `server` is alive now (`last_seen` from the store's clock), creating its row
    /// on its first beat. `signs_until` never moves back: a beat that names an earlier time
    /// keeps the later one, since credentials already handed out do not expire sooner.
    async fn server_heartbeat(&self, server: &ServerInfo) -> Result<ServerRecord>;

    /// Every server that has ever beaten on this datastore, ordered by id.
    async fn list_servers(&self) -> Result<Vec<ServerRecord>>;

    // --- audit log ---

    /// Appends a record to the audit log; returns it with its `seq` (one above the last, from 0)
    /// and `time` (the store's clock). `InvalidArgument` if `kind` is empty, or `kind`, `actor` or
    /// `subject` is longer than 2048 bytes (they are indexed).
    async fn append_audit(&self, record: &AuditAppend) -> Result<AuditRow>;

    /// Appends several records in one transaction, with consecutive seqs, in order: all or none.
    async fn append_audits(&self, records: &[AuditAppend]) -> Result<Vec<AuditRow>>;

    /// Records matching `filter` in `seq` order, at most `limit` (0: no limit).
    async fn list_audit(&self, filter: &AuditFilter, limit: u32) -> Result<Vec<AuditRow>>;

    /// The number of records ever appended (the next `seq`). Read from the counter, not by
    /// counting rows: a deleted row does not change it.
    async fn audit_size(&self) -> Result<u64>;

    /// Stores a signed checkpoint. A second checkpoint with the same (signer, size) is ignored.
    /// Its `created_at` is ignored too: the store sets it from its clock. `InvalidArgument` if
    /// `leaf_hashes` is not a whole number of 32-byte hashes, or has more than `size` of them.
    async fn append_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<()>;

    /// Checkpoints in (size, signer) order, only `signer`'s if given, starting after the
    /// (size, signer) `after` (exclusive; `None`: from the first), at most `limit` (0: no limit).
    async fn list_checkpoints(
        &self,
        signer: Option<&str>,
        after: Option<(u64, &str)>,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>>;

    /// The largest checkpoint `signer` stored, if any.
    async fn latest_checkpoint(&self, signer: &str) -> Result<Option<StoredCheckpoint>>;

    // --- tasks ---

    /// Stores a granted task and appends its audit record in the same transaction: a task is
    /// never granted without its record. `AlreadyExists` if the id (or the token id) is taken,
    /// and then nothing is appended.
    async fn create_task(&self, task: &TaskRecord, audit: &AuditAppend) -> Result<AuditRow>;

    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>>;

    /// Ends a task now, and every task delegated from it at any depth (their tokens are revoked
    /// from then on), appending one copy of `audit` per task ended (subject: that task's id) in
    /// the same transaction. Returns the task and the records; tasks that had ended already are
    /// left as they are and get no record. `NotFound` for an unknown id.
    async fn end_task(&self, id: &str, audit: &AuditAppend) -> Result<(TaskRecord, Vec<AuditRow>)>;

    // --- approvals ---

    /// Stores a pending approval and appends its audit record in the same transaction.
    async fn create_approval(&self, approval: &Approval, audit: &AuditAppend) -> Result<AuditRow>;

    async fn get_approval(&self, id: &str) -> Result<Option<Approval>>;

    /// Approvals still pending, oldest first, at most 1,000.
    async fn pending_approvals(&self) -> Result<Vec<Approval>>;

    /// Moves an approval from `from` to `to` (with who and why, and the task granted when `to` is
    /// `Granted`), appending `audit` in the same transaction. `Conflict` if it is not in `from`
    /// any more (decided by someone else, or granted already); `NotFound` if unknown.
    #[allow(
        clippy::too_many_arguments,
        reason = "one conditional transition: every part is named at the call"
    )]
    async fn decide_approval(
        &self,
        id: &str,
        from: ApprovalState,
        to: ApprovalState,
        decided_by: &str,
        reason: &str,
        task_id: Option<&str>,
        audit: &AuditAppend,
    ) -> Result<Approval>;

    /// Token ids of ended tasks whose tokens have not expired at `now`, with their expiries.
    async fn revoked_tokens(
        &self,
        now: std::time::SystemTime,
    ) -> Result<Vec<(String, std::time::SystemTime)>>;

    /// Tasks matching `filter`, ordered by id. `InvalidArgument` if it names more than 1000
    /// SPIFFE IDs.
    async fn list_tasks(&self, filter: &TaskFilter, page: &PageRequest)
    -> Result<Page<TaskRecord>>;
}
