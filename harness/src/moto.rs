//! moto's standalone server as an S3 API on a free loopback port, for the cluster tests' object
//! store and the S3 stream tests. moto keeps everything in memory and checks no signatures until
//! [`MotoS3::enforce_auth`] switches its IAM checks on; it is a stand-in for the S3 API, not for
//! S3's durability (a restart starts empty, with auth off).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::external::{find_binary, skip_or_fail};
use crate::{HarnessError, Process, free_port, wait_for};

/// The variable naming the `moto_server` binary (else the venv, else `PATH`).
pub const MOTO_SERVER_VAR: &str = "CODESTAX_MOTO_SERVER";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets up, with auth still off, an IAM user allowed every S3 action with an access key, and a
/// role allowed the same, assumed through STS for a session (key, secret, token); prints them
/// as JSON. Then `POST /moto-api/reset-auth` with `0` checks every later request.
const AUTH_SETUP: &str = r#"
import boto3, json, sys, urllib.request
endpoint = sys.argv[1]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="setup", aws_secret_access_key="setup")
iam, sts = boto3.client("iam", **kw), boto3.client("sts", **kw)
s3_all = json.dumps({"Version": "2012-10-17",
                     "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
iam.create_user(UserName="codestax-stream")
iam.put_user_policy(UserName="codestax-stream", PolicyName="s3", PolicyDocument=s3_all)
key = iam.create_access_key(UserName="codestax-stream")["AccessKey"]
trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]})
role = iam.create_role(RoleName="codestax-session", AssumeRolePolicyDocument=trust)["Role"]
iam.put_role_policy(RoleName="codestax-session", PolicyName="s3", PolicyDocument=s3_all)
session = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="codestax",
                          DurationSeconds=3600)["Credentials"]
# A form content type would hide the body from moto (it reads the raw data).
urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0",
    headers={"Content-Type": "text/plain"}, method="POST")).read()
json.dump({"user": [key["AccessKeyId"], key["SecretAccessKey"]],
           "session": [session["AccessKeyId"], session["SecretAccessKey"],
                       session["SessionToken"]]}, sys.stdout)
"#;

/// Credentials moto checks once [`MotoS3::enforce_auth`] switched its auth on.
#[derive(Debug, Clone)]
pub struct MotoCredentials {
    /// An IAM user's access key id and secret, allowed every S3 action.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// A session of a role allowed the same (STS `AssumeRole`, one hour): key id, secret, token.
    pub session_key_id: String,
    pub session_secret: String,
    pub session_token: String,
}

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

    /// moto's log (its stderr: a line per request, with the answer's status).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The loopback port it listens on (for a relay in front of it).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT` (path-style requests; any credentials).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches moto's IAM checks on (`INITIAL_NO_AUTH_ACTION_COUNT` 0, through
    /// `/moto-api/reset-auth`): from now on a request must be signed with credentials moto issued
    /// and allowed by their policy, else S3 answers 403 (`InvalidAccessKeyId`,
    /// `SignatureDoesNotMatch`, `AccessDenied`). Returns an IAM user's and an STS session's
    /// credentials, both allowed every S3 action. Create buckets first (unsigned requests are
    /// refused from now on); [`MotoS3::restart`] switches auth off again.
    pub fn enforce_auth(&self, dir: &Path) -> Result<MotoCredentials, HarnessError> {
        let script = dir.join("moto_auth_setup.py");
        std::fs::write(&script, AUTH_SETUP).map_err(|source| HarnessError::Io {
            what: "write",
            path: script.clone(),
            source,
        })?;
        let command = format!("{} {}", self.python().display(), script.display());
        let out = Command::new(self.python())
            .arg(&script)
            .arg(self.endpoint())
            .output()
            .map_err(|source| HarnessError::Spawn {
                program: command.clone(),
                source,
            })?;
        let failed = |why: String| HarnessError::Command {
            command: command.clone(),
            stderr: why,
        };
        if !out.status.success() {
            return Err(failed(String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        let got: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| failed(format!("its output is not JSON: {e}")))?;
        let field = |path: &str, i: usize| {
            got[path][i]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| failed(format!("no {path}[{i}] in {got}")))
        };
        Ok(MotoCredentials {
            access_key_id: field("user", 0)?,
            secret_access_key: field("user", 1)?,
            session_key_id: field("session", 0)?,
            session_secret: field("session", 1)?,
            session_token: field("session", 2)?,
        })
    }

    /// Creates bucket `name` (an unsigned `PUT /name`, which moto accepts while auth is off).
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
