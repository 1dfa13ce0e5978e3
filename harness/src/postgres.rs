//! A throwaway PostgreSQL server: `initdb` into a directory the caller owns, then `postgres` on a
//! Unix socket there and, if asked, on a free loopback port. Run as the `postgres` user when we
//! are root (the server refuses to run as root). Used by the cluster tests (a metastore) and the
//! bench (its baseline).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::external::skip_or_fail;
use crate::{HarnessError, Process, free_port};

/// The variable naming the directory of PostgreSQL's server binaries (`initdb`, `postgres`).
pub const PG_BIN_VAR: &str = "CODESTAX_PG_BIN";

/// How long initdb plus the server's start may take.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How the server is set up.
pub struct PostgresOptions<'a> {
    /// The superuser initdb creates (and the only role).
    pub superuser: &'a str,
    /// Its password. With one, TCP connections must give it (scram-sha-256); the socket stays
    /// trusted. Without one, everything is trusted.
    pub password: Option<&'a str>,
    /// Also listen on 127.0.0.1 on a free port.
    pub tcp: bool,
    /// `-c key=value` server settings.
    pub settings: &'a [(&'a str, &'a str)],
    /// Applied to the server's command before it is spawned (the bench ties its life to its own).
    pub configure: Option<&'a dyn Fn(&mut Command)>,
}

impl<'a> PostgresOptions<'a> {
    /// A cluster's metastore: superuser `codestax` with `password`, on a loopback port, fsync on.
    pub fn metastore(password: &'a str) -> PostgresOptions<'a> {
        PostgresOptions {
            superuser: "codestax",
            password: Some(password),
            tcp: true,
            settings: &[("fsync", "on"), ("max_connections", "50")],
            configure: None,
        }
    }
}

impl Default for PostgresOptions<'_> {
    fn default() -> Self {
        PostgresOptions {
            superuser: "postgres",
            password: None,
            tcp: false,
            settings: &[],
            configure: None,
        }
    }
}

/// A running throwaway PostgreSQL server; stopped (SIGKILL) on drop.
#[derive(Debug)]
pub struct Postgres {
    process: Process,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: Option<u16>,
    superuser: String,
    /// The server's program, arguments and user, to start it again after a stop.
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    user: Option<(u32, u32)>,
}

impl Postgres {
    /// The directory of PostgreSQL's server binaries: `CODESTAX_PG_BIN`, else `pg_config
    /// --bindir`, else the directory of an `initdb` on `PATH`, else the newest
    /// `/usr/lib/postgresql/*/bin`.
    pub fn find_bin_dir() -> Result<PathBuf, String> {
        let has_server = |dir: &Path| dir.join("initdb").exists() && dir.join("postgres").exists();
        if let Some(dir) = std::env::var_os(PG_BIN_VAR) {
            let dir = PathBuf::from(dir);
            return if has_server(&dir) {
                Ok(dir)
            } else {
                Err(format!(
                    "{PG_BIN_VAR}={} holds no initdb and postgres",
                    dir.display()
                ))
            };
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return Ok(dir);
            }
        }
        if let Some(initdb) = crate::external::on_path("initdb")
            && let Ok(real) = std::fs::canonicalize(initdb)
            && let Some(dir) = real.parent()
            && has_server(dir)
        {
            return Ok(dir.to_path_buf());
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| has_server(b))
            .collect();
        found.sort();
        found.pop().ok_or_else(|| {
            format!(
                "PostgreSQL server binaries not found: set {PG_BIN_VAR}, or install the Debian package postgresql"
            )
        })
    }

    /// Test-style: a server under `dir` with superuser `codestax`, password `password`, on a
    /// loopback port; `None` (SKIPPED) when PostgreSQL is not installed outside CI; panics on
    /// any other failure.
    pub fn start_or_skip(test: &str, dir: &Path, password: &str) -> Option<Postgres> {
        let bin = skip_or_fail(test, Self::find_bin_dir())?;
        let options = PostgresOptions::metastore(password);
        Some(Postgres::launch(&bin, dir, &options).unwrap_or_else(|e| panic!("{test}: {e}")))
    }

    /// Runs initdb in `dir/data` and starts the server; returns once it accepts connections.
    /// When we are root, `dir`'s parents must let the `postgres` user through (a fresh temp dir
    /// of its own is fine; `dir` itself is made 0755).
    pub fn launch(
        bin: &Path,
        dir: &Path,
        options: &PostgresOptions<'_>,
    ) -> Result<Postgres, HarnessError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| HarnessError::Io { what, path, source }
        };
        let user = server_user()?;
        let data = dir.join("data");
        let socket_dir = dir.join("socket");
        for d in [&data, &socket_dir] {
            std::fs::create_dir_all(d).map_err(io("create", d))?;
        }
        if let Some((uid, gid)) = user {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(io("chmod", dir))?;
            for d in [&data, &socket_dir] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid))
                    .map_err(io("chown to postgres", d))?;
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
                options.superuser,
                "-E",
                "UTF8",
                "--no-locale",
                "--auth-local=trust",
            ])
            .stdin(Stdio::null())
            .current_dir(dir);
        if let Some(password) = options.password {
            let file = dir.join("pwfile");
            std::fs::write(&file, password).map_err(io("write", &file))?;
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(&file, Some(uid), Some(gid))
                    .map_err(io("chown to postgres", &file))?;
            }
            initdb
                .arg("--auth-host=scram-sha-256")
                .arg(format!("--pwfile={}", file.display()));
        } else {
            initdb.arg("--auth-host=trust");
        }
        initdb.arg("-D").arg(&data);
        as_user(&mut initdb);
        let out = initdb.output().map_err(|source| HarnessError::Spawn {
            program: "initdb".into(),
            source,
        })?;
        if !out.status.success() {
            return Err(HarnessError::Command {
                command: "initdb".into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }

        let port = options.tcp.then(free_port);
        let mut server = Command::new(bin.join("postgres"));
        server.arg("-D").arg(&data).arg("-k").arg(&socket_dir);
        server.arg("-c").arg(match port {
            Some(_) => "listen_addresses=127.0.0.1".to_string(),
            None => "listen_addresses=".to_string(),
        });
        if let Some(port) = port {
            server.arg("-p").arg(port.to_string());
        }
        for (k, v) in options.settings {
            server.arg("-c").arg(format!("{k}={v}"));
        }
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log).map_err(io("create", &log))?;
        server
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .current_dir(dir);
        as_user(&mut server);
        if let Some(configure) = options.configure {
            configure(&mut server);
        }
        let process = Process::spawn("postgres", &mut server)?;
        let mut pg = Postgres {
            process,
            data,
            socket_dir,
            log,
            port,
            superuser: options.superuser.to_string(),
            program: bin.join("postgres"),
            args: server.get_args().map(ToOwned::to_owned).collect(),
            user,
        };
        pg.wait_ready()?;
        Ok(pg)
    }

    /// Waits until `postmaster.pid` says `ready` (line 8 since PostgreSQL 10): no client needed.
    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pid_file = self.data.join("postmaster.pid");
        loop {
            if let Some(status) = self.process.exited() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(HarnessError::ExitedDuringStart {
                    program: "postgres".into(),
                    status,
                    detail: format!("\n{}", crate::tail(&log, 2000)),
                });
            }
            let ready = std::fs::read_to_string(&pid_file)
                .is_ok_and(|text| text.lines().nth(7).is_some_and(|l| l.trim() == "ready"));
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    program: "postgres".into(),
                    timeout: READY_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `postgres://` URL for TCP (without the password; the `postgres` database).
    pub fn url(&self) -> String {
        let port = self.port.expect("started with tcp: true");
        format!("postgres://{}@127.0.0.1:{port}/postgres", self.superuser)
    }

    /// The loopback port, if listening on TCP.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The directory of the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server's process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Fast shutdown (SIGINT): rolls back open transactions, checkpoints, exits.
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        self.process.stop_with("INT", READY_TIMEOUT).map(|_| ())
    }

    /// Starts the stopped server again on the same data, socket and port (an outage that
    /// ends), without [`PostgresOptions::configure`]; returns once it is ready.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(|source| HarnessError::Io {
                what: "open",
                path: self.log.clone(),
                source,
            })?;
        let mut server = Command::new(&self.program);
        server
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(dir) = self.data.parent() {
            server.current_dir(dir);
        }
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            server.uid(uid).gid(gid);
        }
        self.process.respawn(&mut server)?;
        self.wait_ready()
    }
}

/// The uid and gid to run the server as: `postgres` when we are root, else ourselves.
fn server_user() -> Result<Option<(u32, u32)>, HarnessError> {
    // Our effective uid, without libc: /proc/self belongs to it.
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if euid != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, HarnessError> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|source| HarnessError::Spawn {
                program: "id".into(),
                source,
            })?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| HarnessError::Command {
                command: format!("id {flag} postgres"),
                stderr: "running as root, and there is no `postgres` user to run the server as \
                         (root cannot run it); create one or run as another user"
                    .into(),
            })
    };
    Ok(Some((id("-u")?, id("-g")?)))
}
