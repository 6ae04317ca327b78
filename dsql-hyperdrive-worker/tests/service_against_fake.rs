//! The Worker's logic (settings, pass with KV state, status, routing) run natively against the
//! fake Hyperdrive API, with an in-memory store in place of KV: everything but the wasm32 glue.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dsql_hyperdrive::fake::FakeHyperdrive;
use dsql_hyperdrive::io::{BoxFuture, NativeIo};
use dsql_hyperdrive_worker::service::{LAST_PASS_KEY, STATE_KEY, Service, StateStore};
use dsql_hyperdrive_worker::settings::{CONFIG_VAR, Settings};
use serde_json::json;

const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";

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

async fn setup() -> (FakeHyperdrive, Service, String) {
    let fake = FakeHyperdrive::builder()
        .test_connections(false)
        .start()
        .await
        .expect("fake starts");
    let id = fake.insert_config(
        "orders",
        json!({"scheme": "postgres", "host": HOST, "port": 5432, "database": "postgres", "user": "admin"}),
    );
    let vars: HashMap<&str, String> = HashMap::from([
        (
            CONFIG_VAR,
            format!(r#"{{"endpoint": [{{"name": "orders", "host": "{HOST}"}}]}}"#),
        ),
        ("CLOUDFLARE_ACCOUNT_ID", fake.account_id().to_owned()),
        ("CLOUDFLARE_API_BASE_URL", fake.api_base()),
        ("CLOUDFLARE_API_TOKEN", fake.api_token().to_owned()),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
        ),
        ("ADMIN_TOKEN", "admin-secret-77".to_owned()),
    ]);
    let settings = Settings::from_env(|k| vars.get(k).cloned()).expect("settings");
    let io = NativeIo::new(std::time::Duration::from_secs(10)).expect("io");
    let service = Service::new(settings, Arc::new(io)).expect("service");
    (fake, service, id)
}

#[tokio::test]
async fn a_pass_rotates_once_then_waits_and_status_shows_it() {
    let (fake, service, id) = setup().await;
    let kv = Memory::default();

    let record = service.rotate(&kv, "cron", false).await;
    assert_eq!(record["ok"], true, "{record}");
    assert_eq!(record["endpoints"]["orders"]["action"], "rotated");
    let writes = fake.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].path.ends_with(&id));
    let password = fake.stored_password(&id).expect("a password");
    let stored =
        kv.0.lock()
            .unwrap()
            .get(STATE_KEY)
            .cloned()
            .expect("state saved");
    assert!(
        stored.contains(&id) && !stored.contains(&password),
        "{stored}"
    );

    fake.clear_requests();
    let record = service.rotate(&kv, "cron", false).await;
    assert_eq!(
        record["endpoints"]["orders"]["action"], "unchanged",
        "{record}"
    );
    assert!(fake.writes().is_empty());

    let reply = service.handle(&kv, "GET", "/status", None, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body["endpoints"]["orders"]["due"], false,
        "{}",
        reply.body
    );
    assert_eq!(reply.body["last_pass"]["trigger"], "cron");
    let text = reply.body.to_string();
    let signature = password.rsplit('=').next().unwrap();
    for secret in [
        signature,
        fake.api_token(),
        "wJalrXUtnFEMI",
        "admin-secret-77",
    ] {
        assert!(!text.contains(secret), "a secret in /status: {text}");
    }
    let last = kv.0.lock().unwrap().get(LAST_PASS_KEY).cloned().unwrap();
    assert!(!last.contains(signature));
}

#[tokio::test]
async fn manual_rotation_needs_the_admin_token() {
    let (fake, service, _) = setup().await;
    let kv = Memory::default();
    for auth in [None, Some("Bearer wrong"), Some("admin-secret-77")] {
        let reply = service.handle(&kv, "POST", "/rotate", None, auth).await;
        assert_eq!(reply.status, 401, "{auth:?}");
    }
    assert!(fake.writes().is_empty());
    let reply = service
        .handle(&kv, "POST", "/rotate", None, Some("Bearer admin-secret-77"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = service
        .handle(
            &kv,
            "POST",
            "/rotate",
            Some("force=true"),
            Some("Bearer admin-secret-77"),
        )
        .await;
    assert_eq!(reply.body["endpoints"]["orders"]["action"], "rotated");
    assert_eq!(fake.writes().len(), 2, "the second one forced");
    assert_eq!(
        service
            .handle(&kv, "GET", "/rotate", None, None)
            .await
            .status,
        405
    );
    assert_eq!(
        service.handle(&kv, "GET", "/nope", None, None).await.status,
        404
    );
}

#[tokio::test]
async fn a_corrupt_state_is_reported_not_overwritten() {
    let (fake, service, _) = setup().await;
    let kv = Memory::default();
    kv.0.lock()
        .unwrap()
        .insert(STATE_KEY.into(), "{not json".into());
    let record = service.rotate(&kv, "cron", false).await;
    assert_eq!(record["ok"], false);
    assert!(
        record["errors"][0]
            .as_str()
            .unwrap()
            .contains("delete the KV key"),
        "{record}"
    );
    assert!(fake.writes().is_empty());
    assert_eq!(
        service
            .handle(&kv, "GET", "/status", None, None)
            .await
            .status,
        500
    );
}
