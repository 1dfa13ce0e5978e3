//! A nats-server JetStream cluster on loopback for the cluster tests and the bench: `n` nodes on
//! free ports, each with its own store directory and `sync_interval: always` (a publish ack then
//! means fsynced on a quorum, as the collector's promise needs; the bench alone may ask for
//! nats-server's default, to measure what `always` costs), and the faults they inject: kill one
//! node, restart it on the same ports and store.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::external::{find_binary, skip_or_fail};
use crate::{HarnessError, Process, free_port, wait_for};

/// The variable naming the nats-server binary (else the venv, else `PATH`).
pub const NATS_SERVER_VAR: &str = "CODESTAX_NATS_SERVER";

/// How long a cluster may take to elect its JetStream meta leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// When the JetStream servers fsync what they store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JetStreamSync {
    /// `sync_interval: always`: every message before it is acknowledged (what a cluster runs).
    Always,
    /// nats-server's default (every 2 minutes): only to measure what `Always` costs.
    ServerDefault,
}

/// One node: its ports, config file, store and process.
#[derive(Debug)]
struct NatsNode {
    name: String,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    process: Process,
    /// Started and not killed since: it should be running.
    up: bool,
}

/// A JetStream cluster of nats-server processes, killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    bin: PathBuf,
    nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// The nats-server binary, or why there is none.
    pub fn find_binary() -> Result<PathBuf, String> {
        find_binary(NATS_SERVER_VAR, "nats-server")
    }

    /// Test-style: a ready 3-node cluster under `dir`, `None` (SKIPPED) when nats-server is not
    /// installed outside CI; panics on any other failure.
    pub fn start_or_skip(test: &str, dir: &Path) -> Option<NatsCluster> {
        let bin = skip_or_fail(test, Self::find_binary())?;
        Some(NatsCluster::launch(&bin, dir, 3).unwrap_or_else(|e| panic!("{test}: {e}")))
    }

    /// Starts `size` nodes under `dir` (one store and config per node) and waits until the
    /// cluster has a JetStream meta leader that every node knows.
    pub fn launch(bin: &Path, dir: &Path, size: usize) -> Result<NatsCluster, HarnessError> {
        NatsCluster::launch_with(bin, dir, size, JetStreamSync::Always)
    }

    /// [`NatsCluster::launch`] with the servers fsyncing as `sync` says.
    pub fn launch_with(
        bin: &Path,
        dir: &Path,
        size: usize,
        sync: JetStreamSync,
    ) -> Result<NatsCluster, HarnessError> {
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect();
        let mut nodes = Vec::with_capacity(size);
        for (i, &(client_port, route_port, monitor_port)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.join(&name);
            std::fs::create_dir_all(&store).map_err(|source| HarnessError::Io {
                what: "create",
                path: store.clone(),
                source,
            })?;
            // sync_interval: always (nats-server >= 2.10): fsync every write before it is
            // acknowledged, not every 2 minutes (the default).
            let sync_line = match sync {
                JetStreamSync::Always => "  sync_interval: always\n",
                JetStreamSync::ServerDefault => "",
            };
            let text = format!(
                "server_name: {name}\n\
                 listen: \"127.0.0.1:{client_port}\"\n\
                 http: \"127.0.0.1:{monitor_port}\"\n\
                 jetstream {{\n  store_dir: \"{}\"\n{sync_line}}}\n\
                 cluster {{\n  name: codestax-test\n  listen: \"127.0.0.1:{route_port}\"\n  routes: [{}]\n}}\n",
                store.display(),
                routes.join(", ")
            );
            let config = dir.join(format!("{name}.conf"));
            std::fs::write(&config, text).map_err(|source| HarnessError::Io {
                what: "write",
                path: config.clone(),
                source,
            })?;
            nodes.push(NatsNode {
                log: dir.join(format!("{name}.log")),
                process: Process::none(&format!("nats-server {name}")),
                up: false,
                name,
                client_port,
                monitor_port,
                config,
            });
        }
        let mut cluster = NatsCluster {
            bin: bin.to_path_buf(),
            nodes,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|source| HarnessError::Io {
                what: "open",
                path: node.log.clone(),
                source,
            })?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        node.process.respawn(&mut cmd)?;
        node.up = true;
        Ok(())
    }

    /// Client URLs of every node (`nats://127.0.0.1:PORT`), killed ones included: a client
    /// given all of them reconnects to a live one.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node's `server_name` (`n1`, `n2`, ...).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Node `i`'s process id, while it runs (the bench reads its CPU time).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].process.pid()
    }

    /// Whether node `i` was started and not killed since.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].up
    }

    /// SIGKILL node `i`: no chance to flush anything.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].process.kill9();
        self.nodes[i].up = false;
    }

    /// Starts node `i` again on its ports and store, and waits until the cluster is ready with
    /// it.
    pub fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.restart_some(&[i])
    }

    /// [`NatsCluster::restart`] of several nodes at once: after every node was killed, a quorum
    /// must come back together before the cluster is ready.
    pub fn restart_some(&mut self, nodes: &[usize]) -> Result<(), HarnessError> {
        for &i in nodes {
            self.spawn(i)?;
        }
        self.wait_ready()
    }

    /// The JetStream meta leader's name as node `i` sees it (its `/jsz`), if it has one.
    pub fn meta_leader(&self, i: usize) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/jsz", self.nodes[i].monitor_port);
        let body: serde_json::Value = reqwest::blocking::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .ok()?
            .json()
            .ok()?;
        body["meta_cluster"]["leader"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
    }

    /// Whether node `i` answers `/healthz` with 200 (JetStream enabled and current).
    fn healthy(&self, i: usize) -> bool {
        let url = format!("http://127.0.0.1:{}/healthz", self.nodes[i].monitor_port);
        reqwest::blocking::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }

    /// Waits until every running node is healthy and all see the same meta leader, a running
    /// one.
    pub fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.is_up(i)).collect();
        self.check_alive(&running)?;
        let names: Vec<String> = running
            .iter()
            .map(|&i| self.nodes[i].name.clone())
            .collect();
        let ready = wait_for(READY_TIMEOUT, || {
            let leaders: Vec<Option<String>> =
                running.iter().map(|&i| self.meta_leader(i)).collect();
            running.iter().all(|&i| self.healthy(i))
                && leaders.first().cloned().flatten().is_some_and(|l| {
                    names.contains(&l) && leaders.iter().all(|x| x.as_ref() == Some(&l))
                })
        });
        if ready {
            return Ok(());
        }
        self.check_alive(&running)?;
        Err(HarnessError::NotReady {
            program: format!("nats-server cluster ({})", names.join(", ")),
            timeout: READY_TIMEOUT,
        })
    }

    /// An error naming the first of `nodes` that exited, with the end of its log.
    fn check_alive(&mut self, nodes: &[usize]) -> Result<(), HarnessError> {
        for &i in nodes {
            if let Some(status) = self.nodes[i].process.exited() {
                self.nodes[i].up = false;
                return Err(self.exited(i, status));
            }
        }
        Ok(())
    }

    fn exited(&self, i: usize, status: std::process::ExitStatus) -> HarnessError {
        let log = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        HarnessError::ExitedDuringStart {
            program: self.nodes[i].process.program().to_string(),
            status,
            detail: format!("\n{}", crate::tail(&log, 2000)),
        }
    }
}
