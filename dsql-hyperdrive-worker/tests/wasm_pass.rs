//! The Worker's pass compiled for wasm32 and run under wasm-bindgen-test-runner (Node.js): the
//! rotation policy, the signing and the API client of dsql-hyperdrive on wasm32, where
//! `SystemTime::now()` panics, with an in-memory Hyperdrive API behind the `Io` trait.
//!
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!  cargo test -p dsql-hyperdrive-worker --target wasm32-unknown-unknown --test wasm_pass`
#![cfg(target_arch = "wasm32")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dsql_hyperdrive::io::{BoxFuture, HttpRequest, HttpResponse, Io, Method, TransportError};
use dsql_hyperdrive_worker::service::{STATE_KEY, Service, StateStore};
use dsql_hyperdrive_worker::settings::{CONFIG_VAR, Settings};
use serde_json::{Value, json};
use wasm_bindgen_test::wasm_bindgen_test;

const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
const API: &str = "https://api.example.test/client/v4";
const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// The Hyperdrive configs API in memory (one configuration), with a settable clock and 429s.
#[derive(Debug, Default)]
struct Api {
    inner: Mutex<ApiState>,
}

#[derive(Debug, Default)]
struct ApiState {
    now_secs: u64,
    rate_limits: u32,
    requests: Vec<(String, String, Option<Value>)>,
    slept: Vec<Duration>,
}

fn envelope(result: Value) -> String {
    json!({"success": true, "errors": [], "messages": [], "result": result}).to_string()
}

fn config() -> Value {
    json!({"id": "cfg-1", "name": "orders",
        "origin": {"scheme": "postgres", "host": HOST, "port": 5432, "database": "postgres", "user": "admin"}})
}

impl Io for Api {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        let mut s = self.inner.lock().unwrap();
        assert_eq!(request.bearer.expose(), "cf-api-token-xyz");
        let body = request
            .json_body
            .as_ref()
            .map(|b| serde_json::from_str::<Value>(b.expose()).unwrap());
        s.requests
            .push((request.method.to_string(), request.url.clone(), body));
        let answer = if s.rate_limits > 0 {
            s.rate_limits -= 1;
            HttpResponse::new(
                429,
                Some("1".into()),
                r#"{"success":false,"errors":[{"code":971,"message":"slow down"}]}"#,
            )
        } else {
            let list = format!("{API}/accounts/{ACCOUNT}/hyperdrive/configs");
            match request.method {
                Method::Get if request.url.starts_with(&list) => {
                    HttpResponse::new(200, None, envelope(json!([config()])))
                }
                Method::Patch if request.url == format!("{list}/cfg-1") => {
                    HttpResponse::new(200, None, envelope(config()))
                }
                _ => HttpResponse::new(404, None, envelope(Value::Null)),
            }
        };
        Box::pin(async move { Ok(answer) })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        // The clock moves by the sleep: retry budgets see the time pass, the test does not wait.
        let mut s = self.inner.lock().unwrap();
        s.slept.push(duration);
        s.now_secs += duration.as_secs();
        Box::pin(async {})
    }

    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.inner.lock().unwrap().now_secs)
    }

    fn random(&self) -> f64 {
        0.5
    }
}

#[derive(Default)]
struct Memory(Mutex<HashMap<String, String>>);

impl StateStore for Memory {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<String>, String>> {
        let v = self.0.lock().unwrap().get(key).cloned();
        Box::pin(async move { Ok(v) })
    }
    fn put(&self, key: &str, value: String) -> BoxFuture<'_, Result<(), String>> {
        self.0.lock().unwrap().insert(key.to_owned(), value);
        Box::pin(async { Ok(()) })
    }
}

fn service(api: Arc<Api>) -> Service {
    let vars: HashMap<&str, String> = HashMap::from([
        (
            CONFIG_VAR,
            format!("[[endpoint]]\nname = \"orders\"\nhost = \"{HOST}\"\n"),
        ),
        ("CLOUDFLARE_ACCOUNT_ID", ACCOUNT.to_owned()),
        ("CLOUDFLARE_API_BASE_URL", API.to_owned()),
        ("CLOUDFLARE_API_TOKEN", "cf-api-token-xyz".to_owned()),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ("ADMIN_TOKEN", "admin-token-xyz".to_owned()),
    ]);
    let settings = Settings::from_env(|k| vars.get(k).cloned()).expect("settings");
    Service::new(settings, api).expect("service")
}

#[wasm_bindgen_test]
async fn a_pass_on_wasm32_rotates_once_retrying_a_429_then_waits() {
    let api = Arc::new(Api::default());
    // 2025-01-01T00:00:00Z
    api.inner.lock().unwrap().now_secs = 1_735_689_600;
    api.inner.lock().unwrap().rate_limits = 1;
    let service = service(api.clone());
    let kv = Memory::default();

    let record = service.rotate(&kv, "cron", false).await;
    assert_eq!(record["ok"], true, "{record}");
    assert_eq!(
        record["endpoints"]["orders"]["action"], "rotated",
        "{record}"
    );
    let (requests, slept) = {
        let s = api.inner.lock().unwrap();
        (s.requests.clone(), s.slept.clone())
    };
    assert_eq!(requests[0].0, "GET");
    assert_eq!(requests[1].0, "GET", "the 429 listing was retried");
    assert!(
        slept.contains(&Duration::from_secs(1)),
        "retry-after honoured: {slept:?}"
    );
    let patches: Vec<_> = requests.iter().filter(|r| r.0 == "PATCH").collect();
    assert_eq!(patches.len(), 1, "{requests:?}");
    let body = patches[0].2.clone().expect("a body");
    let password = body["origin"]["password"].as_str().expect("a password");
    assert_eq!(
        body,
        json!({"origin": {"password": password}}),
        "password only"
    );
    // Signed at the injected clock (SystemTime::now() would panic here), which the 1 s
    // retry-after wait moved on, for 7 days, as admin.
    assert!(password.starts_with(&format!("{HOST}/?Action=DbConnectAdmin&")));
    assert!(
        password.contains("X-Amz-Date=20250101T000001Z"),
        "{password}"
    );
    assert!(password.contains("X-Amz-Expires=604800"), "{password}");
    let state = kv.0.lock().unwrap().get(STATE_KEY).cloned().expect("state");
    assert!(state.contains("cfg-1") && !state.contains(password));

    // An hour later nothing is due.
    api.inner.lock().unwrap().now_secs += 3600;
    api.inner.lock().unwrap().requests.clear();
    let record = service.rotate(&kv, "cron", false).await;
    assert_eq!(
        record["endpoints"]["orders"]["action"], "unchanged",
        "{record}"
    );
    assert!(
        api.inner
            .lock()
            .unwrap()
            .requests
            .iter()
            .all(|r| r.0 == "GET")
    );

    // Status and the manual trigger's guard.
    let reply = service.handle(&kv, "GET", "/status", None, None).await;
    assert_eq!(reply.status, 200);
    let text = reply.body.to_string();
    assert!(!text.contains(SECRET_KEY) && !text.contains(password.rsplit('=').next().unwrap()));
    let reply = service
        .handle(&kv, "POST", "/rotate", None, Some("Bearer wrong"))
        .await;
    assert_eq!(reply.status, 401);
}
