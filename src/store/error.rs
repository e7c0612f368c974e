//! The store's one error type. Refusals are typed (worded at the HTTP edge); everything else
//! keeps the driver's error as its source, so the edge logs the whole cause chain once.

use std::sync::Arc;

use crate::domain::Refusal;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A well-formed request that the stored state refuses (404 / 409 at the edge).
    #[error("refused: {0:?}")]
    Refused(Refusal),
    /// The database cannot be reached or cannot take writes now (connection refused or lost, a
    /// read-only standby during failover, pool exhausted): the outcome of a write is unknown
    /// and a retry with the same request id is safe (503 + Retry-After at the edge).
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    /// The write queue is full or the writer has stopped (503 + Retry-After at the edge).
    #[error("the store is busy: {0}")]
    Busy(&'static str),
    /// A unique key stopped a concurrent duplicate that the pre-checks could not see.
    #[error("a unique key stopped a concurrent change")]
    Unique(#[source] BoxError),
    /// What the process had cached changed while the transaction ran (a tier scheme set up
    /// under a batch decided without it): the transaction is undone and run again on fresh reads.
    #[error("cached settings changed during the transaction: {0}")]
    Stale(&'static str),
    #[error("sqlite")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    #[error("postgres")]
    Postgres(#[source] tokio_postgres::Error),
    /// Stored data that breaks an assumption of the code (a bug or a hand-edited database).
    #[error("unexpected stored data: {0}")]
    Corrupt(String),
    /// A migration this database applied is not the one this binary ships (it was edited after
    /// it shipped), or the database was migrated by a newer binary. Nothing is applied then.
    #[error("{0}")]
    Migration(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<Refusal> for StoreError {
    fn from(r: Refusal) -> Self {
        StoreError::Refused(r)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        // Busy past the busy timeout: another process holds the write lock (a CLI command).
        let busy = matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked));
        if busy { StoreError::Unavailable(Box::new(e)) } else { StoreError::Sqlite(Arc::new(e)) }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            StoreError::Unique(Box::new(e))
        } else if postgres_unavailable(&e) {
            StoreError::Unavailable(Box::new(e))
        } else {
            StoreError::Postgres(e)
        }
    }
}

/// Errors that say "the server is not there or not the primary now", as opposed to "this
/// statement is wrong": a closed or refused connection, an I/O error, connection exceptions
/// (class 08), shutdowns (57P01-57P03), too many connections, and writes on a read-only standby.
fn postgres_unavailable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::READ_ONLY_SQL_TRANSACTION,
                ]
                .contains(code)
        }
        // No SQLSTATE: the error came from the connection itself (I/O, TLS, a protocol error).
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            // Connecting failed before any server answered (e.g. every host of the URL refused).
            format!("{e}").starts_with("error connecting") || format!("{e}").contains("connection")
        }
    }
}

impl StoreError {
    /// Whether the caller should be told to retry shortly (503) rather than that it failed (500).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Busy(_))
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io { context: context.into(), source }
    }
}

/// An error and its causes on one line (`a: b: c`), the form every log line uses.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// One error reported to several callers (every item of a batch that failed as a whole).
#[derive(Debug)]
pub struct Shared(pub Arc<StoreError>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the batch this item was in failed")
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}
