//! The one error type of the store.
//!
//! Messages name what was wrong in the caller's terms (an entry id, a trust domain). They never
//! contain SQL text, bound values that are secrets (join tokens), or connection passwords; the
//! driver's error, where there is one, is kept as the `source`.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The record does not exist (for example an update or delete of an unknown entry).
    #[error("{kind} `{key}` not found")]
    NotFound { kind: &'static str, key: String },

    /// A record with the same key exists. For registration entries `key` is the id of the stored
    /// entry that clashes: either the same id, or the same (spiffe_id, parent_id, selectors).
    #[error("{kind} `{key}` already exists")]
    AlreadyExists { kind: &'static str, key: String },

    /// The write lost a race or was stale: a CA journal whose version moved on, a bundle whose
    /// sequence is not newer than the stored one.
    #[error("{kind} `{key}`: {detail}")]
    Conflict {
        kind: &'static str,
        key: String,
        detail: String,
    },

    /// The join token is not known (never created, or pruned after it expired).
    #[error("join token not found")]
    JoinTokenNotFound,

    /// The join token was already used; each token attests one node.
    #[error("join token was already used")]
    JoinTokenUsed,

    /// The join token has expired.
    #[error("join token has expired")]
    JoinTokenExpired,

    /// "Changes since revision N" cannot be answered: the tombstones it needs were pruned, or N is
    /// ahead of the store (a reader of another database). The reader lists all entries instead.
    #[error(
        "entry changes since revision {requested} are not available (the store has revisions {oldest} to {current}); list all entries instead"
    )]
    ChangesUnavailable {
        requested: u64,
        oldest: u64,
        current: u64,
    },

    /// A stored row does not parse as a lanyard-core value (edited by hand, or written by a newer
    /// version). Nothing is served from it.
    #[error("stored {kind} `{key}` is invalid: {reason}")]
    InvalidData {
        kind: &'static str,
        key: String,
        reason: String,
    },

    /// A request the store cannot carry out as asked (a malformed page token, a value out of the
    /// range the schema holds).
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },

    /// The datastore URL is not one the store understands.
    #[error(
        "datastore URL `{url}`: {reason} (expected sqlite://PATH or postgres://USER@HOST:PORT/DB)"
    )]
    InvalidUrl { url: String, reason: String },

    /// The SQLite file could not be created with owner-only permissions.
    #[error("cannot create the datastore file `{path}`")]
    CreateFile {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The database did not answer, refused the credentials, or the pool timed out.
    #[error("cannot connect to the datastore at `{url}`")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// Applying the schema migrations failed (for example a database written by a newer lanyard).
    #[error("cannot apply the datastore schema migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),

    /// The change feed's connection to the datastore failed or dropped. Notices sent since are
    /// lost: subscribe again, then catch up.
    #[error("the change feed lost its connection to the datastore")]
    Listen(#[source] sqlx::Error),

    /// The store was closed (or the change feed ended already).
    #[error("the datastore is closed")]
    Closed,

    /// Any other database failure.
    #[error("datastore operation failed")]
    Database(#[source] sqlx::Error),
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(source: sqlx::Error) -> Self {
        Self::Database(source)
    }
}
