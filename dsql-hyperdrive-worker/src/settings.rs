//! The Worker's settings, read from its variables and secrets: the same endpoint file as
//! `dsql hyperdrive` (TOML, or the same structure as JSON), the Cloudflare API token, the AWS
//! keys that sign the tokens, and the admin token that guards `POST /rotate`.

use std::fmt;
use std::path::Path;

use aws_credential_types::Credentials;
use dsql_hyperdrive::{RotatorConfig, Secret};

/// The variable holding the endpoint file (TOML text, JSON text, or a JSON object in
/// `wrangler.toml`'s `[vars]`).
pub const CONFIG_VAR: &str = "DSQL_HYPERDRIVE_CONFIG";
/// The KV namespace binding where the rotation state and the last pass are kept.
pub const STATE_BINDING: &str = "ROTATOR_STATE";

/// Secrets, set with `wrangler secret put NAME`.
pub const SECRET_NAMES: [&str; 5] = [
    "CLOUDFLARE_API_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "ADMIN_TOKEN",
];
/// Plain variables besides [`CONFIG_VAR`].
pub const VAR_NAMES: [&str; 2] = ["CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_BASE_URL"];

/// Everything a pass needs, read from the Worker's environment. `Debug` shows no secret.
#[derive(Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The endpoints and the Cloudflare account, as the CLI reads them.
    pub config: RotatorConfig,
    /// Long-term keys (or temporary ones with `AWS_SESSION_TOKEN`) that sign the DSQL tokens.
    pub credentials: Credentials,
    /// The bearer token `POST /rotate` demands; without it, manual rotation is off.
    pub admin_token: Option<Secret>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("credentials", &self.credentials)
            .field("admin_token", &self.admin_token)
            .finish()
    }
}

/// Why the Worker cannot run: what is missing or wrong, and the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(pub String);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingsError {}

fn required(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, SettingsError> {
    get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            SettingsError(format!(
                "the secret {name} is not set: run `wrangler secret put {name}`"
            ))
        })
}

/// Turns the endpoint file given as JSON into the TOML text the CLI's parser reads, so both
/// spellings get the same checks and the same messages.
pub fn json_config_to_toml(json: &str) -> Result<String, SettingsError> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| SettingsError(format!("{CONFIG_VAR} is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(SettingsError(format!(
            "{CONFIG_VAR} must be a JSON object like {{\"cloudflare\": {{...}}, \"endpoint\": [{{...}}]}}"
        )));
    }
    toml::to_string(&value).map_err(|e| {
        SettingsError(format!(
            "{CONFIG_VAR} cannot be read as an endpoint file ({e}); remove null values"
        ))
    })
}

impl Settings {
    /// Reads the settings through `get` (the Worker's variables and secrets by name).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let raw = get(CONFIG_VAR)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                SettingsError(format!(
                    "the variable {CONFIG_VAR} is not set: put the endpoint file (as for `dsql hyperdrive`) \
                     under [vars] in wrangler.toml"
                ))
            })?;
        let text = if raw.trim_start().starts_with('{') {
            json_config_to_toml(&raw)?
        } else {
            raw
        };
        // The Worker has no file system: the API token is a secret, the state lives in KV.
        let doc: toml::Table = toml::from_str(&text)
            .map_err(|e| SettingsError(format!("{CONFIG_VAR}: {}", e.message().trim())))?;
        if let Some(cf) = doc.get("cloudflare").and_then(toml::Value::as_table) {
            for (key, instead) in [
                (
                    "api_token_file",
                    "run `wrangler secret put CLOUDFLARE_API_TOKEN`",
                ),
                (
                    "state_file",
                    "the Worker keeps its state in the KV namespace bound as ROTATOR_STATE",
                ),
            ] {
                if cf.contains_key(key) {
                    return Err(SettingsError(format!(
                        "{CONFIG_VAR}: cloudflare.{key} does not apply to the Worker (it has no files): \
                         remove it; {instead}"
                    )));
                }
            }
        }
        required(&get, "CLOUDFLARE_API_TOKEN")?;
        let config = RotatorConfig::parse(&text, Path::new(CONFIG_VAR), Path::new("/"), |k| get(k))
            .map_err(|e| SettingsError(e.to_string()))?;
        let key_id = required(&get, "AWS_ACCESS_KEY_ID")?;
        let secret = required(&get, "AWS_SECRET_ACCESS_KEY")?;
        let session = get("AWS_SESSION_TOKEN")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let credentials = Credentials::new(key_id, secret, session, None, "worker-secrets");
        let admin_token = get("ADMIN_TOKEN")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        Ok(Self {
            config,
            credentials,
            admin_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-2.on.aws";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn base(config: &str) -> Vec<(&'static str, String)> {
        vec![
            (CONFIG_VAR, config.to_owned()),
            ("CLOUDFLARE_ACCOUNT_ID", "acc".to_owned()),
            ("CLOUDFLARE_API_TOKEN", "cf-api-token-xyz".to_owned()),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-key-xyz".to_owned()),
            ("ADMIN_TOKEN", "admin-token-xyz".to_owned()),
        ]
    }

    fn load(pairs: &[(&'static str, String)]) -> Result<Settings, SettingsError> {
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Settings::from_env(env(&borrowed))
    }

    #[test]
    fn toml_and_json_give_the_same_endpoints() {
        let toml_text = format!("[[endpoint]]\nname = \"orders\"\nhost = \"{HOST}\"\n");
        let json_text = format!(r#"{{"endpoint": [{{"name": "orders", "host": "{HOST}"}}]}}"#);
        let a = load(&base(&toml_text)).unwrap();
        let b = load(&base(&json_text)).unwrap();
        assert_eq!(a.config.endpoints, b.config.endpoints);
        assert_eq!(a.config.account_id, "acc");
        let e = &a.config.endpoints[0];
        assert_eq!(
            (e.user.as_str(), e.signing.expires_in().as_secs()),
            ("admin", 604_800)
        );
        assert_eq!(a.credentials.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(
            a.admin_token.as_ref().map(Secret::expose),
            Some("admin-token-xyz")
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let s = load(&base(&format!(
            "[[endpoint]]\nname = \"orders\"\nhost = \"{HOST}\"\n"
        )))
        .unwrap();
        let text = format!("{s:?}");
        for secret in ["cf-api-token-xyz", "aws-secret-key-xyz", "admin-token-xyz"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("AKIDEXAMPLE"),
            "the key id is not secret: {text}"
        );
    }

    #[test]
    fn missing_pieces_name_the_command_that_fixes_them() {
        let cfg = format!("[[endpoint]]\nname = \"orders\"\nhost = \"{HOST}\"\n");
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "CLOUDFLARE_API_TOKEN",
            "AWS_ACCESS_KEY_ID",
        ] {
            let pairs: Vec<_> = base(&cfg).into_iter().filter(|(k, _)| *k != name).collect();
            let e = load(&pairs).unwrap_err();
            assert!(
                e.0.contains(&format!("wrangler secret put {name}")),
                "{name}: {e}"
            );
        }
        let pairs: Vec<_> = base(&cfg)
            .into_iter()
            .filter(|(k, _)| *k != CONFIG_VAR)
            .collect();
        assert!(load(&pairs).unwrap_err().0.contains("[vars]"));
    }

    #[test]
    fn file_only_keys_are_refused() {
        for key in ["state_file = \"s.json\"", "api_token_file = \"t\""] {
            let cfg = format!(
                "[cloudflare]\n{key}\n[[endpoint]]\nname = \"orders\"\nhost = \"{HOST}\"\n"
            );
            let e = load(&base(&cfg)).unwrap_err();
            assert!(e.0.contains("does not apply to the Worker"), "{e}");
        }
    }

    #[test]
    fn bad_endpoint_file_names_the_variable_and_key() {
        let e = load(&base(&format!(
            "[[endpoint]]\nname = \"orders\"\nhots = \"{HOST}\"\n"
        )))
        .unwrap_err();
        assert!(e.0.contains(CONFIG_VAR) && e.0.contains("hots"), "{e}");
        let e = load(&base("[1, 2]")).unwrap_err();
        assert!(e.0.contains(CONFIG_VAR), "{e}");
        let e = json_config_to_toml("[1]").unwrap_err();
        assert!(e.0.contains("JSON object"), "{e}");
    }
}
