//! lanyard's datastore: registration entries, attested agents, join tokens, trust bundles, CA
//! journals, the audit log with its checkpoints, and tasks, on SQLite (one file, the default) or
//! PostgreSQL (several servers on one database).
//!
//! The server opens a store with [`open`] (or [`connect`]) from a URL and holds it as an
//! `Arc<dyn` [`DataStore`]`>`. Schema migrations are applied at open. Each write is one
//! transaction; a write that returned `Ok` survives a crash of the process (see `docs/store.md`
//! for the durability settings and the revision model).
//!
//! Layout: [`DataStore`] (the trait) in `datastore`; the records, filters and pages in `model`;
//! the implementation in `sql` (one module per kind of record) over `db`, a thin layer that lets
//! the same SQL run on both sqlx drivers; value conversions in `codec`; `feed`, the notices of
//! other servers' writes on a shared PostgreSQL database ([`DataStore::change_feed`]).
//!
//! The store parses every row it reads with lanyard-core's rules and refuses a row that fails
//! ([`Error::InvalidData`]); it does not decide policy (which trust domain an entry may name,
//! whether an agent may attest): that is the server's job.

mod codec;
mod datastore;
mod db;
mod error;
mod feed;
mod model;
mod sql;

pub use datastore::DataStore;
pub use error::{Error, Result};
pub use feed::{CHANNEL, ChangeFeed, Changes, NOTIFIED_AUDIT_KINDS};
pub use model::{
    AgentFilter, AgentInfo, AgentRenewal, Approval, ApprovalState, AttestedAgent, AuditAppend,
    AuditFilter, AuditRow, Backend, BundleRecord, BundleWrite, CaJournal, EntryChange,
    EntryChanges, EntryFilter, JoinTokenGrant, Page, PageRequest, SelectorFilter, SelectorMatch,
    ServerInfo, ServerRecord, StoredCheckpoint, TaskFilter, TaskRecord,
};
pub use sql::{StoreConfig, connect, open};
