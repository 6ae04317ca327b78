//! The API client against the local fake (no origin test connections here; those are in
//! `rotation_through_dsql_local.rs`).

use std::time::Duration;

use dsql_auth_core::RetryPolicy;
use dsql_hyperdrive::fake::FakeHyperdrive;
use dsql_hyperdrive::{ConfigEdit, ErrorKind, HyperdriveClient, NewConfig, Origin, Secret};
use serde_json::{Value, json};

fn fast_retries() -> RetryPolicy {
    let mut p = RetryPolicy::connect();
    p.max_attempts = 4;
    p.initial_backoff = Duration::from_millis(10);
    p.max_backoff = Duration::from_millis(50);
    p.max_elapsed = Some(Duration::from_secs(60));
    p
}

async fn fake() -> FakeHyperdrive {
    FakeHyperdrive::builder()
        .test_connections(false)
        .start()
        .await
        .expect("fake starts")
}

fn client(fake: &FakeHyperdrive, per_page: u32) -> HyperdriveClient {
    HyperdriveClient::builder(fake.account_id(), fake.api_token())
        .api_base(fake.api_base())
        .retry_policy(fast_retries())
        .per_page(per_page)
        .build()
        .expect("client builds")
}

fn origin(host: &str, password: Option<&str>) -> Value {
    let mut o = json!({"scheme": "postgres", "host": host, "port": 5432, "database": "postgres", "user": "admin"});
    if let Some(p) = password {
        o["password"] = json!(p);
    }
    o
}

#[tokio::test]
async fn listing_follows_pages_and_stops_at_total_count() {
    let fake = fake().await;
    for i in 0..23 {
        fake.insert_config(&format!("cfg-{i}"), origin("h.example", Some("old")));
    }
    let all = client(&fake, 10).list_configs().await.unwrap();
    assert_eq!(all.len(), 23);
    let gets: Vec<_> = fake
        .requests()
        .into_iter()
        .map(|r| r.query.unwrap_or_default())
        .collect();
    assert_eq!(
        gets,
        [
            "page=1&per_page=10",
            "page=2&per_page=10",
            "page=3&per_page=10"
        ]
    );
    // Exactly a multiple of the page size: stops on total_count, no empty fourth page.
    let fake = self::fake().await;
    for i in 0..20 {
        fake.insert_config(&format!("cfg-{i}"), origin("h.example", None));
    }
    assert_eq!(client(&fake, 10).list_configs().await.unwrap().len(), 20);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn page_cap_is_an_error_not_a_silent_truncation() {
    let fake = fake().await;
    for i in 0..5 {
        fake.insert_config(&format!("cfg-{i}"), origin("h.example", None));
    }
    let c = HyperdriveClient::builder(fake.account_id(), fake.api_token())
        .api_base(fake.api_base())
        .per_page(1)
        .max_pages(3)
        .build()
        .unwrap();
    let e = c.list_configs().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidResponse);
    assert!(e.to_string().contains("3 pages"), "{e}");
}

#[tokio::test]
async fn find_by_name_on_the_second_page_and_duplicates() {
    let fake = fake().await;
    for i in 0..12 {
        fake.insert_config(&format!("filler-{i}"), origin("h.example", None));
    }
    let id = fake.insert_config("orders", origin("h.example", None));
    let c = client(&fake, 10);
    let found = c
        .find_by_name("orders")
        .await
        .unwrap()
        .expect("found on page 2");
    assert_eq!(found.id, id);
    assert_eq!(c.find_by_name("nope").await.unwrap(), None);
    fake.insert_config("orders", origin("h.example", None));
    let e = c.find_by_name("orders").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DuplicateName);
    assert!(e.to_string().contains(&id), "{e}");
}

#[tokio::test]
async fn sparse_envelopes_are_understood() {
    let fake = fake().await;
    for i in 0..30 {
        fake.insert_config(&format!("cfg-{i}"), origin("h.example", None));
    }
    fake.sparse_envelopes(true);
    let c = client(&fake, 10);
    // No result_info: everything in one answer.
    assert_eq!(c.list_configs().await.unwrap().len(), 30);
    assert_eq!(fake.requests().len(), 1);
    // A failure without messages or result still yields its code and status.
    let e = c
        .get_config("ffffffffffffffffffffffffffffffff")
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.status(), e.codes()),
        (ErrorKind::NotFound, Some(404), vec![2007])
    );
}

#[tokio::test]
async fn rate_limit_is_retried_after_the_asked_delay() {
    let fake = fake().await;
    let id = fake.insert_config("orders", origin("h.example", Some("old")));
    fake.inject_rate_limit(1, 1);
    let c = client(&fake, 20);
    let started = std::time::Instant::now();
    c.rotate_password(&id, Secret::new("new-password"))
        .await
        .expect("retried after 429");
    // retry-after: 1 was honoured (a hang guard is not a timing assertion: this is a lower bound
    // the client itself must respect).
    assert!(started.elapsed() >= Duration::from_secs(1));
    let patches: Vec<_> = fake.writes();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(fake.stored_password(&id).as_deref(), Some("new-password"));
}

#[tokio::test]
async fn server_errors_are_retried_and_give_up_after_the_budget() {
    let fake = fake().await;
    fake.insert_config("orders", origin("h.example", None));
    fake.inject_server_errors(2);
    let c = client(&fake, 20);
    assert_eq!(c.list_configs().await.unwrap().len(), 1);
    assert_eq!(fake.requests().len(), 3);
    fake.inject_server_errors(10);
    let e = c.list_configs().await.unwrap_err();
    assert_eq!((e.kind(), e.status()), (ErrorKind::Server, Some(503)));
    assert_eq!(fake.requests().len(), 3 + 4, "max_attempts is 4");
}

#[tokio::test]
async fn invalid_credentials_are_not_retried_and_say_why() {
    let fake = fake().await;
    let id = fake.insert_config("orders", origin("h.example", Some("old")));
    fake.fail_config("orders", 2013, u32::MAX);
    let e = client(&fake, 20)
        .rotate_password(&id, Secret::new("bad"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidCredentials);
    assert_eq!(e.codes(), vec![2013]);
    assert!(
        e.to_string()
            .contains("the token or the IAM policy is wrong"),
        "{e}"
    );
    assert_eq!(fake.writes().len(), 1, "2013 is not retried");
    assert_eq!(
        fake.stored_password(&id).as_deref(),
        Some("old"),
        "a refused password is not stored"
    );
}

#[tokio::test]
async fn unreachable_origin_is_retried() {
    let fake = fake().await;
    let id = fake.insert_config("orders", origin("h.example", Some("old")));
    fake.fail_config("orders", 2011, 1);
    client(&fake, 20)
        .rotate_password(&id, Secret::new("new"))
        .await
        .expect("second try succeeds");
    assert_eq!(fake.writes().len(), 2);
}

#[tokio::test]
async fn secrets_are_never_echoed_and_patch_rules_hold() {
    let fake = fake().await;
    let c = client(&fake, 20);
    let created = c
        .create_config(&NewConfig::new(
            "orders",
            Origin::postgres("h.example", 5432, "postgres", "admin", Secret::new("pw-1")),
        ))
        .await
        .unwrap();
    assert_eq!(created.origin.password, None);
    assert_eq!(created.origin.host.as_deref(), Some("h.example"));
    let got = c.get_config(&created.id).await.unwrap();
    assert_eq!(got.origin.password, None);
    // Raw bodies too: no "password" key anywhere in any answer.
    let raw = reqwest::Client::new()
        .get(format!(
            "{}/accounts/{}/hyperdrive/configs",
            fake.api_base(),
            fake.account_id()
        ))
        .bearer_auth(fake.api_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!raw.contains("password") && !raw.contains("pw-1"), "{raw}");

    // Part of the network origin alone is refused; the whole of it, or the password alone, is fine.
    let mut partial = ConfigEdit::default();
    partial.origin = Some(Origin {
        host: Some("other.example".into()),
        ..Origin::default()
    });
    let e = c.edit_config(&created.id, &partial).await.unwrap_err();
    assert_eq!((e.kind(), e.status()), (ErrorKind::Rejected, Some(400)));
    assert!(e.to_string().contains("must be sent together"), "{e}");
    c.rotate_password(&created.id, Secret::new("pw-2"))
        .await
        .unwrap();
    assert_eq!(fake.stored_password(&created.id).as_deref(), Some("pw-2"));
    assert_eq!(fake.configs()[0].origin.host.as_deref(), Some("h.example"));
}

#[tokio::test]
async fn put_resets_caching_and_delete_removes() {
    let fake = fake().await;
    let id = fake.insert_config("orders", origin("h.example", Some("pw")));
    let http = reqwest::Client::new();
    let url = format!(
        "{}/accounts/{}/hyperdrive/configs/{id}",
        fake.api_base(),
        fake.account_id()
    );
    let patch = http
        .patch(&url)
        .bearer_auth(fake.api_token())
        .json(&json!({"caching": {"max_age": 300}}))
        .send()
        .await
        .unwrap();
    assert!(patch.status().is_success());
    assert_eq!(fake.configs()[0].caching.as_ref().unwrap()["max_age"], 300);
    let put = http
        .put(&url)
        .bearer_auth(fake.api_token())
        .json(&json!({"name": "orders", "origin": origin("h.example", Some("pw2"))}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    assert_eq!(
        fake.configs()[0].caching.as_ref().unwrap()["max_age"],
        60,
        "PUT reset caching"
    );
    let del = http
        .delete(&url)
        .bearer_auth(fake.api_token())
        .send()
        .await
        .unwrap();
    let body: Value = del.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert!(fake.configs().is_empty());
}

#[tokio::test]
async fn account_limit_and_bad_token() {
    let fake = FakeHyperdrive::builder()
        .test_connections(false)
        .config_limit(1)
        .start()
        .await
        .unwrap();
    fake.insert_config("a", origin("h.example", None));
    let c = client(&fake, 20);
    let e = c
        .create_config(&NewConfig::new(
            "b",
            Origin::postgres("h", 5432, "postgres", "admin", Secret::new("x")),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitReached);
    let bad = HyperdriveClient::builder(fake.account_id(), "wrong-token-value")
        .api_base(fake.api_base())
        .build()
        .unwrap();
    let e = bad.list_configs().await.unwrap_err();
    assert_eq!((e.kind(), e.status()), (ErrorKind::Unauthorized, Some(401)));
    assert!(!e.to_string().contains("wrong-token-value"));
    assert!(e.to_string().contains("Hyperdrive Write"), "{e}");
}

#[tokio::test]
async fn unreachable_api_is_a_transport_error() {
    // A token that cannot occur by chance in an error message, so its absence means something.
    let token = "cf-api-token-0c7d1e9a4b";
    let c = HyperdriveClient::builder("acc", token)
        .api_base("http://127.0.0.1:1/client/v4")
        .retry_policy(dsql_auth_core::RetryPolicy::no_retry())
        .build()
        .unwrap();
    let e = c.list_configs().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transport);
    assert!(
        e.to_string().contains("127.0.0.1:1"),
        "names the address: {e}"
    );
    let mut chain = format!("{e} {e:?}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    assert!(!chain.contains(token), "the API token leaked: {chain}");
    assert!(!format!("{c:?}").contains(token));
}

#[tokio::test]
async fn rotator_refuses_to_write_into_a_config_that_points_elsewhere() {
    use dsql_hyperdrive::{Rotator, RotatorConfig, StateFile, SyncAction, SyncOptions};
    let fake = fake().await;
    fake.insert_config(
        "orders",
        origin(
            "zyxwvutsrqponmlkjihgfedcba.dsql.us-east-1.on.aws",
            Some("old"),
        ),
    );
    let text = format!(
        "[cloudflare]\naccount_id = \"{}\"\napi_base = \"{}\"\n[[endpoint]]\nname = \"orders\"\nhost = \"abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws\"\n",
        fake.account_id(),
        fake.api_base()
    );
    let token = fake.api_token().to_owned();
    let cfg = RotatorConfig::parse(
        &text,
        std::path::Path::new("t.toml"),
        std::path::Path::new("."),
        move |k| (k == "CLOUDFLARE_API_TOKEN").then(|| token.clone()),
    )
    .unwrap();
    let creds = aws_credential_types::Credentials::new(
        "AKIAEXAMPLEEXAMPLE01",
        "secret",
        None,
        None,
        "test",
    );
    let rotator = Rotator::new(client(&fake, 20), creds, cfg.endpoints);
    let report = rotator
        .sync(
            &mut StateFile::default(),
            &SyncOptions::new(std::time::SystemTime::now()),
        )
        .await;
    let e = &report.endpoints[0];
    assert_eq!(e.action, SyncAction::Failed);
    assert!(e.error.as_deref().unwrap().contains("origin host"), "{e:?}");
    assert!(fake.writes().is_empty());
    assert!(!report.all_ok());
}
