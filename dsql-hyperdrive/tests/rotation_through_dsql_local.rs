//! End to end: the rotator signs with dsql-local's credentials, the fake Hyperdrive test-connects
//! through dsql-local (a real PostgreSQL behind a token-verifying gateway) before accepting the
//! password, and the stored password is then used to connect, as Hyperdrive would.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use dsql_hyperdrive::fake::FakeHyperdrive;
use dsql_hyperdrive::{
    HyperdriveClient, Rotator, RotatorConfig, StateFile, SyncAction, SyncOptions,
};
use dsql_local::LocalDsql;
use serde_json::json;

async fn local() -> LocalDsql {
    LocalDsql::start().await.unwrap_or_else(|e| {
        panic!("dsql-local could not start ({e}); it needs PostgreSQL: apt-get install postgresql")
    })
}

async fn fake_for(local: &LocalDsql) -> FakeHyperdrive {
    FakeHyperdrive::builder()
        .route_origin(local.host(), local.address())
        .origin_ca(local.ca_path())
        .start()
        .await
        .expect("fake starts")
}

fn config(fake: &FakeHyperdrive, local: &LocalDsql, endpoints: &str) -> RotatorConfig {
    let text = format!(
        "[cloudflare]\naccount_id = \"{}\"\napi_base = \"{}\"\n{endpoints}",
        fake.account_id(),
        fake.api_base()
    )
    .replace("HOST", local.host())
    .replace("PORT", &local.port().to_string());
    let token = fake.api_token().to_owned();
    RotatorConfig::parse(&text, Path::new("test.toml"), Path::new("."), move |k| {
        (k == "CLOUDFLARE_API_TOKEN").then(|| token.clone())
    })
    .expect("config parses")
}

fn rotator(cfg: &RotatorConfig, creds: aws_credential_types::Credentials) -> Rotator {
    let client = HyperdriveClient::builder(cfg.account_id.clone(), cfg.api_token.clone())
        .api_base(cfg.api_base.clone())
        .per_page(10)
        .build()
        .expect("client");
    Rotator::new(client, creds, cfg.endpoints.clone())
}

/// Connects through dsql-local with `password` as `user`, returning `current_user`.
async fn connect(
    local: &LocalDsql,
    user: &str,
    password: &str,
) -> Result<String, tokio_postgres::Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(local.ca_path()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(local.host())
        .hostaddr(local.address().ip())
        .port(local.port())
        .user(user)
        .dbname("postgres")
        .password(password)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = cfg
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await?;
    tokio::spawn(conn);
    let row = client.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_page_config_is_rotated_with_a_password_only_patch_that_connects() {
    let local = local().await;
    let fake = fake_for(&local).await;
    for i in 0..14 {
        fake.insert_config(
            &format!("filler-{i}"),
            json!({"host": "other.example", "port": 5432, "database": "postgres", "user": "admin"}),
        );
    }
    let id = fake.insert_config(
        "orders",
        json!({"scheme": "postgres", "host": local.host(), "port": local.port(), "database": "postgres", "user": "admin", "password": "stale"}),
    );
    let cfg = config(
        &fake,
        &local,
        "[[endpoint]]\nname = \"orders\"\nhost = \"HOST\"\nport = PORT\n",
    );
    let rot = rotator(&cfg, local.credentials());
    let mut state = StateFile::default();
    let report = rot
        .sync(&mut state, &SyncOptions::new(SystemTime::now()))
        .await;
    let e = &report.endpoints[0];
    assert_eq!(
        (e.action, e.config_id.as_deref(), e.error.as_deref()),
        (SyncAction::Rotated, Some(id.as_str()), None)
    );
    assert!(e.token_expiry.is_some());
    assert_eq!(fake.configs().len(), 15, "found on page 2, not duplicated");

    let writes = fake.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].method, "PATCH");
    assert!(writes[0].path.ends_with(&id));
    let body = writes[0].body.clone().unwrap();
    let password = body["origin"]["password"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"origin": {"password": password}}),
        "only the password is sent"
    );
    assert_eq!(
        fake.test_connects(),
        vec![(local.host().to_owned(), Ok(()))]
    );

    let stored = fake.stored_password(&id).unwrap();
    assert_eq!(
        connect(&local, "admin", &stored)
            .await
            .expect("stored password connects"),
        "admin"
    );
    assert!(state.endpoints.contains_key("orders"));

    // Again right away: nothing is due, nothing is written.
    fake.clear_requests();
    let report = rot
        .sync(&mut state, &SyncOptions::new(SystemTime::now()))
        .await;
    assert_eq!(report.endpoints[0].action, SyncAction::Unchanged);
    assert!(fake.writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_by_the_test_connection_with_2013() {
    let local = local().await;
    let fake = fake_for(&local).await;
    let id = fake.insert_config(
        "orders",
        json!({"host": local.host(), "port": local.port(), "database": "postgres", "user": "admin", "password": "stale"}),
    );
    let cfg = config(
        &fake,
        &local,
        "[[endpoint]]\nname = \"orders\"\nhost = \"HOST\"\nport = PORT\n",
    );
    let wrong = aws_credential_types::Credentials::new(
        "AKIAWRONGWRONGWRONG1",
        "wrong-secret",
        None,
        None,
        "test",
    );
    let report = rotator(&cfg, wrong)
        .sync(
            &mut StateFile::default(),
            &SyncOptions::new(SystemTime::now()),
        )
        .await;
    let e = &report.endpoints[0];
    assert_eq!(e.action, SyncAction::Failed);
    let msg = e.error.as_deref().unwrap();
    assert!(
        msg.contains("2013") && msg.contains("the token or the IAM policy is wrong"),
        "{msg}"
    );
    assert!(!msg.contains("X-Amz-Signature"), "{msg}");
    assert_eq!(fake.stored_password(&id).as_deref(), Some("stale"));
    assert_eq!(fake.writes().len(), 1, "2013 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_missing_makes_a_full_origin_for_a_non_admin_user() {
    let local = local().await;
    local.create_role("app").await.expect("role");
    let fake = fake_for(&local).await;
    let cfg = config(
        &fake,
        &local,
        "[[endpoint]]\nname = \"app-db\"\nhost = \"HOST\"\nport = PORT\nuser = \"app\"\nexpires_in = 3600\n",
    );
    let rot = rotator(&cfg, local.credentials());
    let mut state = StateFile::default();
    let report = rot
        .sync(&mut state, &SyncOptions::new(SystemTime::now()))
        .await;
    assert_eq!(
        report.endpoints[0].action,
        SyncAction::Failed,
        "not created without create_missing"
    );
    assert!(
        report.endpoints[0]
            .error
            .as_deref()
            .unwrap()
            .contains("--create-missing")
    );
    assert!(fake.writes().is_empty());

    let mut opts = SyncOptions::new(SystemTime::now());
    opts.create_missing = true;
    let report = rot.sync(&mut state, &opts).await;
    let e = &report.endpoints[0];
    assert_eq!(e.action, SyncAction::Created, "{e:?}");
    let writes = fake.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, "POST");
    let origin = &writes[0].body.as_ref().unwrap()["origin"];
    assert_eq!(origin["host"], local.host());
    assert_eq!(origin["user"], "app");
    assert_eq!(origin["port"], local.port());
    let id = e.config_id.clone().unwrap();
    let stored = fake.stored_password(&id).unwrap();
    assert!(
        stored.contains("Action=DbConnect&"),
        "non-admin users sign DbConnect"
    );
    assert_eq!(
        connect(&local, "app", &stored)
            .await
            .expect("connects as app"),
        "app"
    );
}
