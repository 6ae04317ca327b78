//! One pass over every endpoint: sign, then write the password into the Hyperdrive configuration
//! found by name (PATCH with the password only), or create it when asked. Endpoints run
//! concurrently and each gets its own report; one failure never stops the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use futures_util::StreamExt;

use crate::client::HyperdriveClient;
use crate::config::EndpointSpec;
use crate::model::{HyperdriveConfig, NewConfig, Origin};
use crate::policy::{Decision, RotationPolicy, RotationState};
use crate::secret::Secret;
use crate::state::{EndpointState, StateFile, format_time};

/// What a pass did (or, in a dry run, would do) to one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncAction {
    /// A new password was written with PATCH.
    Rotated,
    /// The configuration was created.
    Created,
    /// Nothing was due.
    Unchanged,
    /// The endpoint failed; see the report's error.
    Failed,
    /// Dry run: a rotation is due.
    WouldRotate,
    /// Dry run: the configuration would be created.
    WouldCreate,
}

impl SyncAction {
    /// The name used in reports (`rotated`, `would_create`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncAction::Rotated => "rotated",
            SyncAction::Created => "created",
            SyncAction::Unchanged => "unchanged",
            SyncAction::Failed => "failed",
            SyncAction::WouldRotate => "would_rotate",
            SyncAction::WouldCreate => "would_create",
        }
    }
}

/// One endpoint's result. Holds no token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointReport {
    /// The endpoint (Hyperdrive configuration) name.
    pub name: String,
    /// The configuration id, when one was found or created.
    pub config_id: Option<String>,
    /// What happened.
    pub action: SyncAction,
    /// When the stored token expires (the new one, or the recorded one when unchanged).
    pub token_expiry: Option<SystemTime>,
    /// When the stored password stops working: the earlier of token and credentials expiry.
    pub effective_expiry: Option<SystemTime>,
    /// When the next rotation is due (when unchanged).
    pub next_rotation: Option<SystemTime>,
    /// Why it failed.
    pub error: Option<String>,
    /// Things the operator should know (temporary credentials, short lives).
    pub warnings: Vec<String>,
}

impl EndpointReport {
    fn new(name: &str, action: SyncAction) -> Self {
        Self {
            name: name.to_owned(),
            config_id: None,
            action,
            token_expiry: None,
            effective_expiry: None,
            next_rotation: None,
            error: None,
            warnings: Vec::new(),
        }
    }

    fn failed(name: &str, config_id: Option<String>, error: impl std::fmt::Display) -> Self {
        Self {
            config_id,
            error: Some(error.to_string()),
            ..Self::new(name, SyncAction::Failed)
        }
    }
}

/// The result of one pass, in configuration file order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// One report per endpoint.
    pub endpoints: Vec<EndpointReport>,
}

impl SyncReport {
    /// Whether no endpoint failed.
    pub fn all_ok(&self) -> bool {
        self.endpoints
            .iter()
            .all(|e| e.action != SyncAction::Failed)
    }

    /// Whether any endpoint's password was written (rotated or created).
    pub fn wrote(&self) -> bool {
        self.endpoints
            .iter()
            .any(|e| matches!(e.action, SyncAction::Rotated | SyncAction::Created))
    }

    /// The report as JSON, one member per endpoint name (what `dsql hyperdrive sync --output
    /// json` prints and the Worker serves). Holds no token.
    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = serde_json::Map::new();
        for e in &self.endpoints {
            doc.insert(
                e.name.clone(),
                serde_json::json!({
                    "config_id": e.config_id,
                    "action": e.action.as_str(),
                    "token_expiry": e.token_expiry.map(format_time),
                    "effective_expiry": e.effective_expiry.map(format_time),
                    "next_rotation": e.next_rotation.map(format_time),
                    "error": e.error,
                    "warnings": e.warnings,
                }),
            );
        }
        serde_json::Value::Object(doc)
    }
}

/// Options of one pass.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SyncOptions {
    /// Report what would change; write nothing (neither Cloudflare nor the state file).
    pub dry_run: bool,
    /// Rotate even when not due.
    pub force: bool,
    /// Create configurations that do not exist (with the full origin).
    pub create_missing: bool,
    /// The time the rotation policy decides at. Tokens are always signed at the client's
    /// [`Io`](crate::io::Io) clock.
    pub now: SystemTime,
}

impl SyncOptions {
    /// Rotate what is due, create nothing, at `now`.
    pub fn new(now: SystemTime) -> Self {
        Self {
            dry_run: false,
            force: false,
            create_missing: false,
            now,
        }
    }
}

/// Rotates the passwords of a set of endpoints.
#[derive(Debug, Clone)]
pub struct Rotator {
    client: HyperdriveClient,
    credentials: SharedCredentialsProvider,
    endpoints: Arc<Vec<EndpointSpec>>,
    policy: RotationPolicy,
    concurrency: usize,
}

/// Per-pass signing material: the credentials, or why they could not be loaded.
type Creds = Result<Credentials, String>;

/// One endpoint's part of a pass, decided before any write.
enum Plan {
    /// Nothing to write: the report says why (unchanged, failed, dry run).
    Done(EndpointReport),
    /// Sign and write: PATCH the configuration `id`, or create it when `None`.
    Write { id: Option<String> },
}

fn fingerprint(spec: &EndpointSpec) -> String {
    format!(
        "{}@{}:{}/{} sign={} region={} expires_in={}",
        spec.user,
        spec.endpoint.connect_host(),
        spec.endpoint.port(),
        spec.database,
        spec.signing.host(),
        spec.signing.region(),
        spec.signing.expires_in().as_secs()
    )
}

impl Rotator {
    /// A rotator writing to `client`'s account, signing with `credentials`.
    pub fn new(
        client: HyperdriveClient,
        credentials: impl ProvideCredentials + 'static,
        endpoints: Vec<EndpointSpec>,
    ) -> Self {
        Self {
            client,
            credentials: SharedCredentialsProvider::new(credentials),
            endpoints: Arc::new(endpoints),
            policy: RotationPolicy::default(),
            concurrency: 4,
        }
    }

    /// Replaces the rotation policy.
    #[must_use]
    pub fn with_policy(mut self, policy: RotationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How many endpoints are processed at once (at least 1; default 4).
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The endpoints, in file order.
    pub fn endpoints(&self) -> &[EndpointSpec] {
        &self.endpoints
    }

    /// One pass over every endpoint. Successful writes are recorded in `state` (not in a dry run);
    /// saving it is the caller's business.
    ///
    /// First every endpoint is decided from the listing and `state` alone; then, only when
    /// something must be written, the credentials are loaded once and the writes run.
    pub async fn sync(&self, state: &mut StateFile, opts: &SyncOptions) -> SyncReport {
        let configs = match self.client.list_configs().await {
            Ok(c) => c,
            Err(e) => {
                let endpoints = self
                    .endpoints
                    .iter()
                    .map(|s| EndpointReport::failed(&s.name, None, &e))
                    .collect();
                return SyncReport { endpoints };
            }
        };
        let mut by_name: HashMap<&str, Vec<&HyperdriveConfig>> = HashMap::new();
        for c in &configs {
            by_name.entry(c.name.as_str()).or_default().push(c);
        }
        let plans: Vec<Plan> = self
            .endpoints
            .iter()
            .map(|spec| {
                let found = by_name.get(spec.name.as_str()).cloned().unwrap_or_default();
                self.plan(spec, &found, state.endpoints.get(&spec.name), opts)
            })
            .collect();
        let creds: Creds = if plans.iter().any(|p| matches!(p, Plan::Write { .. })) {
            self.credentials.provide_credentials().await.map_err(|e| {
                format!(
                    "cannot load AWS credentials to sign the token: {e}; configure the AWS default chain \
                     (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance or container role)"
                )
            })
        } else {
            Err("no credentials were loaded: nothing was due".to_owned())
        };
        let results: Vec<(EndpointReport, Option<EndpointState>)> =
            futures_util::stream::iter(self.endpoints.iter().zip(plans))
                .map(|(spec, plan)| {
                    let creds = &creds;
                    async move {
                        match plan {
                            Plan::Done(report) => (report, None),
                            Plan::Write { id } => self.write(spec, id, creds).await,
                        }
                    }
                })
                .buffered(self.concurrency)
                .collect()
                .await;
        let mut endpoints = Vec::with_capacity(results.len());
        for (report, new_state) in results {
            if let Some(s) = new_state {
                state.endpoints.insert(report.name.clone(), s);
            }
            endpoints.push(report);
        }
        SyncReport { endpoints }
    }

    /// What a pass does to one endpoint, decided without I/O.
    fn plan(
        &self,
        spec: &EndpointSpec,
        found: &[&HyperdriveConfig],
        recorded: Option<&EndpointState>,
        opts: &SyncOptions,
    ) -> Plan {
        let name = spec.name.as_str();
        let existing = match found {
            [] => None,
            [one] => Some(*one),
            many => {
                let ids: Vec<&str> = many.iter().map(|c| c.id.as_str()).collect();
                let msg = format!(
                    "{} Hyperdrive configurations are named {name:?} (ids {}): rename or delete all but one; \
                     nothing was written",
                    many.len(),
                    ids.join(", ")
                );
                return Plan::Done(EndpointReport::failed(name, None, msg));
            }
        };
        let Some(existing) = existing else {
            if !opts.create_missing {
                let msg = format!(
                    "no Hyperdrive configuration is named {name:?}; pass --create-missing to create it"
                );
                return Plan::Done(EndpointReport::failed(name, None, msg));
            }
            if opts.dry_run {
                return Plan::Done(EndpointReport::new(name, SyncAction::WouldCreate));
            }
            return Plan::Write { id: None };
        };
        let id = existing.id.clone();
        if let Some(msg) = origin_mismatch(spec, existing) {
            return Plan::Done(EndpointReport::failed(name, Some(id), msg));
        }
        let recorded = recorded.filter(|r| r.config_id == id && r.fingerprint == fingerprint(spec));
        let rotation = recorded.map(EndpointState::rotation);
        let decision = self
            .policy
            .decide(rotation.as_ref(), opts.now, self.client.io().random());
        if let (
            false,
            Decision::Wait {
                rotate_at,
                effective_expiry,
            },
        ) = (opts.force, decision)
        {
            let mut report = EndpointReport::new(name, SyncAction::Unchanged);
            report.config_id = Some(id);
            report.token_expiry = rotation.map(|r| r.token_expires_at);
            report.effective_expiry = Some(effective_expiry);
            report.next_rotation = Some(rotate_at);
            return Plan::Done(report);
        }
        if opts.dry_run {
            let mut report = EndpointReport::new(name, SyncAction::WouldRotate);
            report.config_id = Some(id);
            return Plan::Done(report);
        }
        Plan::Write { id: Some(id) }
    }

    /// Signs a token and writes it: PATCH when `id` is known, else create.
    async fn write(
        &self,
        spec: &EndpointSpec,
        id: Option<String>,
        creds: &Creds,
    ) -> (EndpointReport, Option<EndpointState>) {
        let name = spec.name.as_str();
        let creds = match creds {
            Ok(c) => c,
            Err(msg) => return (EndpointReport::failed(name, id, msg), None),
        };
        // Signed at the host's clock: `SystemTime::now()` panics on wasm32.
        let at = self.client.io().now();
        let token = match dsql_auth_core::token::sign(&spec.signing, creds, at) {
            Ok(t) => t,
            Err(e) => return (EndpointReport::failed(name, id, e), None),
        };
        let password = Secret::new(token.as_str());
        let result = match &id {
            Some(id) => self.client.rotate_password(id, password).await,
            None => {
                let origin = Origin::postgres(
                    spec.endpoint.connect_host(),
                    spec.endpoint.port(),
                    spec.database.clone(),
                    spec.user.clone(),
                    password,
                );
                self.client
                    .create_config(&NewConfig::new(name, origin))
                    .await
            }
        };
        let config = match result {
            Ok(c) => c,
            Err(e) => return (EndpointReport::failed(name, id, e), None),
        };
        let rotation = RotationState {
            last_rotation: token.signed_at(),
            token_expires_at: token.expires_at(),
            credentials_expire_at: creds.expiry(),
        };
        let mut report = EndpointReport::new(
            name,
            if id.is_some() {
                SyncAction::Rotated
            } else {
                SyncAction::Created
            },
        );
        report.config_id = Some(config.id.clone());
        report.token_expiry = Some(token.expires_at());
        report.effective_expiry = Some(rotation.effective_expiry());
        if creds.session_token().is_some() {
            report.warnings.push(match creds.expiry() {
                Some(t) => format!(
                    "the signing credentials are temporary: the password stops working when they expire at {} \
                     (not at the token's expiry {}); use long-term credentials for long-lived tokens",
                    format_time(t),
                    format_time(token.expires_at())
                ),
                None => "the signing credentials are temporary (they carry a session token) but their expiry is \
                         unknown: the password stops working when they expire; use long-term credentials"
                    .to_owned(),
            });
        }
        let state = EndpointState::new(config.id, fingerprint(spec), rotation);
        (report, Some(state))
    }

    /// Each endpoint's configuration id (looked up now) beside what the state file recorded.
    pub async fn status(&self, state: &StateFile, now: SystemTime) -> Vec<EndpointStatus> {
        let listing = self.client.list_configs().await;
        self.endpoints
            .iter()
            .map(|spec| {
                let recorded = state.endpoints.get(&spec.name).cloned();
                let (config_ids, error) = match &listing {
                    Ok(all) => {
                        let ids: Vec<String> = all
                            .iter()
                            .filter(|c| c.name == spec.name)
                            .map(|c| c.id.clone())
                            .collect();
                        let error = match ids.len() {
                            0 => Some(format!(
                                "no Hyperdrive configuration is named {:?}",
                                spec.name
                            )),
                            1 => None,
                            n => Some(format!(
                                "{n} Hyperdrive configurations are named {:?}",
                                spec.name
                            )),
                        };
                        (ids, error)
                    }
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
                let current = recorded.as_ref().filter(|r| {
                    r.fingerprint == fingerprint(spec) && config_ids.contains(&r.config_id)
                });
                // Without jitter: the latest moment a rotation becomes due.
                let policy = RotationPolicy {
                    jitter: 0.0,
                    ..self.policy
                };
                let decision =
                    policy.decide(current.map(EndpointState::rotation).as_ref(), now, 0.0);
                EndpointStatus {
                    name: spec.name.clone(),
                    config_ids,
                    recorded,
                    due: decision.should_rotate(),
                    next_rotation: match decision {
                        Decision::Wait { rotate_at, .. } => Some(rotate_at),
                        _ => None,
                    },
                    error,
                }
            })
            .collect()
    }
}

/// Statuses as JSON, one member per endpoint name (what `dsql hyperdrive status --output json`
/// prints and the Worker serves). Holds no token.
pub fn status_json(statuses: &[EndpointStatus]) -> serde_json::Value {
    let mut doc = serde_json::Map::new();
    for s in statuses {
        let r = s.recorded.as_ref();
        doc.insert(
            s.name.clone(),
            serde_json::json!({
                "config_id": (s.config_ids.len() == 1).then(|| s.config_ids[0].clone()),
                "config_ids": s.config_ids,
                "last_rotation": r.map(|r| format_time(r.last_rotation)),
                "token_expiry": r.map(|r| format_time(r.token_expires_at)),
                "effective_expiry": r.map(|r| format_time(r.rotation().effective_expiry())),
                "due": s.due,
                "next_rotation": s.next_rotation.map(format_time),
                "error": s.error,
            }),
        );
    }
    serde_json::Value::Object(doc)
}

/// One endpoint as `status` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// The endpoint name.
    pub name: String,
    /// Ids of configurations with this name (one when all is well).
    pub config_ids: Vec<String>,
    /// The state file's record.
    pub recorded: Option<EndpointState>,
    /// Whether a rotation is due now (always true without a usable record).
    pub due: bool,
    /// When a rotation becomes due, if not now.
    pub next_rotation: Option<SystemTime>,
    /// A problem found while looking (missing, duplicated, API failure).
    pub error: Option<String>,
}

/// A password-only PATCH cannot move a configuration: refuse to write a token signed for one host
/// into a configuration that connects to another.
fn origin_mismatch(spec: &EndpointSpec, config: &HyperdriveConfig) -> Option<String> {
    let o = &config.origin;
    let host = spec.endpoint.connect_host();
    let bad = |what: &str, theirs: &str, ours: &str| {
        Some(format!(
            "Hyperdrive configuration {:?} ({}) has origin {what} {theirs:?} but the [[endpoint]] says {ours:?}: \
             fix the configuration file or the Hyperdrive configuration (a password-only update cannot change it); \
             nothing was written",
            config.name, config.id
        ))
    };
    if let Some(h) = &o.host
        && !h.trim_end_matches('.').eq_ignore_ascii_case(host)
    {
        return bad("host", h, host);
    }
    if let Some(u) = &o.user
        && *u != spec.user
    {
        return bad("user", u, &spec.user);
    }
    if let Some(d) = &o.database
        && *d != spec.database
    {
        return bad("database", d, &spec.database);
    }
    if let Some(p) = o.port
        && p != spec.endpoint.port()
    {
        return bad("port", &p.to_string(), &spec.endpoint.port().to_string());
    }
    None
}
