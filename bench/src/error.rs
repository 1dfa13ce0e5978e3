//! What can stop a benchmark.

use std::path::PathBuf;

/// Why a benchmark could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Collector(String),
    /// Options that cannot be measured as asked.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Harness(#[from] codestax_harness::HarnessError),
    #[error("HTTP {what}: {message}")]
    Http { what: String, message: String },
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("PostgreSQL: {what}: {}", sql_message(source))]
    Sql {
        what: &'static str,
        source: postgres::Error,
    },
}

/// The server's own message (with its detail) when there is one: `db error` alone says nothing.
fn sql_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

impl BenchError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub fn http(what: impl Into<String>, message: impl ToString) -> Self {
        BenchError::Http {
            what: what.into(),
            message: message.to_string(),
        }
    }

    pub fn sql(what: &'static str) -> impl FnOnce(postgres::Error) -> BenchError {
        move |source| BenchError::Sql { what, source }
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
