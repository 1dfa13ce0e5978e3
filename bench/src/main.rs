//! `codestax-bench`: runs issue 3's and issue 5's benchmarks against the real collector binary and prints
//! Markdown tables. Wiring only; the mechanisms are in the library.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use codestax_bench::load::Protocol;
use codestax_bench::runs::{self, Env, ExportSize, IngestSize, JanitorSize, SearchSize};
use codestax_bench::stats::Table;
use std::path::PathBuf;

/// Benchmarks the collector (release build, started on a temp data dir) over real sockets, with
/// PostgreSQL as the baseline in the same run. Build first:
/// `cargo build --release -p codestax-collector -p codestax-bench`. Set
/// `CODESTAX_BENCH_KEEP_DATA=1` to keep the data dirs for a look afterwards.
#[derive(Debug, Parser)]
#[command(name = "codestax-bench", version)]
struct Cli {
    /// The collector binary; default: `codestax-collector` next to this binary.
    #[arg(long, global = true)]
    collector: Option<PathBuf>,
    /// PostgreSQL's bin dir (initdb, postgres); default: `pg_config --bindir`, else the newest
    /// /usr/lib/postgresql/*/bin.
    #[arg(long, global = true)]
    pg_bin: Option<PathBuf>,
    /// Skip the PostgreSQL baseline.
    #[arg(long, global = true)]
    no_postgres: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// 1. Ingest with durable acks: records/s, fsyncs/s, peak RSS (and freshness under load).
    Ingest(IngestArgs),
    /// 2. Freshness: ack → searchable p50/p99 at a steady rate.
    Freshness {
        #[command(flatten)]
        size: IngestArgs,
        /// Records per second over all clients.
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
    },
    /// 3 and 4. Search over a large corpus: filtered, full-text, facets, deep cursor walk.
    Search(SearchArgs),
    /// Export (issue 5): rows/s and memory of `GET .../audit-log/export` (CSV, NDJSON, JSON;
    /// unfiltered and filtered) over one org, against PostgreSQL's `COPY ... TO STDOUT WITH CSV`.
    Export(ExportArgs),
    /// Retention janitor (issue 5): time and disk space of deleting the oldest days (whole
    /// partitions and per-org deletes), from its metrics after restarts with narrowed retention.
    Janitor(JanitorArgs),
    /// Streams (issue 17): delivery throughput per destination kind, lag at a steady rate with
    /// a stream per org, and the ingest CPU of streams on against off. Not part of `all`.
    Streams(StreamsArgs),
    /// `codestax import` (issue 14): the real CLI importing an export-shaped NDJSON file into a
    /// fresh collector; records/s end to end, CPU of each side, a rerun, a kill -9 and resume.
    /// Not part of `all`.
    Import(ImportArgs),
    /// Cluster mode (issue 18): 3 nats-servers (JetStream R3), PostgreSQL, moto's S3 and 1–3
    /// collectors on loopback; ingest against the single node in the same run (and against
    /// JetStream's default sync, to state what `sync_interval: always` costs), then failover
    /// of a large shard. Needs nats-server and moto_server (`CODESTAX_VENV`). Not part of `all`.
    Cluster(ClusterArgs),
    /// All of them, one after the other.
    All {
        #[command(flatten)]
        ingest: IngestArgs,
        /// Records for the freshness run.
        #[arg(long, default_value_t = 100_000)]
        freshness_records: u64,
        /// Records per second of the freshness run.
        #[arg(long, default_value_t = 10_000.0)]
        freshness_rate: f64,
        #[command(flatten)]
        search: SearchArgs,
        #[command(flatten)]
        export: ExportArgs,
        #[command(flatten)]
        janitor: JanitorArgs,
    },
}

#[derive(Debug, Clone, Args)]
struct ImportArgs {
    /// Records of the export (one org).
    #[arg(long, default_value_t = 1_000_000)]
    import_records: u64,
    /// Days the records' times span, ending five minutes ago.
    #[arg(long, default_value_t = 1)]
    import_days: i64,
    /// Also kill the CLI with -9 once its checkpoint passes this share of the file (0–1), in
    /// a second collector, and run it again to its end.
    #[arg(long)]
    kill_at: Option<f64>,
    /// The `codestax` CLI binary; default: next to this binary.
    #[arg(long)]
    cli: Option<PathBuf>,
    /// An extra argument for every `codestax import` run (repeatable), e.g.
    /// `--cli-arg=--batch-records=2000`.
    #[arg(long, allow_hyphen_values = true)]
    cli_arg: Vec<String>,
}

#[derive(Debug, Clone, Args)]
struct ClusterArgs {
    /// Records of each ingest run (0: no ingest runs).
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Concurrent clients, spread over the nodes.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Orgs of the ingest runs.
    #[arg(long, default_value_t = 10)]
    orgs: usize,
    /// Collectors of the ingest runs' cluster, 1 to 3 (the failover runs use 2).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Rounds of the ingest runs (single node, then the cluster with each sync).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// `[cluster] shards`.
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// `[cluster] lease_ttl`.
    #[arg(long, default_value = "10s")]
    lease_ttl: String,
    /// `[cluster] snapshot_interval`.
    #[arg(long, default_value = "30s")]
    snapshot_interval: String,
    /// Records of the one org of each failover run, comma-separated (0: none).
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    failover_records: Vec<u64>,
    /// Records acknowledged after the snapshot, before the kill (the survivor replays them).
    #[arg(long, default_value_t = 20_000)]
    replay_records: u64,
}

#[derive(Debug, Clone, Args)]
struct StreamsArgs {
    /// Records of the one org pre-loaded for the throughput runs.
    #[arg(long, default_value_t = 200_000)]
    stream_records: u64,
    /// Steady ingest rate, records per second over all orgs.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Seconds of each steady run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Pairs of steady runs, each without then with streams.
    #[arg(long, default_value_t = 2)]
    pairs: usize,
    /// Orgs of the steady runs (with streams: one stream each).
    #[arg(long, default_value_t = 10)]
    stream_orgs: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
}

#[derive(Debug, Clone, Args)]
struct ExportArgs {
    /// Records of the one org exported.
    #[arg(long, default_value_t = 10_000_000)]
    export_records: u64,
    /// Days the export corpus spans, ending now.
    #[arg(long, default_value_t = 90)]
    export_days: i64,
    /// Times each export runs.
    #[arg(long, default_value_t = 1)]
    export_runs: usize,
}

#[derive(Debug, Clone, Args)]
struct JanitorArgs {
    /// Records of the janitor corpus.
    #[arg(long, default_value_t = 3_000_000)]
    janitor_records: u64,
    /// Orgs of the janitor corpus.
    #[arg(long, default_value_t = 10)]
    janitor_orgs: usize,
    /// Records of its largest org.
    #[arg(long, default_value_t = 1_000_000)]
    janitor_largest: u64,
    /// Days the janitor corpus spans, ending now.
    #[arg(long, default_value_t = 120)]
    janitor_days: i64,
    /// retention.default_days once loaded.
    #[arg(long, default_value_t = 90)]
    keep_days: u32,
    /// The shorter window of the enterprise org (the second largest) in the second run.
    #[arg(long, default_value_t = 30)]
    short_days: u32,
    /// retention.janitor_interval once loaded; the first run comes after min(this, 10 s).
    #[arg(long, default_value = "1h")]
    janitor_interval: String,
}

impl ExportArgs {
    fn size(&self, i: &IngestArgs) -> ExportSize {
        ExportSize {
            records: self.export_records,
            clients: i.clients,
            batch: i.batch,
            days: self.export_days,
            runs: self.export_runs,
        }
    }
}

impl JanitorArgs {
    fn size(&self, i: &IngestArgs) -> JanitorSize {
        JanitorSize {
            records: self.janitor_records,
            orgs: self.janitor_orgs,
            largest: self.janitor_largest,
            clients: i.clients,
            batch: i.batch,
            days: self.janitor_days,
            keep_days: self.keep_days,
            short_days: self.short_days,
            interval: self.janitor_interval.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
struct IngestArgs {
    /// Records to send.
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Records per batch (one request, one durable ack).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Orgs the records are spread over (one ingest key each).
    #[arg(long, default_value_t = 10)]
    ingest_orgs: usize,
    /// Record-time spreads to measure, comma-separated: 0 is the last 10 minutes (in order), N
    /// scatters record times uniformly over the last N days (an out-of-order backfill). Each
    /// spread runs with its own PostgreSQL baseline; a last table puts them side by side.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    spread_days: Vec<i64>,
    /// Receivers to measure ingest through: ndjson, grpc or both.
    #[arg(long, default_value = "both")]
    protocol: ProtocolArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProtocolArg {
    Ndjson,
    Grpc,
    Both,
}

impl ProtocolArg {
    fn protocols(self) -> Vec<Protocol> {
        match self {
            ProtocolArg::Ndjson => vec![Protocol::Ndjson],
            ProtocolArg::Grpc => vec![Protocol::Grpc],
            ProtocolArg::Both => vec![Protocol::Ndjson, Protocol::Grpc],
        }
    }
}

#[derive(Debug, Clone, Args)]
struct SearchArgs {
    /// Records in the search corpus.
    #[arg(long, default_value_t = 10_000_000)]
    search_records: u64,
    /// Orgs in the search corpus.
    #[arg(long, default_value_t = 100)]
    orgs: usize,
    /// Records of the largest org.
    #[arg(long, default_value_t = 1_000_000)]
    largest: u64,
    /// Timed queries per kind and org choice.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Days the corpus spans, ending now.
    #[arg(long, default_value_t = 90)]
    days: i64,
}

impl IngestArgs {
    fn size(&self) -> IngestSize {
        IngestSize {
            records: self.records,
            clients: self.clients,
            batch: self.batch,
            orgs: self.ingest_orgs,
        }
    }
}

fn search_size(s: &SearchArgs, i: &IngestArgs) -> SearchSize {
    SearchSize {
        records: s.search_records,
        orgs: s.orgs,
        largest: s.largest,
        queries: s.queries,
        clients: i.clients,
        batch: i.batch,
        days: s.days,
    }
}

/// How the corpora of search, export and janitor are loaded when run on their own: 4 clients,
/// batches of 1,000.
fn load_defaults() -> IngestArgs {
    IngestArgs {
        records: 0,
        clients: 4,
        batch: 1000,
        ingest_orgs: 10,
        spread_days: vec![0],
        protocol: ProtocolArg::Ndjson,
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    codestax_bench::cleanup::install();
    let collector_bin = match &cli.collector {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locate this binary")?
            .with_file_name("codestax-collector"),
    };
    let postgres = if cli.no_postgres {
        Err("--no-postgres".to_string())
    } else {
        match cli.pg_bin.clone().or_else(codestax_bench::pg::find_bin_dir) {
            Some(dir) if dir.join("initdb").exists() => Ok(dir),
            Some(dir) => Err(format!("no initdb in {}", dir.display())),
            None => Err(
                "PostgreSQL server binaries not found (install the Debian package postgresql-15, or pass --pg-bin)"
                    .into(),
            ),
        }
    };
    let env = Env {
        collector_bin: collector_bin.clone(),
        postgres,
    };
    if let Err(why) = &env.postgres {
        eprintln!("!! PostgreSQL baseline will be SKIPPED: {why}");
    }
    println!("## codestax-bench\n");
    println!("{}", codestax_bench::machine::describe(&collector_bin));
    println!(
        "- command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let print = |tables: Vec<Table>| {
        for t in tables {
            println!("{}", t.render());
        }
    };
    match cli.command {
        Cmd::Ingest(a) => print(runs::ingest(
            &env,
            a.size(),
            &a.spread_days,
            &a.protocol.protocols(),
        )?),
        Cmd::Freshness { size, rate } => {
            print(runs::freshness(&env, size.records, rate, size.size())?)
        }
        Cmd::Search(s) => print(runs::search(&env, search_size(&s, &load_defaults()))?),
        Cmd::Export(e) => print(runs::export(&env, e.size(&load_defaults()))?),
        Cmd::Janitor(j) => print(runs::janitor(&env, j.size(&load_defaults()))?),
        Cmd::Import(a) => print(codestax_bench::import::run(
            &collector_bin,
            &a.cli.unwrap_or_else(codestax_bench::import::default_cli),
            &a.cli_arg,
            codestax_bench::import::ImportSize {
                records: a.import_records,
                days: a.import_days,
                kill_at: a.kill_at,
            },
        )?),
        Cmd::Streams(s) => print(codestax_bench::streams::run(
            &collector_bin,
            codestax_bench::streams::StreamsSize {
                records: s.stream_records,
                rate: s.rate,
                seconds: s.seconds,
                pairs: s.pairs,
                orgs: s.stream_orgs,
                clients: s.clients,
                batch: s.batch,
            },
        )?),
        Cmd::Cluster(a) => print(codestax_bench::cluster::run(
            &collector_bin,
            codestax_bench::cluster::ClusterSize {
                records: a.records,
                clients: a.clients,
                batch: a.batch,
                orgs: a.orgs,
                nodes: a.nodes,
                rounds: a.rounds,
                shards: a.shards,
                lease_ttl: a.lease_ttl,
                snapshot_interval: a.snapshot_interval,
                failover_records: a.failover_records,
                replay_records: a.replay_records,
            },
        )?),
        Cmd::All {
            ingest,
            freshness_records,
            freshness_rate,
            search,
            export,
            janitor,
        } => {
            print(runs::ingest(
                &env,
                ingest.size(),
                &ingest.spread_days,
                &ingest.protocol.protocols(),
            )?);
            print(runs::freshness(
                &env,
                freshness_records,
                freshness_rate,
                ingest.size(),
            )?);
            print(runs::search(&env, search_size(&search, &ingest))?);
            print(runs::export(&env, export.size(&ingest))?);
            print(runs::janitor(&env, janitor.size(&ingest))?);
        }
    }
    Ok(())
}
