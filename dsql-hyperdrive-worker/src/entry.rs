//! The Workers runtime side (wasm32 only): the host I/O on `Fetch`, `Delay`, `Date` and
//! `Math.random`, the state in KV, and the `scheduled` and `fetch` events.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dsql_hyperdrive::io::{BoxFuture, HttpRequest, HttpResponse, Io, Method, TransportError};
use worker::{
    Context, Env, Fetch, Headers, KvStore, Request, RequestInit, Response, ScheduleContext,
    ScheduledEvent, event,
};

use crate::service::{Reply, Service, StateStore};
use crate::settings::{CONFIG_VAR, STATE_BINDING, Settings};

/// The Worker's I/O. Holds nothing: every call reaches the runtime's globals.
#[derive(Debug, Clone, Copy)]
struct WorkerIo;

impl Io for WorkerIo {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            // worker::Error holds JavaScript values (not Send): keep only its message, which
            // names the URL at most, never the Authorization header.
            let fail = |e: worker::Error| -> TransportError { e.to_string().into() };
            let headers = Headers::new();
            headers
                .set(
                    "authorization",
                    &format!("Bearer {}", request.bearer.expose()),
                )
                .map_err(fail)?;
            headers
                .set(
                    "user-agent",
                    concat!("dsql-hyperdrive-worker/", env!("CARGO_PKG_VERSION")),
                )
                .map_err(fail)?;
            let mut init = RequestInit::new();
            init.with_method(match request.method {
                Method::Get => worker::Method::Get,
                Method::Post => worker::Method::Post,
                _ => worker::Method::Patch,
            });
            if let Some(body) = &request.json_body {
                headers
                    .set("content-type", "application/json")
                    .map_err(fail)?;
                init.with_body(Some(body.expose().into()));
            }
            init.with_headers(headers);
            let req = Request::new_with_init(&request.url, &init).map_err(fail)?;
            let mut response = Fetch::Request(req).send().await.map_err(fail)?;
            let status = response.status_code();
            let retry_after = response.headers().get("retry-after").map_err(fail)?;
            let body = response.text().await.map_err(fail)?;
            Ok(HttpResponse::new(status, retry_after, body))
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(worker::Delay::from(duration))
    }

    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(worker::Date::now().as_millis())
    }

    fn random(&self) -> f64 {
        worker::js_sys::Math::random()
    }
}

/// The KV namespace bound as [`STATE_BINDING`].
struct Kv(KvStore);

impl StateStore for Kv {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<String>, String>> {
        let get = self.0.get(key);
        Box::pin(async move { get.text().await.map_err(|e| e.to_string()) })
    }

    fn put(&self, key: &str, value: String) -> BoxFuture<'_, Result<(), String>> {
        let put = self.0.put(key, value);
        Box::pin(async move {
            put.map_err(|e| e.to_string())?
                .execute()
                .await
                .map_err(|e| e.to_string())
        })
    }
}

fn setup(env: &Env) -> Result<(Service, Kv), String> {
    let get = |name: &str| -> Option<String> {
        // Secrets and string [vars] are JS strings; `object_var` refuses those (it wants an
        // Object), so it is only the fallback for the endpoint file written as a TOML table.
        if let Ok(v) = env.var(name) {
            return Some(v.to_string());
        }
        if name == CONFIG_VAR {
            return env
                .object_var::<serde_json::Value>(name)
                .ok()
                .map(|v| v.to_string());
        }
        None
    };
    let settings = Settings::from_env(get).map_err(|e| e.to_string())?;
    let kv = env.kv(STATE_BINDING).map_err(|e| {
        format!(
            "the KV namespace binding {STATE_BINDING} is missing ({e}): create one with \
             `wrangler kv namespace create {STATE_BINDING}` and add it to wrangler.toml"
        )
    })?;
    let service = Service::new(settings, Arc::new(WorkerIo))?;
    Ok((service, Kv(kv)))
}

fn respond(reply: &Reply) -> worker::Result<Response> {
    let response = Response::from_json(&reply.body)?.with_status(reply.status);
    response.headers().set("cache-control", "no-store")?;
    Ok(response)
}

#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let (service, kv) = match setup(&env) {
        Ok(s) => s,
        Err(e) => {
            worker::console_error!("dsql-hyperdrive-worker: cannot start: {e}");
            return;
        }
    };
    let record = service
        .rotate(&kv, &format!("cron {}", event.cron()), false)
        .await;
    // The record names endpoints, actions and errors: nothing secret.
    if record["ok"] == serde_json::Value::Bool(true) {
        worker::console_log!("dsql-hyperdrive-worker: pass done: {record}");
    } else {
        worker::console_error!("dsql-hyperdrive-worker: pass failed: {record}");
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let (service, kv) = match setup(&env) {
        Ok(s) => s,
        Err(e) => return respond(&Reply::error(500, e)),
    };
    let url = req.url()?;
    let authorization = req.headers().get("authorization")?;
    let reply = service
        .handle(
            &kv,
            req.method().as_ref(),
            url.path(),
            url.query(),
            authorization.as_deref(),
        )
        .await;
    respond(&reply)
}
