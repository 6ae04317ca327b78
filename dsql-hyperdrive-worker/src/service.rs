//! What the Worker does, apart from the Workers runtime: a rotation pass with its state in a
//! key-value store, the status document, and the routing of `GET /status` and `POST /rotate`.
//! Built natively too, so it is tested against the fake Hyperdrive API without workerd.

use std::sync::Arc;

use dsql_hyperdrive::io::{BoxFuture, Io};
use dsql_hyperdrive::rotate::status_json;
use dsql_hyperdrive::state::format_time;
use dsql_hyperdrive::{HyperdriveClient, Rotator, Secret, StateFile, SyncOptions};
use serde_json::{Value, json};

use crate::settings::Settings;

/// The KV key of the rotation state: the CLI's state file, as JSON.
pub const STATE_KEY: &str = "state";
/// The KV key of the last pass's record.
pub const LAST_PASS_KEY: &str = "last_pass";

/// Where the state is kept between invocations (KV in the Worker). Values hold no secret.
pub trait StateStore {
    /// The value at `key`, if any.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<String>, String>>;
    /// Stores `value` at `key`.
    fn put(&self, key: &str, value: String) -> BoxFuture<'_, Result<(), String>>;
}

/// An answer: HTTP status and a JSON body (never a secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Reply {
    fn new(status: u16, body: Value) -> Self {
        Self { status, body }
    }

    /// An error answer: `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::new(status, json!({ "error": message.into() }))
    }
}

/// The rotator with the Worker's settings.
#[derive(Debug)]
pub struct Service {
    rotator: Rotator,
    admin_token: Option<Secret>,
    io: Arc<dyn Io>,
}

/// Compares without an early exit, so response times do not reveal how much of a guess matched.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0 && !b.is_empty()
}

impl Service {
    /// A service on `io` (the Worker's Fetch and clock, or a native one in tests).
    pub fn new(settings: Settings, io: Arc<dyn Io>) -> Result<Self, String> {
        let config = settings.config;
        let client = HyperdriveClient::builder(config.account_id.clone(), config.api_token.clone())
            .api_base(config.api_base.clone())
            .io(io.clone())
            .build()
            .map_err(|e| e.to_string())?;
        // One endpoint at a time: a Worker invocation has a small budget of simultaneous
        // connections, and a pass over a few endpoints is short anyway.
        let rotator =
            Rotator::new(client, settings.credentials, config.endpoints).with_concurrency(1);
        Ok(Self {
            rotator,
            admin_token: settings.admin_token,
            io,
        })
    }

    async fn load_state(&self, store: &dyn StateStore) -> Result<StateFile, String> {
        match store.get(STATE_KEY).await? {
            None => Ok(StateFile::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                format!(
                    "the stored rotation state is not valid ({e}); delete the KV key {STATE_KEY:?} \
                     to rotate everything once"
                )
            }),
        }
    }

    /// One pass: rotates what is due (everything with `force`), saves the state when a
    /// password was written, and records the pass under [`LAST_PASS_KEY`]. Returns the record.
    pub async fn rotate(&self, store: &dyn StateStore, trigger: &str, force: bool) -> Value {
        let started = self.io.now();
        let mut problems: Vec<String> = Vec::new();
        let (endpoints, all_ok) = match self.load_state(store).await {
            Err(e) => {
                problems.push(e);
                (Value::Null, false)
            }
            Ok(mut state) => {
                let mut opts = SyncOptions::new(started);
                opts.force = force;
                let report = self.rotator.sync(&mut state, &opts).await;
                if report.wrote() {
                    let text = serde_json::to_string(&state).unwrap_or_default();
                    if let Err(e) = store.put(STATE_KEY, text).await {
                        problems.push(format!(
                            "the passwords were written but the state could not be saved ({e}); \
                             the next pass will rotate them again"
                        ));
                    }
                }
                (report.to_json(), report.all_ok())
            }
        };
        let record = json!({
            "trigger": trigger,
            "started_at": format_time(started),
            "finished_at": format_time(self.io.now()),
            "ok": all_ok && problems.is_empty(),
            "endpoints": endpoints,
            "errors": problems,
        });
        if let Err(e) = store.put(LAST_PASS_KEY, record.to_string()).await {
            // The record is for people; the rotation itself is done.
            tracing::warn!(error = %e, "cannot record the pass");
        }
        record
    }

    /// Each endpoint's configuration, last rotation and next one, and the last pass's record.
    pub async fn status(&self, store: &dyn StateStore) -> Reply {
        let state = match self.load_state(store).await {
            Ok(s) => s,
            Err(e) => return Reply::error(500, e),
        };
        let statuses = self.rotator.status(&state, self.io.now()).await;
        let last_pass = match store.get(LAST_PASS_KEY).await {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or(Value::Null),
            Ok(None) => Value::Null,
            Err(e) => json!({ "error": e }),
        };
        let ok = statuses.iter().all(|s| s.error.is_none());
        Reply::new(
            200,
            json!({
                "now": format_time(self.io.now()),
                "ok": ok,
                "endpoints": status_json(&statuses),
                "last_pass": last_pass,
            }),
        )
    }

    /// Routes one HTTP request: `GET /` or `GET /status`, and `POST /rotate[?force=true]` with
    /// `Authorization: Bearer <ADMIN_TOKEN>`.
    pub async fn handle(
        &self,
        store: &dyn StateStore,
        method: &str,
        path: &str,
        query: Option<&str>,
        authorization: Option<&str>,
    ) -> Reply {
        match (method, path.trim_end_matches('/')) {
            ("GET" | "HEAD", "" | "/status") => self.status(store).await,
            ("POST", "/rotate") => {
                let Some(expected) = &self.admin_token else {
                    return Reply::error(
                        403,
                        "manual rotation is off: set it up with `wrangler secret put ADMIN_TOKEN`",
                    );
                };
                let given = authorization
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .unwrap_or("");
                if !same_secret(given.trim(), expected.expose()) {
                    return Reply::error(401, "send Authorization: Bearer <ADMIN_TOKEN>");
                }
                let force = query
                    .unwrap_or("")
                    .split('&')
                    .any(|p| p == "force" || p == "force=true" || p == "force=1");
                let record = self.rotate(store, "manual", force).await;
                let status = if record["ok"] == Value::Bool(true) {
                    200
                } else {
                    502
                };
                Reply::new(status, record)
            }
            (_, "" | "/status" | "/rotate") => {
                Reply::error(405, "use GET /status, or POST /rotate with the admin token")
            }
            _ => Reply::error(404, "not found: use GET /status or POST /rotate"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_comparison() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("abcd", "abc"));
        assert!(!same_secret("", ""));
    }
}
