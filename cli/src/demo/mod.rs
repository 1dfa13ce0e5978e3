//! `codestax demo`: the main job on embedded defaults — a collector, an agent tailing emit files,
//! and generated activity for a few orgs — in one process, until Ctrl-C (or SIGTERM).
//!
//! Everything lives under one data folder (`./codestax-data` by default): the collector's and the
//! agent's state, the generated config files (to read and to reuse), the emit files the agent
//! tails, and `demo-keys.json` (the demo's own tokens, so a second run reuses them). Running it
//! again continues with the same data: the history is regenerated with the same ids and the
//! collector's dedupe keeps one copy.

mod activity;

use activity::{Activity, ORGS};
use anyhow::{Context, Result, bail};
use chrono::Utc;
use codestax_collector::keys::{KeyStore, Role};
use codestax_config::{AgentConfig, CollectorConfig, EnvSource};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Days of history generated on the first run.
const HISTORY_DAYS: i64 = 30;
/// Records of history per org.
const HISTORY_RECORDS: [usize; 3] = [3000, 1200, 400];
/// How often a live event is generated.
const LIVE_EVERY: Duration = Duration::from_millis(1500);

/// Where the demo listens: the products' default ports unless the demo is told a base port
/// (`--port-base N` uses N..N+5, for tests and for running beside a real installation).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub grpc: u16,
    pub otlp_grpc: u16,
    pub otlp_http: u16,
    pub agent_api: u16,
    /// The collector's Prometheus listener (`metrics.listen`).
    pub metrics: u16,
}

impl Ports {
    /// Each port with what listens on it, in `--port-base` order.
    pub fn named(&self) -> [(u16, &'static str); 6] {
        [
            (self.http, "collector HTTP API"),
            (self.grpc, "collector OTLP/gRPC"),
            (self.otlp_grpc, "agent OTLP/gRPC"),
            (self.otlp_http, "agent OTLP/HTTP"),
            (self.agent_api, "agent API"),
            (self.metrics, "collector metrics"),
        ]
    }

    /// Fails naming the first port something already listens on (most often a demo still
    /// running), with the way out, before anything starts.
    pub fn check_free(&self) -> Result<()> {
        for (port, what) in self.named() {
            if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                let base = self.http.checked_add(1000).unwrap_or(20_000);
                bail!(
                    "port {port} ({what}) on 127.0.0.1 is not free: {e}.\n\
                     Is another demo or collector running? Stop it, or run this one beside it \
                     on other ports with its own data: --port-base {base} --data-dir ./codestax-data-{base}"
                );
            }
        }
        Ok(())
    }

    pub fn from_base(base: Option<u16>) -> Ports {
        match base {
            None => Ports {
                http: 8470,
                grpc: 8417,
                otlp_grpc: 4317,
                otlp_http: 4318,
                agent_api: 8471,
                metrics: 8472,
            },
            Some(b) => Ports {
                http: b,
                grpc: b + 1,
                otlp_grpc: b + 2,
                otlp_http: b + 3,
                agent_api: b + 4,
                metrics: b + 5,
            },
        }
    }
}

/// The demo's tokens, kept beside its data (a demo convenience; real keys are never stored).
#[derive(Debug, Default, Serialize, Deserialize)]
struct DemoKeys {
    /// ORG_OWNER key of acme, for the dashboard and the CLI.
    owner: Option<String>,
    /// INGEST keys per org.
    ingest: BTreeMap<String, String>,
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub fn run(data_dir: &Path, emit_examples: &Path, ports: Ports) -> Result<()> {
    // The collector's and agent's own warnings; RUST_LOG=info shows more.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    let layout = Layout::new(data_dir, ports);
    ports.check_free()?;
    for dir in [&layout.root, &layout.emit] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let collector_config = write_collector_config(&layout)?;
    let keys = KeyStore::open(&collector_config.data_dir).context("cannot open the key store")?;
    let tokens = demo_keys(&layout, &keys)?;
    let agent_config = write_agent_config(&layout, &tokens.ingest["acme"], emit_examples)?;

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let mut collector =
            tokio::spawn(codestax_collector::run(collector_config, shutdown.clone()));
        wait_ready(&layout, &mut collector).await?;
        let agent = codestax_agent::start(&agent_config)
            .await
            .with_context(|| {
                let p = layout.ports;
                format!(
                    "cannot start the agent (are ports {}, {} and {} free?)",
                    p.otlp_grpc, p.otlp_http, p.agent_api
                )
            })?;
        let backfilled = backfill(&layout, &tokens).await?;
        banner(
            &layout,
            tokens.owner.as_deref().unwrap_or_default(),
            backfilled,
        );
        let live = tokio::spawn(live_activity(
            layout.clone(),
            tokens.ingest.clone(),
            shutdown.clone(),
        ));
        tokio::select! {
            _ = codestax_config::shutdown_signal() => {}
            _ = shutdown.cancelled() => {}
        }
        eprintln!("\nstopping: agent first (it flushes what it holds), then the collector");
        shutdown.cancel();
        let _ = live.await;
        agent.shutdown().await;
        collector
            .await
            .context("collector task")?
            .context("collector")?;
        eprintln!("stopped; the data stays in {}", layout.root.display());
        Ok(())
    })
}

#[derive(Debug, Clone)]
struct Layout {
    root: PathBuf,
    emit: PathBuf,
    ports: Ports,
}

impl Layout {
    fn new(root: &Path, ports: Ports) -> Self {
        Layout {
            root: root.to_path_buf(),
            emit: root.join("emit"),
            ports,
        }
    }

    fn http(&self) -> String {
        format!("127.0.0.1:{}", self.ports.http)
    }
}

fn write_collector_config(layout: &Layout) -> Result<CollectorConfig> {
    let path = layout.root.join("collector.toml");
    let data = layout.root.join("collector");
    let mut text = format!(
        "# Written by `codestax demo`. Try: codestax-collector --check-config {path}\n\
         data_dir = {data:?}\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n[grpc]\nlisten = \"127.0.0.1:{grpc}\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
        path = path.display(),
        data = data.display().to_string(),
        http = layout.ports.http,
        grpc = layout.ports.grpc,
        metrics = layout.ports.metrics,
    );
    text.push_str(
        "\n[[orgs]]\nid = \"acme\"\nname = \"Acme Corp\"\nplan = \"enterprise\"\nretention_days = 365\n\
         \n[[orgs]]\nid = \"globex\"\nname = \"Globex\"\nplan = \"team\"\n\
         \n[[orgs]]\nid = \"initech\"\nname = \"Initech\"\nplan = \"free\"\n",
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    CollectorConfig::load(Some(&path), &EnvSource::empty()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn write_agent_config(layout: &Layout, token: &str, emit_examples: &Path) -> Result<AgentConfig> {
    let path = layout.root.join("agent.toml");
    let mut include = vec![format!("{}/*.jsonl", layout.emit.display())];
    if emit_examples.is_dir() {
        include.push(format!("{}/*.jsonl", emit_examples.display()));
    }
    // The token is not written to the file: it is passed in the process, as an operator would
    // pass it through CODESTAX_AGENT__COLLECTOR__TOKEN.
    let text = format!(
        "# Written by `codestax demo`. The INGEST token comes from the environment.\n\
         data_dir = {data:?}\n\n[collector]\nendpoint = \"http://127.0.0.1:{grpc}\"\n\n\
         [[sources.files]]\ninclude = {include:?}\norg_id = \"acme\"\n\n[batch]\nmax_wait = \"200ms\"\n\n\
         [discovery]\nrescan_interval = \"2s\"\n\n[otlp]\ngrpc_listen = \"127.0.0.1:{otlp_grpc}\"\n\
         http_listen = \"127.0.0.1:{otlp_http}\"\n\n[api]\nlisten = \"127.0.0.1:{api}\"\n",
        data = layout.root.join("agent").display().to_string(),
        grpc = layout.ports.grpc,
        otlp_grpc = layout.ports.otlp_grpc,
        otlp_http = layout.ports.otlp_http,
        api = layout.ports.agent_api,
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let env = EnvSource::vars([(
        "CODESTAX_AGENT__COLLECTOR__TOKEN".to_string(),
        token.to_string(),
    )]);
    AgentConfig::load(Some(&path), &env).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The demo's keys: reused when they still authenticate, created otherwise.
fn demo_keys(layout: &Layout, keys: &KeyStore) -> Result<DemoKeys> {
    let path = layout.root.join("demo-keys.json");
    let mut saved: DemoKeys = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let valid = |t: &Option<String>| t.as_deref().and_then(|t| keys.authenticate(t)).is_some();
    if !valid(&saved.owner) {
        let (_, token) = keys.create("acme", Role::OrgOwner, Some("demo owner"))?;
        saved.owner = Some(token.expose().to_string());
    }
    for org in ORGS {
        if !valid(&saved.ingest.get(org.id).cloned()) {
            let (_, token) = keys.create(org.id, Role::Ingest, Some("demo ingest"))?;
            saved
                .ingest
                .insert(org.id.to_string(), token.expose().to_string());
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode_0600()
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(serde_json::to_string_pretty(&saved)?.as_bytes())?;
    Ok(saved)
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    #[cfg(unix)]
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
    #[cfg(not(unix))]
    fn mode_0600(&mut self) -> &mut Self {
        self
    }
}

async fn wait_ready(
    layout: &Layout,
    collector: &mut tokio::task::JoinHandle<Result<(), codestax_collector::ServeError>>,
) -> Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if collector.is_finished() {
            let error = match collector.await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "it stopped without an error".to_string(),
                Err(e) => e.to_string(),
            };
            let hint = if error.contains("in use") {
                format!(
                    "\n(another demo using {} still running? Stop it, or start this one beside it \
                     with its own data and ports: --data-dir DIR --port-base N)",
                    layout.root.display()
                )
            } else {
                String::new()
            };
            bail!("the collector stopped during start: {error}{hint}");
        }
        if let Ok(r) = client
            .get(format!("http://{}/readyz", layout.http()))
            .send()
            .await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the collector was not ready within a minute")
}

/// Generates the history once: acme's through an emit file the agent tails, the other orgs'
/// straight to the collector's ingest API. Returns how many records were generated.
async fn backfill(layout: &Layout, tokens: &DemoKeys) -> Result<usize> {
    let end = Utc::now();
    let mut total = 0;
    for (i, org) in ORGS.iter().enumerate() {
        let marker = layout.emit.join(format!(".{}-history-done", org.id));
        if marker.exists() {
            continue;
        }
        let records = Activity::new(org, 7 + i as u64).history(
            "history",
            HISTORY_RECORDS[i],
            HISTORY_DAYS,
            end,
        );
        total += records.len();
        if org.id == "acme" {
            let mut text = String::new();
            for r in &records {
                text.push_str(&serde_json::to_string(r)?);
                text.push('\n');
            }
            std::fs::write(layout.emit.join("acme-history.jsonl"), text)?;
        } else {
            for chunk in records.chunks(1000) {
                send(layout, &tokens.ingest[org.id], chunk).await?;
            }
        }
        std::fs::write(&marker, b"")?;
    }
    Ok(total)
}

async fn send(
    layout: &Layout,
    token: &str,
    records: &[codestax_common::AuditRecord],
) -> Result<()> {
    let mut body = String::new();
    for r in records {
        body.push_str(&serde_json::to_string(r)?);
        body.push('\n');
    }
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/ingest", layout.http()))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .context("ingest")?;
    if !response.status().is_success() {
        bail!(
            "ingest answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// A new event every [`LIVE_EVERY`] for a random org until `stop`.
async fn live_activity(layout: Layout, ingest: BTreeMap<String, String>, stop: CancellationToken) {
    let seed = Utc::now().timestamp_micros() as u64;
    let mut sources: Vec<Activity> = ORGS
        .iter()
        .enumerate()
        .map(|(i, o)| Activity::new(o, seed + i as u64))
        .collect();
    let live_file = layout.emit.join("acme-live.jsonl");
    let mut tick = tokio::time::interval(LIVE_EVERY);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let which = (n as usize * 7 + 3) % 10;
        let i = if which < 6 {
            0
        } else if which < 9 {
            1
        } else {
            2
        };
        let id = format!("live-{seed}-{n}");
        let record = sources[i].event(&id, Utc::now());
        let result = if ORGS[i].id == "acme" {
            append_line(&live_file, &record)
        } else {
            send(&layout, &ingest[ORGS[i].id], std::slice::from_ref(&record)).await
        };
        if let Err(e) = result {
            eprintln!("demo: live event not sent: {e:#}");
        }
    }
}

fn append_line(path: &Path, record: &codestax_common::AuditRecord) -> Result<()> {
    let mut line = serde_json::to_string(record)?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    Ok(())
}

fn banner(layout: &Layout, owner: &str, backfilled: usize) {
    let data = layout.root.display();
    let http = layout.http();
    println!(
        "\nCodeStax Audit demo is running (data in {data}).\n\
         {history}\
         \n  Dashboard:  http://{http}/settings/audit-log\n  \
         API key:    {owner}   (ORG_OWNER of acme; paste it into the dashboard)\n\n  \
         Export:     cargo run -q --release --bin codestax -- export --type audit --format csv --output audit-log.csv \\\n              \
         --url http://{http} --token {owner} --org acme\n  \
         Search:     curl -s -H 'Authorization: Bearer {owner}' 'http://{http}/api/v1/orgs/acme/audit-log?category=triage&since=7d'\n  \
         Metrics:    curl -s http://127.0.0.1:{metrics}/metrics\n\n  \
         Emit files tailed by the agent: {emit}/*.jsonl (append a JSON line to see it arrive)\n  \
         Ctrl-C stops everything; running the demo again continues with the same data.\n",
        history = if backfilled > 0 {
            format!(
                "Generated {backfilled} records of history over {HISTORY_DAYS} days for acme, globex and initech.\n"
            )
        } else {
            String::new()
        },
        emit = layout.emit.display(),
        metrics = layout.ports.metrics,
    );
}
