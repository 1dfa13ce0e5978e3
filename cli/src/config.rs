//! Where the collector is and which key to use: `--url` / `--token` / `--org`, else the
//! `CODESTAX_URL` / `CODESTAX_TOKEN` environment variables, else the config file given with
//! `--config FILE` (or `CODESTAX_CONFIG`), else the defaults (the local collector; the key's own
//! org, asked from `GET /api/v1/whoami`).
//!
//! The file is TOML:
//!
//! ```toml
//! # Collector HTTP API base URL.
//! url = "https://audit.example.com"
//! # API key: an ORG_ADMIN or ORG_OWNER key to export and search.
//! token = "csk_..."
//! # Org to export and search when --org is not given.
//! org = "acme"
//! # The collector's public key, pinned, for `codestax verify`.
//! public_key = "codestax-collector+1a2b3c4d+AekyeRrm…"
//! ```

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The collector a CLI talks to when nothing says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8470";

/// The CLI's config file. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// Collector HTTP API base URL, e.g. `http://127.0.0.1:8470`.
    #[serde(default)]
    pub url: Option<String>,
    /// API key, sent as a bearer token.
    #[serde(default)]
    pub token: Option<String>,
    /// Org id used when `--org` is not given.
    #[serde(default)]
    pub org: Option<String>,
    /// The collector's public key (`<name>+<id>+<base64>`), pinned: what `codestax verify`
    /// checks an export's proof with when `--public-key` is not given.
    #[serde(default)]
    pub public_key: Option<String>,
}

/// Why the config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error(
        "no API key: pass --token, set CODESTAX_TOKEN, or put token = \"...\" in a --config file"
    )]
    NoToken,
}

impl CliConfig {
    /// Reads the config file at `path`, which must exist.
    pub fn load(path: &Path) -> Result<CliConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Where to connect, resolved from flags (clap has already folded the environment into them),
/// the file and the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub url: String,
    pub token: String,
    /// The org, when given; otherwise the key's own (ask `whoami`).
    pub org: Option<String>,
}

impl Connection {
    /// Flags win over the file, the file over the defaults. A token is required.
    pub fn resolve(
        url: Option<String>,
        token: Option<String>,
        org: Option<String>,
        file: Option<&CliConfig>,
    ) -> Result<Connection, ConfigError> {
        let file = file.cloned().unwrap_or_default();
        let token = token
            .or(file.token)
            .filter(|t| !t.trim().is_empty())
            .ok_or(ConfigError::NoToken)?;
        Ok(Connection {
            url: url.or(file.url).unwrap_or_else(|| DEFAULT_URL.to_string()),
            token: token.trim().to_string(),
            org: org.or(file.org),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in the module docs parses.
    #[test]
    fn the_documented_example_parses() {
        let example = "# Collector HTTP API base URL.\nurl = \"https://audit.example.com\"\n# API key.\ntoken = \"csk_x\"\norg = \"acme\"\n";
        let c: CliConfig = toml::from_str(example).unwrap();
        assert_eq!(c.url.as_deref(), Some("https://audit.example.com"));
        assert_eq!(c.org.as_deref(), Some("acme"));
        assert!(
            toml::from_str::<CliConfig>("tokn = \"x\"").is_err(),
            "typos are refused"
        );
        assert_eq!(
            toml::from_str::<CliConfig>("").unwrap(),
            CliConfig::default()
        );
    }

    #[test]
    fn flags_win_over_the_file_and_a_token_is_required() {
        let file = CliConfig {
            url: Some("http://file:1".into()),
            token: Some("file-token".into()),
            org: Some("file-org".into()),
            public_key: None,
        };
        let c = Connection::resolve(Some("http://flag:2".into()), None, None, Some(&file)).unwrap();
        assert_eq!(c.url, "http://flag:2");
        assert_eq!(c.token, "file-token");
        assert_eq!(c.org.as_deref(), Some("file-org"));
        let c = Connection::resolve(None, Some("t".into()), None, None).unwrap();
        assert_eq!((c.url.as_str(), c.org), (DEFAULT_URL, None));
        assert!(matches!(
            Connection::resolve(None, None, None, None),
            Err(ConfigError::NoToken)
        ));
    }
}
