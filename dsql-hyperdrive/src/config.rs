//! The rotator's configuration file (TOML): the Cloudflare account and the endpoints to keep fresh.
//!
//! ```toml
//! [cloudflare]
//! account_id = "0123456789abcdef0123456789abcdef"   # or CLOUDFLARE_ACCOUNT_ID
//! # API token: CLOUDFLARE_API_TOKEN, or api_token_file = "path"
//! # api_base = "https://api.cloudflare.com/client/v4" (CLOUDFLARE_API_BASE_URL overrides it)
//! state_file = "hyperdrive-state.json"              # optional
//!
//! [[endpoint]]
//! name = "orders-primary"                           # the Hyperdrive configuration's name
//! host = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-2.on.aws"   # or cluster_id + region
//! # region, user ("admin"), database ("postgres"), port (5432), expires_in (604800) optional
//! ```
//!
//! Relative paths (`api_token_file`, `state_file`) are relative to the configuration file's
//! directory, so the same file works from cron, systemd or a container.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dsql_auth_core::token::MAX_EXPIRES_IN;
use dsql_auth_core::{ConnectOptions, Endpoint, SigningParams};
use toml::Spanned;

use crate::client::DEFAULT_API_BASE;
use crate::secret::Secret;

/// A configuration file that cannot be used: the file, the line and the key at fault, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The file (or `<input>` for a string).
    pub path: PathBuf,
    /// 1-based line of the fault, when known.
    pub line: Option<usize>,
    /// The key at fault (`endpoint[1].host`), when known.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    cloudflare: Option<Spanned<RawCloudflare>>,
    #[serde(default)]
    endpoint: Vec<Spanned<RawEndpoint>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloudflare {
    account_id: Option<Spanned<String>>,
    api_token_file: Option<Spanned<String>>,
    api_base: Option<Spanned<String>>,
    state_file: Option<Spanned<String>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: Spanned<String>,
    host: Option<Spanned<String>>,
    cluster_id: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    expires_in: Option<Spanned<u64>>,
}

/// One endpoint: a Hyperdrive configuration name and the DSQL cluster it must reach.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointSpec {
    /// The Hyperdrive configuration's name.
    pub name: String,
    /// Where Hyperdrive connects and what the token is signed for.
    pub endpoint: Endpoint,
    /// The database user (`admin` signs for `DbConnectAdmin`, others for `DbConnect`).
    pub user: String,
    /// The database name.
    pub database: String,
    /// Signing parameters (host, region, action, expiry).
    pub signing: SigningParams,
}

/// A loaded configuration file, with environment overrides applied.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RotatorConfig {
    /// Cloudflare account id.
    pub account_id: String,
    /// Cloudflare API token (needs "Hyperdrive Write").
    pub api_token: Secret,
    /// API base URL.
    pub api_base: String,
    /// Where the last rotation of each endpoint is recorded.
    pub state_file: Option<PathBuf>,
    /// The endpoints, in file order.
    pub endpoints: Vec<EndpointSpec>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

impl RotatorConfig {
    /// Reads `path`, taking `CLOUDFLARE_ACCOUNT_ID`, `CLOUDFLARE_API_TOKEN` and
    /// `CLOUDFLARE_API_BASE_URL` from `env`.
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: None,
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, path, &dir, env)
    }

    /// Parses `text` (named `path` in errors); relative paths are resolved against `dir`.
    pub fn parse(
        text: &str,
        path: &Path,
        dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let err = |span: Option<std::ops::Range<usize>>, key: Option<String>, message: String| {
            ConfigError {
                path: path.to_owned(),
                line: span.map(|s| line_of(text, s.start)),
                key,
                message,
            }
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            // serde names the unknown or missing key in backquotes: surface it as the key.
            let key = message.split('`').nth(1).map(str::to_owned);
            err(e.span(), key, message)
        })?;
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let cf_span = raw.cloudflare.as_ref().map(Spanned::span);
        let cf = raw.cloudflare.map(Spanned::into_inner).unwrap_or_default();
        let resolve = |p: &str| {
            let p = PathBuf::from(p);
            if p.is_relative() { dir.join(p) } else { p }
        };

        let account_id = match (&cf.account_id, env("CLOUDFLARE_ACCOUNT_ID")) {
            (Some(a), _) if !a.get_ref().trim().is_empty() => a.get_ref().trim().to_owned(),
            (Some(a), _) => {
                return Err(err(
                    Some(a.span()),
                    Some("cloudflare.account_id".into()),
                    "is empty".into(),
                ));
            }
            (None, Some(a)) => a.trim().to_owned(),
            (None, None) => {
                return Err(err(
                    cf_span,
                    Some("cloudflare.account_id".into()),
                    "no Cloudflare account id: set account_id in [cloudflare] or CLOUDFLARE_ACCOUNT_ID"
                        .into(),
                ));
            }
        };

        // The environment wins so a secret manager can inject the token without editing files.
        let api_token = match (env("CLOUDFLARE_API_TOKEN"), &cf.api_token_file) {
            (Some(t), _) => Secret::new(t.trim()),
            (None, Some(file)) => {
                let p = resolve(file.get_ref());
                let t = std::fs::read_to_string(&p).map_err(|e| {
                    err(
                        Some(file.span()),
                        Some("cloudflare.api_token_file".into()),
                        format!("cannot read the API token from {}: {e}", p.display()),
                    )
                })?;
                let t = t.trim();
                if t.is_empty() {
                    return Err(err(
                        Some(file.span()),
                        Some("cloudflare.api_token_file".into()),
                        format!("{} is empty", p.display()),
                    ));
                }
                Secret::new(t)
            }
            (None, None) => {
                return Err(err(
                    cf_span,
                    Some("cloudflare.api_token_file".into()),
                    "no Cloudflare API token: set CLOUDFLARE_API_TOKEN or api_token_file in [cloudflare] \
                     (the token needs \"Hyperdrive Write\")"
                        .into(),
                ));
            }
        };

        let api_base = match (env("CLOUDFLARE_API_BASE_URL"), &cf.api_base) {
            (Some(b), _) => b.trim().to_owned(),
            (None, Some(b)) => {
                let v = b.get_ref().trim();
                if !(v.starts_with("https://") || v.starts_with("http://")) {
                    return Err(err(
                        Some(b.span()),
                        Some("cloudflare.api_base".into()),
                        format!("{v:?} is not an http(s) URL; the default is {DEFAULT_API_BASE}"),
                    ));
                }
                v.to_owned()
            }
            (None, None) => DEFAULT_API_BASE.to_owned(),
        };
        let state_file = cf.state_file.as_ref().map(|s| resolve(s.get_ref()));

        if raw.endpoint.is_empty() {
            return Err(err(
                None,
                Some("endpoint".into()),
                "no [[endpoint]] table: add one per Hyperdrive configuration".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut endpoints = Vec::with_capacity(raw.endpoint.len());
        for (i, spanned) in raw.endpoint.into_iter().enumerate() {
            let table_span = spanned.span();
            let e = spanned.into_inner();
            let key = |k: &str| Some(format!("endpoint[{i}].{k}"));
            let name = e.name.get_ref().trim().to_owned();
            if name.is_empty() {
                return Err(err(Some(e.name.span()), key("name"), "is empty".into()));
            }
            if !names.insert(name.clone()) {
                return Err(err(
                    Some(e.name.span()),
                    key("name"),
                    format!(
                        "{name:?} is used by another [[endpoint]]: each name is one Hyperdrive configuration"
                    ),
                ));
            }
            // The core's one configuration type derives the endpoint (host, or cluster id and
            // region), the defaults (user admin, database postgres, port 5432) and what to sign.
            let mut options = match (&e.host, &e.cluster_id) {
                (Some(h), cid) => {
                    let mut o = ConnectOptions::new(h.get_ref().trim());
                    o.cluster_id = cid.as_ref().map(|c| c.get_ref().trim().to_owned());
                    o
                }
                (None, Some(c)) => {
                    if e.region.is_none() {
                        return Err(err(
                            Some(c.span()),
                            key("region"),
                            "cluster_id needs a region (or give the full host instead)".into(),
                        ));
                    }
                    ConnectOptions::new(c.get_ref().trim())
                }
                (None, None) => {
                    return Err(err(
                        Some(table_span),
                        key("host"),
                        "missing: give host, or cluster_id and region".into(),
                    ));
                }
            };
            options.region = e.region.as_ref().map(|r| r.get_ref().trim().to_owned());
            let (at, what) = match (&e.host, &e.cluster_id) {
                (Some(h), _) => (h.span(), "host"),
                (None, Some(c)) => (c.span(), "cluster_id"),
                (None, None) => (table_span.clone(), "host"),
            };
            let endpoint = options
                .endpoint()
                .map_err(|x| err(Some(at), key(what), x.to_string()))?;
            if let Some(p) = &e.port {
                if *p.get_ref() == 0 {
                    return Err(err(Some(p.span()), key("port"), "must be 1..=65535".into()));
                }
                options.port = *p.get_ref();
            }
            let endpoint = endpoint.with_port(options.port);
            if let Some(u) = &e.user {
                options.user = u.get_ref().trim().to_owned();
                if options.user.is_empty() {
                    return Err(err(Some(u.span()), key("user"), "is empty".into()));
                }
            }
            if let Some(d) = &e.database {
                options.dbname = d.get_ref().trim().to_owned();
                if options.dbname.is_empty() {
                    return Err(err(Some(d.span()), key("database"), "is empty".into()));
                }
            }
            // Hyperdrive keeps the password for days: the longest token DSQL allows by default.
            options.token_duration = e
                .expires_in
                .as_ref()
                .map_or(MAX_EXPIRES_IN, |x| Duration::from_secs(*x.get_ref()));
            let signing = options.signing_params().map_err(|x| {
                err(
                    e.expires_in.as_ref().map(Spanned::span),
                    key("expires_in"),
                    x.to_string(),
                )
            })?;
            let (user, database) = (options.user, options.dbname);
            endpoints.push(EndpointSpec {
                name,
                endpoint,
                user,
                database,
                signing,
            });
        }
        Ok(Self {
            account_id,
            api_token,
            api_base,
            state_file,
            endpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsql_auth_core::Action;

    const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-2.on.aws";

    fn parse(text: &str) -> Result<RotatorConfig, ConfigError> {
        RotatorConfig::parse(text, Path::new("cfg.toml"), Path::new("/etc/dsql"), |k| {
            (k == "CLOUDFLARE_API_TOKEN").then(|| "tok".to_owned())
        })
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = parse(&format!(
            "[cloudflare]\naccount_id = \"acc\"\nstate_file = \"s.json\"\n[[endpoint]]\nname = \"a\"\nhost = \"{HOST}\"\n"
        ))
        .unwrap();
        let e = &c.endpoints[0];
        assert_eq!(
            (e.user.as_str(), e.database.as_str(), e.endpoint.port()),
            ("admin", "postgres", 5432)
        );
        assert_eq!(e.signing.action(), Action::DbConnectAdmin);
        assert_eq!(e.signing.expires_in(), Duration::from_secs(604_800));
        assert_eq!(c.api_base, DEFAULT_API_BASE);
        assert_eq!(c.state_file.as_deref(), Some(Path::new("/etc/dsql/s.json")));
    }

    #[test]
    fn debug_hides_the_api_token() {
        let c = RotatorConfig::parse(
            &format!("[cloudflare]\naccount_id = \"acc\"\n[[endpoint]]\nname = \"a\"\nhost = \"{HOST}\"\n"),
            Path::new("c.toml"),
            Path::new("."),
            |k| (k == "CLOUDFLARE_API_TOKEN").then(|| "cf-secret-token-123".to_owned()),
        )
        .unwrap();
        assert_eq!(c.api_token.expose(), "cf-secret-token-123");
        assert!(!format!("{c:?}").contains("cf-secret-token-123"));
    }

    #[test]
    fn missing_token_and_account_say_what_to_set() {
        let e = RotatorConfig::parse(
            &format!("[[endpoint]]\nname = \"a\"\nhost = \"{HOST}\"\n"),
            Path::new("c.toml"),
            Path::new("."),
            |_| None,
        )
        .unwrap_err();
        assert!(e.message.contains("CLOUDFLARE_ACCOUNT_ID"), "{e}");
        let e = RotatorConfig::parse(
            &format!("[cloudflare]\naccount_id = \"acc\"\n[[endpoint]]\nname = \"a\"\nhost = \"{HOST}\"\n"),
            Path::new("c.toml"),
            Path::new("."),
            |_| None,
        )
        .unwrap_err();
        assert!(e.message.contains("CLOUDFLARE_API_TOKEN"), "{e}");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = parse(&format!(
            "[cloudflare]\naccount_id = \"acc\"\n[[endpoint]]\nname = \"a\"\nhots = \"{HOST}\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(e.key.as_deref(), Some("hots"), "{e}");
    }

    #[test]
    fn bad_expiry_names_its_line() {
        let e = parse(&format!(
            "[cloudflare]\naccount_id = \"acc\"\n[[endpoint]]\nname = \"a\"\nhost = \"{HOST}\"\nexpires_in = 999999\n"
        ))
        .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(6), Some("endpoint[0].expires_in")),
            "{e}"
        );
    }

    #[test]
    fn cluster_id_with_region_and_duplicates() {
        let c = parse(
            "[cloudflare]\naccount_id = \"acc\"\n[[endpoint]]\nname = \"a\"\ncluster_id = \"abcdefghijklmnopqrstuvwxyz\"\nregion = \"us-east-1\"\nuser = \"app\"\n",
        )
        .unwrap();
        assert_eq!(
            c.endpoints[0].endpoint.connect_host(),
            "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"
        );
        assert_eq!(c.endpoints[0].signing.action(), Action::DbConnect);
        let e = parse(&format!(
            "[cloudflare]\naccount_id = \"acc\"\n[[endpoint]]\nname = \"a\"\nhost = \"{HOST}\"\n[[endpoint]]\nname = \"a\"\nhost = \"{HOST}\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(7), Some("endpoint[1].name")),
            "{e}"
        );
    }
}
