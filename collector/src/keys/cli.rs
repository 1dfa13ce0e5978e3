//! `codestax-collector keys ...`: create, list and revoke API keys on the collector's host.

use super::{KeyError, KeyInfo, KeyStore, Role, Token};
use codestax_common::{is_valid_org_id, time::format_rfc3339};
use std::io::Write;
use std::path::Path;

/// The `keys` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum KeysCommand {
    /// Create an API key. Prints only its token on stdout; it is shown this once and never again.
    Create {
        /// The org the key acts for.
        #[arg(long)]
        org: String,
        /// ORG_OWNER, ORG_ADMIN, MEMBER or INGEST (for agents).
        #[arg(long)]
        role: Role,
        /// A label: the host, person or purpose the key is for.
        #[arg(long)]
        name: Option<String>,
    },
    /// List API keys, revoked ones included. Never shows tokens.
    List {
        /// Only this org's keys.
        #[arg(long)]
        org: Option<String>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key: its token stops working within a second on a running collector.
    Revoke {
        /// The key's id, `key_...`.
        id: String,
    },
}

/// Runs a `keys` subcommand on the store in `data_dir`: results on `out`, notes on stderr.
pub fn run_keys_command(
    cmd: KeysCommand,
    data_dir: &Path,
    out: &mut impl Write,
) -> Result<(), KeyError> {
    run_keys_command_with(cmd, data_dir, out, &mut std::io::stderr().lock())
}

/// As [`run_keys_command`], with the notes (not the results) going to `notes`.
pub fn run_keys_command_with(
    cmd: KeysCommand,
    data_dir: &Path,
    out: &mut impl Write,
    notes: &mut impl Write,
) -> Result<(), KeyError> {
    match cmd {
        KeysCommand::Create { org, role, name } => {
            let store = KeyStore::open(data_dir)?;
            let (info, token) = store.create(&org, role, name.as_deref())?;
            print_created(&info, &token, out, notes)
        }
        KeysCommand::List { org, json } => {
            check_list_org(org.as_deref())?;
            let store = KeyStore::open(data_dir)?;
            print_list(&store.list(org.as_deref()), json, out)
        }
        KeysCommand::Revoke { id } => {
            let store = KeyStore::open(data_dir)?;
            print_revoked(&store.revoke(&id)?, out)
        }
    }
}

/// What `keys create` prints: the token alone on `out`, so `TOKEN=$(codestax-collector keys
/// create ...)` works, and a note on `notes`.
pub(crate) fn print_created(
    info: &KeyInfo,
    token: &Token,
    out: &mut impl Write,
    notes: &mut impl Write,
) -> Result<(), KeyError> {
    writeln!(out, "{}", token.expose()).map_err(KeyError::Output)?;
    out.flush().map_err(KeyError::Output)?;
    writeln!(
        notes,
        "created API key {} for org {} with role {}; its token (on stdout) is shown only once",
        info.id, info.org_id, info.role
    )
    .map_err(KeyError::Output)
}

/// `keys list --org`'s org, checked before anything is read.
pub(crate) fn check_list_org(org: Option<&str>) -> Result<(), KeyError> {
    match org {
        Some(org) if !is_valid_org_id(org) => Err(KeyError::InvalidOrg(org.to_string())),
        _ => Ok(()),
    }
}

/// What `keys list` prints: a table, or a JSON array with `json`.
pub(crate) fn print_list(
    keys: &[KeyInfo],
    json: bool,
    out: &mut impl Write,
) -> Result<(), KeyError> {
    if json {
        serde_json::to_writer_pretty(&mut *out, keys).map_err(|e| KeyError::Output(e.into()))?;
        writeln!(out).map_err(KeyError::Output)
    } else {
        write_table(keys, out).map_err(KeyError::Output)
    }
}

/// What `keys revoke` prints.
pub(crate) fn print_revoked(info: &KeyInfo, out: &mut impl Write) -> Result<(), KeyError> {
    writeln!(
        out,
        "revoked API key {} (org {}, role {})",
        info.id, info.org_id, info.role
    )
    .map_err(KeyError::Output)
}

/// The `keys list` table.
fn write_table(keys: &[KeyInfo], out: &mut impl Write) -> std::io::Result<()> {
    let header = ["ID", "ORG", "ROLE", "NAME", "CREATED", "REVOKED"].map(String::from);
    let rows: Vec<[String; 6]> = keys
        .iter()
        .map(|k| {
            [
                k.id.clone(),
                k.org_id.clone(),
                k.role.to_string(),
                k.name.clone().unwrap_or_else(|| "-".into()),
                format_rfc3339(&k.created_at),
                k.revoked_at
                    .map_or_else(|| "-".into(), |t| format_rfc3339(&t)),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KEYS_FILE, TOKEN_PREFIX};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: KeysCommand,
    }

    fn parse(args: &[&str]) -> KeysCommand {
        Cli::try_parse_from(std::iter::once("keys").chain(args.iter().copied()))
            .unwrap()
            .cmd
    }

    fn run(cmd: KeysCommand, dir: &Path) -> Result<(String, String), KeyError> {
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        run_keys_command_with(cmd, dir, &mut out, &mut notes)?;
        Ok((
            String::from_utf8(out).unwrap(),
            String::from_utf8(notes).unwrap(),
        ))
    }

    #[test]
    fn parses_arguments() {
        assert_eq!(
            parse(&[
                "create", "--org", "acme", "--role", "INGEST", "--name", "host-1"
            ]),
            KeysCommand::Create {
                org: "acme".into(),
                role: Role::Ingest,
                name: Some("host-1".into())
            }
        );
        assert_eq!(
            parse(&["list", "--json"]),
            KeysCommand::List {
                org: None,
                json: true
            }
        );
        assert_eq!(
            parse(&["revoke", "key_0123456789abcdef"]),
            KeysCommand::Revoke {
                id: "key_0123456789abcdef".into()
            }
        );
        assert!(
            Cli::try_parse_from(["keys", "create", "--org", "acme", "--role", "ROOT"]).is_err()
        );
    }

    #[test]
    fn create_prints_only_the_token_and_list_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let (out, notes) = run(
            parse(&[
                "create",
                "--org",
                "acme",
                "--role",
                "ORG_ADMIN",
                "--name",
                "ci",
            ]),
            dir.path(),
        )
        .unwrap();
        let token = out.strip_suffix('\n').expect("one line");
        assert!(!token.contains('\n'), "{out:?}");
        assert!(token.starts_with(TOKEN_PREFIX), "{out:?}");
        let store = KeyStore::open(dir.path()).unwrap();
        let info = store.authenticate(token).expect("the printed token works");
        assert!(
            notes.contains(&info.id) && notes.contains("ORG_ADMIN"),
            "{notes}"
        );
        assert!(!notes.contains(token));

        let hash = crate::keys::token::TokenHash::of(token).to_hex();
        for args in [
            &["list"][..],
            &["list", "--json"],
            &["list", "--org", "acme"],
        ] {
            let (out, _) = run(parse(args), dir.path()).unwrap();
            assert!(out.contains(&info.id), "{args:?}: {out}");
            assert!(
                !out.contains(token) && !out.contains(&hash),
                "{args:?}: {out}"
            );
        }
        let (table, _) = run(parse(&["list"]), dir.path()).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("ID") && lines[0].ends_with("REVOKED"),
            "{table}"
        );
        assert!(
            lines[1].contains("acme") && lines[1].contains(" ci "),
            "{table}"
        );
        let (json, _) = run(parse(&["list", "--json"]), dir.path()).unwrap();
        let listed: Vec<KeyInfo> = serde_json::from_str(&json).unwrap();
        assert_eq!(listed, vec![info.clone()]);
        let (other_org, _) = run(parse(&["list", "--org", "globex"]), dir.path()).unwrap();
        assert_eq!(other_org.lines().count(), 1, "{other_org}");

        let (out, _) = run(parse(&["revoke", &info.id]), dir.path()).unwrap();
        assert!(out.contains(&info.id), "{out}");
        let err = run(parse(&["revoke", &info.id]), dir.path()).unwrap_err();
        assert!(err.to_string().contains("already revoked"), "{err}");
        let raw = std::fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(!raw.contains(token));
    }

    #[test]
    fn bad_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(
            parse(&["create", "--org", "no spaces", "--role", "MEMBER"]),
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::InvalidOrg(_)), "{err}");
        let err = run(parse(&["revoke", "key_0000000000000000"]), dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::NotFound(_)), "{err}");
    }
}
