//! moto's standalone server as an S3 API on a free loopback port, for the cluster tests' object
//! store and the S3 stream test. moto keeps everything in memory and checks no signatures; it is
//! a stand-in for the S3 API, not for S3's durability (a restart starts empty).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::external::{find_binary, skip_or_fail};
use crate::{HarnessError, Process, free_port, wait_for};

/// The variable naming the `moto_server` binary (else the venv, else `PATH`).
pub const MOTO_SERVER_VAR: &str = "CODESTAX_MOTO_SERVER";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running moto server, killed on drop.
#[derive(Debug)]
pub struct MotoS3 {
    process: Process,
    port: u16,
    bin: PathBuf,
    log: PathBuf,
}

impl MotoS3 {
    /// The moto_server binary, or why there is none.
    pub fn find_binary() -> Result<PathBuf, String> {
        find_binary(MOTO_SERVER_VAR, "moto_server")
    }

    /// Test-style: a ready server logging to `dir/moto.log`; `None` (SKIPPED) when moto is not
    /// installed outside CI; panics on any other failure.
    pub fn start_or_skip(test: &str, dir: &Path) -> Option<MotoS3> {
        let bin = skip_or_fail(test, Self::find_binary())?;
        Some(MotoS3::launch(&bin, dir).unwrap_or_else(|e| panic!("{test}: {e}")))
    }

    /// Starts `moto_server -H 127.0.0.1 -p PORT` and waits until it answers HTTP.
    pub fn launch(bin: &Path, dir: &Path) -> Result<MotoS3, HarnessError> {
        let mut moto = MotoS3 {
            process: Process::none("moto_server"),
            port: free_port(),
            bin: bin.to_path_buf(),
            log: dir.join("moto.log"),
        };
        moto.up()?;
        Ok(moto)
    }

    /// Kills it (an outage); everything it held is gone.
    pub fn stop(&mut self) {
        self.process.kill9();
    }

    /// Starts it again on the same port, empty (after [`MotoS3::stop`]).
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.up()
    }

    /// The Python of moto's venv (which has boto3, moto's own dependency): an independent S3
    /// client for reading back what was written.
    pub fn python(&self) -> PathBuf {
        self.bin.with_file_name("python3")
    }

    fn up(&mut self) -> Result<(), HarnessError> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| HarnessError::Io {
                what: "create",
                path: self.log.clone(),
                source,
            })?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        self.process = Process::spawn("moto_server", &mut cmd)?;
        let client = reqwest::blocking::Client::new();
        let url = format!("{}/moto-api/", self.endpoint());
        let answered = wait_for(READY_TIMEOUT, || {
            self.process.pid().is_some()
                && client
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .is_ok()
        });
        if let Some(status) = self.process.exited() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            return Err(HarnessError::ExitedDuringStart {
                program: "moto_server".into(),
                status,
                detail: format!("\n{}", crate::tail(&text, 2000)),
            });
        }
        if !answered {
            return Err(HarnessError::NotReady {
                program: "moto_server".into(),
                timeout: READY_TIMEOUT,
            });
        }
        Ok(())
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT` (path-style requests; any credentials).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates bucket `name` (an unsigned `PUT /name`, which moto accepts).
    pub fn create_bucket(&self, name: &str) -> Result<(), HarnessError> {
        let url = format!("{}/{name}", self.endpoint());
        let response = reqwest::blocking::Client::new()
            .put(&url)
            .send()
            .map_err(|source| HarnessError::Http {
                what: format!("PUT {url}"),
                source,
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(HarnessError::Command {
                command: format!("PUT {url}"),
                stderr: format!(
                    "{} {}",
                    response.status(),
                    response.text().unwrap_or_default()
                ),
            })
        }
    }
}
