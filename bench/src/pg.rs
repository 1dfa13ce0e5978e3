//! The PostgreSQL baseline: a throw-away cluster (initdb in a temp dir, served on a Unix socket
//! only, as the `postgres` user when the bench runs as root), the audit table indexed the usual
//! way, COPY loads and the same queries as the collector's.

use crate::cleanup::{self, TempDir};
use crate::collector::{die_with_parent, dir_bytes};
use crate::data::COPY_COLUMNS;
use crate::error::{BenchError, Result};
use postgres::{Client, NoTls};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Server settings: durable (fsync, synchronous_commit on), memory for a 24 GiB machine shared
/// with others, checkpoints spaced for bulk loads.
const SETTINGS: &[(&str, &str)] = &[
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("shared_buffers", "2GB"),
    ("work_mem", "64MB"),
    ("maintenance_work_mem", "1GB"),
    ("effective_cache_size", "8GB"),
    ("max_wal_size", "1GB"),
    ("checkpoint_timeout", "15min"),
    ("timezone", "UTC"),
];

/// The table, with a stored tsvector of the text fields (the values of metadata included).
const TABLE: &str = "
CREATE TABLE audit_log (
    id          text        NOT NULL,
    org_id      text        NOT NULL,
    time        timestamptz NOT NULL,
    actor_id    text        NOT NULL,
    actor_name  text,
    actor_email text,
    actor_kind  text        NOT NULL,
    action      text        NOT NULL,
    category    text        NOT NULL,
    target_kind text,
    target_id   text,
    target_name text,
    repository  text,
    outcome     text        NOT NULL,
    message     text,
    metadata    jsonb,
    tsv tsvector GENERATED ALWAYS AS (
        to_tsvector('simple',
            actor_id || ' ' || coalesce(actor_name, '') || ' ' || coalesce(actor_email, '') || ' ' ||
            action || ' ' || coalesce(target_id, '') || ' ' || coalesce(target_name, '') || ' ' ||
            coalesce(repository, '') || ' ' || coalesce(message, ''))
        || jsonb_to_tsvector('simple', coalesce(metadata, '{}'), '[\"string\"]')
    ) STORED
)";

/// The usual indexes: dedupe key, newest-first per org, the filter columns, full text.
pub const INDEXES: &[&str] = &[
    "ALTER TABLE audit_log ADD PRIMARY KEY (org_id, id)",
    "CREATE INDEX audit_log_org_time ON audit_log (org_id, time DESC)",
    "CREATE INDEX audit_log_org_cat_user_time ON audit_log (org_id, category, actor_email, time)",
    "CREATE INDEX audit_log_tsv ON audit_log USING gin (tsv)",
];

/// The columns a search returns (the record; not the tsvector).
pub const RECORD_COLUMNS: &str = "id, org_id, time, actor_id, actor_name, actor_email, actor_kind, action, category, target_kind, target_id, target_name, repository, outcome, message, metadata";

/// A running throw-away PostgreSQL server (the harness's, with the bench's settings).
pub struct Postgres {
    server: codestax_harness::Postgres,
    _dir: TempDir,
    pub data: PathBuf,
    pub version: String,
}

/// Where PostgreSQL's server binaries are, if installed.
pub fn find_bin_dir() -> Option<PathBuf> {
    codestax_harness::Postgres::find_bin_dir().ok()
}

impl Postgres {
    /// initdb in a temp dir and start the server on a Unix socket in it, as the `postgres` user
    /// when the bench runs as root; the server dies with the bench.
    pub fn start(bin: &Path) -> Result<Postgres> {
        let dir = TempDir::new("codestax-bench-pg-")
            .map_err(|e| BenchError::io("create a temp dir", std::env::temp_dir(), e))?;
        // SIGQUIT: immediate shutdown, backends exit with the postmaster.
        let configure = |cmd: &mut Command| die_with_parent(cmd, libc::SIGQUIT);
        let options = codestax_harness::PostgresOptions {
            settings: SETTINGS,
            configure: Some(&configure),
            ..Default::default()
        };
        let server = codestax_harness::Postgres::launch(bin, dir.path(), &options)?;
        if let Some(pid) = server.pid() {
            cleanup::register_child(pid);
        }
        let mut pg = Postgres {
            data: server.data_dir().to_path_buf(),
            server,
            version: String::new(),
            _dir: dir,
        };
        pg.version = pg
            .connect()?
            .query_one("SHOW server_version", &[])
            .map_err(BenchError::sql("server version"))?
            .get(0);
        Ok(pg)
    }

    /// A new connection over the Unix socket.
    pub fn connect(&self) -> Result<Client> {
        Client::configure()
            .host_path(self.server.socket_dir())
            .user("postgres")
            .dbname("postgres")
            .connect(NoTls)
            .map_err(BenchError::sql("connect"))
    }

    /// Creates the audit table, with its indexes unless `indexes` is false.
    pub fn create_table(&self, indexes: bool) -> Result<()> {
        let mut c = self.connect()?;
        c.batch_execute(TABLE)
            .map_err(BenchError::sql("create the table"))?;
        if indexes {
            self.create_indexes()?;
        }
        Ok(())
    }

    /// Builds [`INDEXES`], then `VACUUM ANALYZE` (as after any bulk load).
    pub fn create_indexes(&self) -> Result<()> {
        let mut c = self.connect()?;
        for sql in INDEXES {
            c.batch_execute(sql)
                .map_err(BenchError::sql("create an index"))?;
        }
        Ok(())
    }

    pub fn vacuum_analyze(&self) -> Result<()> {
        self.connect()?
            .batch_execute("VACUUM ANALYZE audit_log")
            .map_err(BenchError::sql("vacuum analyze"))
    }

    /// COPYs `rows` (COPY text format) in one transaction.
    pub fn copy(client: &mut Client, rows: &[u8]) -> Result<u64> {
        use std::io::Write;
        let mut w = client
            .copy_in(&format!("COPY audit_log ({COPY_COLUMNS}) FROM STDIN"))
            .map_err(BenchError::sql("start COPY"))?;
        w.write_all(rows)
            .map_err(|e| BenchError::Postgres(format!("COPY: {e}")))?;
        w.finish().map_err(BenchError::sql("finish COPY"))
    }

    /// Bytes of the table with its indexes and TOAST, and of the indexes alone.
    pub fn sizes(&self) -> Result<(u64, u64)> {
        let row = self
            .connect()?
            .query_one(
                "SELECT pg_total_relation_size('audit_log'), pg_indexes_size('audit_log')",
                &[],
            )
            .map_err(BenchError::sql("sizes"))?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    /// Bytes of the whole cluster directory (WAL included).
    pub fn data_dir_bytes(&self) -> u64 {
        dir_bytes(&self.data)
    }

    /// Stops the server (fast shutdown) and waits.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(pid) = self.server.pid() {
            cleanup::forget_child(pid);
        }
        if let Err(e) = self.server.stop() {
            eprintln!("stopping PostgreSQL: {e}");
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}
