//! `codestax`: export, import, search and verify audit logs from a collector, and run the demo.
//! Parses arguments and calls into the library (`codestax_cli`); errors print as one line and
//! exit 1 (clap exits 2 on invalid arguments).

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use codestax_cli::client::Client;
use codestax_cli::config::{CliConfig, Connection};
use codestax_cli::demo;
use codestax_cli::export::{self, ExportRequest, Output};
use codestax_cli::import::input::InputFormat;
use codestax_cli::import::{self, ImportRequest, Source};
use codestax_cli::report;
use codestax_cli::search::{self, SearchRequest};
use codestax_cli::verify::{self, VerifyOptions};
use codestax_common::api::{ExportFormat, SearchFilters};
use codestax_common::note::VerifierKey;

/// Export, import, search and verify CodeStax audit logs, or run a local demo.
#[derive(Debug, Parser)]
#[command(
    name = "codestax",
    version,
    propagate_version = true,
    after_help = "\
Examples:
  codestax export --type audit --format csv --output audit-log.csv --org acme
  codestax search --org acme --action scan.triggered --since 2026-11-01 --limit 20
  codestax export --format ndjson --output audit-log.ndjson
  codestax verify --input audit-log.ndjson --public-key collector.vkey
  codestax import --input audit-log.ndjson --format ndjson      (with an INGEST key)
    (collector.vkey: the verifier_key of GET /api/v1/signing-key, fetched once and kept apart)
  codestax export --format ocsf --output audit-log.ocsf.ndjson --org acme   (or --format ecs)
  codestax demo

Server and key: --url / --token, or CODESTAX_URL / CODESTAX_TOKEN, or a TOML file given with
--config (or CODESTAX_CONFIG) holding url, token and org. Without --org, the key's own org.

Exit status: 0 ok, 1 failure, 2 invalid arguments."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Export audit records as CSV, JSON or NDJSON.
    Export(ExportArgs),
    /// Search audit records and print them as a table (or JSON).
    Search(SearchArgs),
    /// Bring an audit trail in (an export of this project, or emit-file JSON lines) through the
    /// ingest API with an INGEST key: resumable, rejects listed by line.
    Import(ImportArgs),
    /// Verify an export offline: its proof, with the collector's public key, and its hash chain.
    Verify(VerifyArgs),
    /// Start a local collector and agent, emit sample events and show them.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// What to export.
    #[arg(long = "type", value_name = "TYPE", value_enum, default_value_t = ExportType::Audit)]
    kind: ExportType,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Csv)]
    format: ExportFormatArg,

    /// File to write; `-` writes to stdout.
    #[arg(long, short, value_name = "FILE", default_value = "-")]
    output: PathBuf,

    #[command(flatten)]
    filters: Filters,

    /// Add the hash-chain columns (seq, prev_hash, hash) to a CSV export. JSON and NDJSON
    /// always carry them; verify those with `codestax verify`.
    #[arg(long)]
    with_chain: bool,

    #[command(flatten)]
    server: Server,
}

#[derive(Debug, Args)]
struct SearchArgs {
    #[command(flatten)]
    filters: Filters,

    /// Most records to show (fetched in pages of up to 1000).
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,

    /// Print the raw JSON response instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    server: Server,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// A JSON or NDJSON export (`codestax export --format ndjson`); `-` reads stdin. CSV exports
    /// leave fields out and cannot be verified.
    #[arg(long, short, value_name = "FILE")]
    input: PathBuf,

    /// The collector's public key (`verifier_key` of `GET /api/v1/signing-key`, or
    /// `codestax-collector signing-key`), or a file holding it. The proof is checked with this
    /// key only, never one the file carries. Else `public_key` of the --config file.
    #[arg(
        long,
        value_name = "KEY",
        env = "CODESTAX_PUBLIC_KEY",
        hide_env_values = true
    )]
    public_key: Option<String>,

    /// An earlier export with proof (or its .proof.json, or a saved checkpoint): also prove
    /// that the log only grew since its signed tree head. The RFC 9162 consistency proof is
    /// fetched from the collector (--url, --token, --config) and checked against both signed
    /// heads.
    #[arg(long, value_name = "FILE")]
    since: Option<PathBuf>,

    /// The collector, for --since; the --config file's `public_key` is used when --public-key
    /// is not given.
    #[command(flatten)]
    server: Server,

    /// For exports without proof only (format 1): accept missing sequence numbers, for an
    /// export made with filters; only the records present and the links between consecutive
    /// numbers are checked. An export with proof proves its gaps and needs no flag.
    #[arg(long)]
    allow_gaps: bool,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// An NDJSON or JSON export of this project, or emit-file JSON lines; `-` reads stdin (not
    /// resumable). A file's import keeps its checkpoint in FILE.import-checkpoint.
    #[arg(long, short, value_name = "FILE")]
    input: PathBuf,

    /// The input's format: `ndjson` (one record per line; an export's proof line is passed
    /// over) or `json` (a JSON export, or an array of records).
    #[arg(long, value_enum, default_value_t = ImportFormatArg::Ndjson)]
    format: ImportFormatArg,

    /// Where refused records go, one JSON line each with its input line and reasons
    /// [default: FILE.rejects.ndjson; for stdin, ./codestax-import.rejects.ndjson].
    #[arg(long, value_name = "FILE")]
    rejects: Option<PathBuf>,

    /// Where the records come from (the source collector, org or system), kept in each
    /// record's provenance [default: the input file's name; none for stdin].
    #[arg(long, value_name = "NAME")]
    source: Option<String>,

    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,

    /// Most records in one request (batches also stop at 4 MiB).
    #[arg(long, value_name = "N", default_value_t = import::MAX_BATCH_RECORDS, hide = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    batch_records: usize,

    /// Requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = import::IN_FLIGHT, hide = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=32))]
    in_flight: usize,

    #[command(flatten)]
    server: Server,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ImportFormatArg {
    /// One JSON record per line.
    Ndjson,
    /// A JSON export (`{"records": [...], ...}`) or an array of records.
    Json,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory for the demo's collector and agent data, configs and emit files.
    #[arg(long, value_name = "DIR", default_value = "./codestax-data")]
    data_dir: PathBuf,
    /// Sample emit files the agent tails as well (JSON lines of acme's records).
    #[arg(long, value_name = "DIR", default_value = "examples/emit")]
    examples: PathBuf,
    /// Listen on PORT..PORT+5 (collector HTTP, collector gRPC, agent OTLP gRPC, agent OTLP HTTP,
    /// agent API, collector metrics) instead of 8470, 8417, 4317, 4318, 8471 and 8472.
    #[arg(long, value_name = "PORT", env = "CODESTAX_PORT_BASE")]
    port_base: Option<u16>,
}

/// Which records to select; filters of different kinds combine with AND, repeated ones with OR.
#[derive(Debug, Args)]
struct Filters {
    /// Organisation id [default: the API key's own org].
    #[arg(long, value_name = "ORG_ID")]
    org: Option<String>,

    /// User who performed the action (id or email); repeat for any of several.
    #[arg(long, value_name = "USER")]
    user: Vec<String>,

    /// Action, e.g. `scan.triggered` or `finding.triaged`; repeatable.
    #[arg(long, value_name = "ACTION")]
    action: Vec<String>,

    /// Action category, e.g. `auth`, `repository`, `scan`, `finding` (or `triage`), `team`,
    /// `settings`, `integration`; repeatable.
    #[arg(long, value_name = "CATEGORY")]
    category: Vec<String>,

    /// Repository the action concerned; repeatable.
    #[arg(long, value_name = "REPO")]
    repository: Vec<String>,

    /// Only records at or after this time: RFC 3339 (2026-11-01T09:00:00Z), a date (2026-11-01)
    /// or relative (7d, 24h).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,

    /// Only records before this time, same forms as --since (a date includes that day).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,

    /// Outcome, `success` or `failure`; repeatable.
    #[arg(long, value_name = "OUTCOME")]
    outcome: Vec<String>,

    /// Full-text query: words, "phrases", field:value, -word.
    #[arg(long, short, value_name = "TEXT")]
    query: Option<String>,
}

impl Filters {
    fn to_api(&self) -> SearchFilters {
        SearchFilters {
            user: self.user.clone(),
            action: self.action.clone(),
            category: self.category.clone(),
            repository: self.repository.clone(),
            outcome: self.outcome.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            q: self.query.clone(),
        }
    }
}

/// How to reach the collector's HTTP API: flags, else environment, else the config file.
#[derive(Debug, Args)]
struct Server {
    /// Collector HTTP API base URL [default: http://127.0.0.1:8470].
    #[arg(long, env = "CODESTAX_URL", hide_env_values = true)]
    url: Option<String>,

    /// API key (sent as a bearer token).
    #[arg(long, env = "CODESTAX_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// TOML file with `url`, `token` and `org` (each optional; flags and environment win).
    #[arg(
        long,
        value_name = "FILE",
        env = "CODESTAX_CONFIG",
        hide_env_values = true
    )]
    config: Option<PathBuf>,
}

impl Server {
    /// The client and the org to act on (asking the collector for the key's own org when none
    /// was given).
    fn connect(&self, org: Option<&str>) -> anyhow::Result<(Client, String)> {
        let file = self.config.as_deref().map(CliConfig::load).transpose()?;
        let conn = Connection::resolve(
            self.url.clone(),
            self.token.clone(),
            org.map(str::to_string),
            file.as_ref(),
        )?;
        let client = Client::new(&conn.url, &conn.token)?;
        let org = match conn.org {
            Some(org) => org,
            None => client.whoami()?.org_id,
        };
        Ok((client, org))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportType {
    /// Audit records.
    Audit,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormatArg {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// One OCSF 1.8 event per line (docs/formats.md).
    Ocsf,
    /// One ECS document per line (docs/formats.md).
    Ecs,
}

impl From<ExportFormatArg> for ExportFormat {
    fn from(f: ExportFormatArg) -> Self {
        match f {
            ExportFormatArg::Csv => ExportFormat::Csv,
            ExportFormatArg::Json => ExportFormat::Json,
            ExportFormatArg::Ndjson => ExportFormat::Ndjson,
            ExportFormatArg::Ocsf => ExportFormat::Ocsf,
            ExportFormatArg::Ecs => ExportFormat::Ecs,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Command::Export(args) => ("export", run_export(args)),
        Command::Search(args) => ("search", run_search(args)),
        Command::Verify(args) => ("verify", run_verify(args)),
        Command::Import(args) => ("import", run_import(args)),
        Command::Demo(args) => (
            "demo",
            demo::run(
                &args.data_dir,
                &args.examples,
                demo::Ports::from_base(args.port_base),
            ),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): what it wanted it has; nothing to report.
        Err(e) if report::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("codestax: {name} failed: {}", report::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let ExportType::Audit = args.kind;
    let (client, org) = args.server.connect(args.filters.org.as_deref())?;
    let request = ExportRequest {
        org,
        filters: args.filters.to_api(),
        format: args.format.into(),
        with_chain: args.with_chain,
    };
    let output = Output::from_arg(&args.output);
    let summary = export::export(&client, &request, &output, true)?;
    // On stderr, so that stdout holds only the export when it is `-`.
    if let Output::File(path) = &output {
        eprintln!("{}", summary.describe(path));
    }
    Ok(())
}

fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let source = Source::from_arg(&args.input);
    if let Source::File(path) = &source
        && !path.exists()
    {
        anyhow::bail!("cannot open {}: no such file", path.display());
    }
    // Records go into the key's own org: the collector refuses any other.
    let (client, _) = args.server.connect(None)?;
    if matches!(source, Source::Stdin) {
        eprintln!(
            "codestax: importing from stdin: not resumable (no checkpoint); an interrupted import is rerun whole, which stores nothing twice"
        );
    }
    let request = ImportRequest {
        rejects: args
            .rejects
            .clone()
            .unwrap_or_else(|| source.default_rejects()),
        source_name: args.source.clone().or_else(|| source.default_name()),
        source,
        format: match args.format {
            ImportFormatArg::Ndjson => InputFormat::Ndjson,
            ImportFormatArg::Json => InputFormat::Json,
        },
        progress: !args.quiet,
        pacing: import::Pacing {
            batch_records: args.batch_records,
            in_flight: args.in_flight,
        },
    };
    let summary = import::import(&client, &request)?;
    eprintln!("{}", summary.describe());
    Ok(())
}

fn run_search(args: SearchArgs) -> anyhow::Result<()> {
    if args.limit == 0 {
        anyhow::bail!("--limit must be at least 1");
    }
    let (client, org) = args.server.connect(args.filters.org.as_deref())?;
    let request = SearchRequest {
        org,
        filters: args.filters.to_api(),
        limit: args.limit,
    };
    let response = search::search(&client, &request)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &response)?;
        writeln!(out)?;
    } else {
        search::write_table(&response, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

fn run_verify(args: VerifyArgs) -> anyhow::Result<()> {
    let key = verify_key(&args)?;
    let opts = VerifyOptions {
        allow_gaps: args.allow_gaps,
        key,
    };
    let verified = if args.input.as_os_str() == "-" {
        verify::verify(std::io::stdin().lock(), &opts)?
    } else {
        if !args.input.exists() {
            anyhow::bail!("cannot open {}: no such file", args.input.display());
        }
        verify::verify_file(&args.input, &opts)?
    };
    println!("{verified}");
    if let Some(since) = &args.since {
        let verify::Verified::Proven(proven) = &verified else {
            anyhow::bail!("--since needs an export with proof; this one has none");
        };
        let earlier = verify::earlier_head(since)?;
        let org = proven.manifest.org.clone();
        let growth = verify::check_growth(
            &earlier,
            &proven.checkpoint,
            opts.key.as_ref(),
            |from, to| {
                let (client, _) = args.server.connect(Some(&org)).map_err(|e| e.to_string())?;
                let path = format!("/api/v1/orgs/{org}/audit-log/proof/consistency");
                let p: codestax_common::api::ConsistencyProof = client
                    .get_json(&path, &[("from", from.to_string()), ("to", to.to_string())])
                    .map_err(|e| format!("fetching the consistency proof: {e}"))?;
                Ok(p.proof)
            },
        )?;
        println!("{growth}");
    }
    Ok(())
}

/// The collector's public key: `--public-key` (the key itself, or a file holding it), else
/// `public_key` in the `--config` file. Never a key the export carries.
fn verify_key(args: &VerifyArgs) -> anyhow::Result<Option<VerifierKey>> {
    let text = match &args.public_key {
        Some(k) if VerifierKey::parse(k.trim()).is_ok() => k.trim().to_string(),
        Some(k) => std::fs::read_to_string(k)
            .with_context(|| {
                format!(
                    "--public-key {k:?} is neither a key (<name>+<id>+<base64>) nor a readable file"
                )
            })?
            .trim()
            .to_string(),
        None => match args
            .server
            .config
            .as_deref()
            .map(CliConfig::load)
            .transpose()?
        {
            Some(CliConfig {
                public_key: Some(k),
                ..
            }) => k.trim().to_string(),
            _ => return Ok(None),
        },
    };
    VerifierKey::parse(&text)
        .map(Some)
        .with_context(|| "the public key is not a verifier key (<name>+<id>+<base64 key>, as `GET /api/v1/signing-key` gives it)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn export_parses_the_documented_example() {
        let cli = Cli::try_parse_from([
            "codestax",
            "export",
            "--type",
            "audit",
            "--format",
            "csv",
            "--output",
            "audit-log.csv",
            "--org",
            "acme",
            "--with-chain",
        ])
        .unwrap();
        let Command::Export(args) = cli.command else {
            panic!("not export")
        };
        assert!(matches!(args.format, ExportFormatArg::Csv));
        assert_eq!(args.output, PathBuf::from("audit-log.csv"));
        assert_eq!(args.filters.org.as_deref(), Some("acme"));
        assert!(args.with_chain);
    }
}
