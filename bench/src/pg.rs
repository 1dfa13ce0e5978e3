//! The PostgreSQL baseline: a throw-away cluster (initdb in a temp dir, served on a Unix socket
//! only, as the `postgres` user when the bench runs as root), the audit table indexed the usual
//! way, COPY loads and the same queries as the collector's.

use crate::cleanup::{self, TempDir};
use crate::collector::{die_with_parent, dir_bytes};
use crate::data::COPY_COLUMNS;
use crate::error::{BenchError, Result};
use postgres::{Client, NoTls};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Server settings: durable (fsync, synchronous_commit on), memory for a 24 GiB machine shared
/// with others, checkpoints spaced for bulk loads.
const SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "''"),
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

/// A running throw-away PostgreSQL server.
pub struct Postgres {
    child: Option<Child>,
    _dir: TempDir,
    pub data: PathBuf,
    socket_dir: PathBuf,
    pub version: String,
}

/// Where PostgreSQL's server binaries are, if installed.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() && dir.join("postgres").exists() {
            return Some(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    found.sort();
    found.pop()
}

/// The uid and gid to run the server as: `postgres` when we are root, else ourselves.
#[allow(unsafe_code)]
fn server_user() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|source| BenchError::Spawn {
                program: "id".into(),
                source,
            })?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                BenchError::Postgres(
                    "running as root, and there is no `postgres` user to run the server as (root cannot run it); create one or run the bench as another user".into(),
                )
            })
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

impl Postgres {
    /// initdb in a temp dir and start the server on a Unix socket in it.
    pub fn start(bin: &Path) -> Result<Postgres> {
        let dir = TempDir::new("codestax-bench-pg-")
            .map_err(|e| BenchError::io("create a temp dir", std::env::temp_dir(), e))?;
        let user = server_user()?;
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        for d in [&data, &socket_dir] {
            std::fs::create_dir(d).map_err(|e| BenchError::io("create", d.as_path(), e))?;
        }
        if let Some((uid, gid)) = user {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| BenchError::io("chmod", dir.path(), e))?;
            for d in [&data, &socket_dir] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid))
                    .map_err(|e| BenchError::io("chown to postgres", d.as_path(), e))?;
            }
        }
        let as_user = |cmd: &mut Command| {
            use std::os::unix::process::CommandExt;
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
        };
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-D",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .current_dir(dir.path());
        as_user(&mut initdb);
        let out = initdb.output().map_err(|source| BenchError::Spawn {
            program: "initdb".into(),
            source,
        })?;
        if !out.status.success() {
            return Err(BenchError::Postgres(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let mut server = Command::new(bin.join("postgres"));
        server.arg("-D").arg(&data).arg("-k").arg(&socket_dir);
        for (k, v) in SETTINGS {
            server
                .arg("-c")
                .arg(format!("{k}={}", v.trim_matches('\'')));
        }
        let log = std::fs::File::create(dir.path().join("server.log"))
            .map_err(|e| BenchError::io("create the server log", dir.path(), e))?;
        server
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .current_dir(dir.path());
        as_user(&mut server);
        // SIGQUIT: immediate shutdown, backends exit with the postmaster.
        die_with_parent(&mut server, libc::SIGQUIT);
        let child = server.spawn().map_err(|source| BenchError::Spawn {
            program: "postgres".into(),
            source,
        })?;
        cleanup::register_child(child.id());
        let mut pg = Postgres {
            child: Some(child),
            data,
            socket_dir,
            version: String::new(),
            _dir: dir,
        };
        let mut client = pg.wait_ready()?;
        pg.version = client
            .query_one("SHOW server_version", &[])
            .map_err(BenchError::sql("server version"))?
            .get(0);
        Ok(pg)
    }

    fn wait_ready(&mut self) -> Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(self._dir.path().join("server.log"))
                    .unwrap_or_default();
                return Err(BenchError::Postgres(format!(
                    "the server exited during start ({status}): {}",
                    log.trim()
                )));
            }
            if let Ok(c) = self.connect() {
                return Ok(c);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Postgres(
                    "the server did not accept connections within 60 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A new connection over the Unix socket.
    pub fn connect(&self) -> Result<Client> {
        Client::configure()
            .host_path(&self.socket_dir)
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
        if let Some(mut child) = self.child.take() {
            cleanup::forget_child(child.id());
            // SAFETY: kill(2) on our own child's pid. SIGINT: fast shutdown.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}
