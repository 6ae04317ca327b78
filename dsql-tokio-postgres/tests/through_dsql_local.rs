//! dsql-tokio-postgres against dsql-local: a TLS gateway that verifies every IAM token, in front
//! of a real PostgreSQL. Needs PostgreSQL's server binaries (`apt-get install postgresql`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use dsql_local::testing::{self, guarded, start};
use dsql_local::{LocalDsql, RefusalReason};
use dsql_tokio_postgres::tokio_postgres;
use dsql_tokio_postgres::{
    Config, ConnectOptions, ErrorKind, RetryPolicy, SslMode, SslNegotiation, TokenProvider,
    connect, connect_spawned,
};

fn provider(local: &LocalDsql) -> TokenProvider {
    testing::token_provider(local)
}

/// The shared harness's options for `local`, edited, with its credentials.
fn config_with(local: &LocalDsql, edit: impl FnOnce(&mut ConnectOptions)) -> Config {
    let mut options = testing::connect_options(local);
    edit(&mut options);
    Config::new(options)
        .expect("config")
        .with_token_provider(provider(local))
}

fn config_from(local: &LocalDsql) -> Config {
    config_with(local, |_| {})
}

/// The error of a connection attempt that must fail (the `Connection` half has no `Debug`).
async fn connect_err(config: &Config, why: &str) -> dsql_tokio_postgres::Error {
    match connect(config).await {
        Ok(_) => panic!("connecting should have failed: {why}"),
        Err(e) => e,
    }
}

async fn select_one(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT 1", &[])
        .await
        .expect("SELECT 1")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_through_sslrequest_and_direct_tls() {
    guarded("tls", async {
        let local = start(LocalDsql::builder()).await;

        let config = config_from(&local);
        assert_eq!(config.options().sslmode, SslMode::VerifyFull);
        let client = connect_spawned(&config)
            .await
            .expect("verify-full over SSLRequest");
        assert_eq!(select_one(&client).await, 1);

        let direct = config_with(&local, |o| o.sslnegotiation = SslNegotiation::Direct);
        assert_eq!(
            direct.tls_config().alpn_protocols,
            vec![b"postgresql".to_vec()]
        );
        let (client2, connection) = connect(&direct).await.expect("verify-full over direct TLS");
        tokio::spawn(connection);
        assert_eq!(select_one(&client2).await, 1);

        let counters = local.counters();
        assert_eq!(
            counters.accepted(),
            2,
            "both connections authenticated by the gateway"
        );
        assert_eq!(counters.refused_total(), 0, "{:?}", counters.refusals());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_checks_fail_with_tls_errors() {
    guarded("tls failures", async {
        let local = start(LocalDsql::builder()).await;
        let base = || {
            ConnectOptions::new(local.host())
                .hostaddr(local.address().ip())
                .port(local.port())
        };
        let config = |options| {
            Config::new(options)
                .expect("config")
                .with_token_provider(provider(&local))
        };

        // No sslrootcert: Mozilla + system roots do not include the gateway's local CA.
        let err = connect_err(&config(base()), "untrusted CA must fail").await;
        assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
        assert!(
            err.to_string().contains("sslrootcert"),
            "advice missing: {err}"
        );

        // A name the certificate does not carry, with the right CA; the token is signed for the
        // cluster (cluster_id), so only the certificate check can refuse. verify-full refuses...
        let named = |mode| {
            config(
                ConnectOptions::new("db.example.com")
                    .region(local.region())
                    .cluster_id(local.cluster_id())
                    .hostaddr(local.address().ip())
                    .port(local.port())
                    .sslrootcert(local.ca_path())
                    .sslmode(mode),
            )
        };
        let err = connect_err(
            &named(SslMode::VerifyFull),
            "wrong name must fail verify-full",
        )
        .await;
        assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
        assert!(err.to_string().contains("does not name"), "{err}");
        // ...verify-ca checks the chain only, so the same connection succeeds.
        let client = connect_spawned(&named(SslMode::VerifyCa))
            .await
            .expect("verify-ca does not check the name");
        assert_eq!(select_one(&client).await, 1);

        // require: no verification at all (documented as insecure), but it connects.
        let client = connect_spawned(&config(base().sslmode(SslMode::Require)))
            .await
            .expect("require connects without a CA");
        assert_eq!(select_one(&client).await, 1);

        // The two TLS failures never reached authentication; verify-ca and require did.
        let counters = local.counters();
        assert_eq!(counters.accepted(), 2, "{:?}", counters.refusals());
        assert_eq!(counters.refused_total(), 0, "{:?}", counters.refusals());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_key_is_access_denied_at_once_and_names_the_key_not_the_token() {
    guarded("access denied", async {
        let local = start(LocalDsql::builder()).await;
        let good = local.credentials();
        let secret = "wrong-secret-key-0123456789/+=";
        let bad = Credentials::new(good.access_key_id(), secret, None, None, "test");
        let config = config_from(&local).with_token_provider(TokenProvider::new(bad));

        let err = connect_err(&config, "a bad signature must be refused").await;
        assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
        let text = format!("{err} / {err:?}");
        assert!(
            text.contains(good.access_key_id()),
            "names the access key id: {text}"
        );
        assert!(
            text.contains(local.host()),
            "names the signing host: {text}"
        );
        assert!(text.contains(local.region()), "names the region: {text}");
        assert!(text.contains("DbConnectAdmin"), "names the action: {text}");
        assert!(!text.contains(secret), "secret leaked: {text}");
        assert!(!text.contains("X-Amz-Signature"), "token leaked: {text}");

        // Returned at once: exactly one attempt reached the gateway.
        let counters = local.counters();
        assert_eq!(
            counters.refused(RefusalReason::BadSignature),
            1,
            "{:?}",
            counters.refusals()
        );
        assert_eq!(counters.refused_total(), 1);
        assert_eq!(counters.accepted(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_burst_of_forty_connections_all_connect_with_retries() {
    guarded("rate limit", async {
        let local = start(LocalDsql::builder().rate_limit(5, 5)).await;
        // 40 connections at 5/s need about 7 s of queueing: the default policy must absorb it.
        let config = config_from(&local);

        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let config = config.clone();
                tokio::spawn(async move {
                    let client = connect_spawned(&config).await?;
                    Ok::<_, dsql_tokio_postgres::Error>(select_one(&client).await)
                })
            })
            .collect();
        for task in tasks {
            let one = task
                .await
                .expect("task panicked")
                .expect("every connection succeeds");
            assert_eq!(one, 1);
        }
        // Whether the burst outran the limit depends on how fast 40 handshakes run here; what
        // must hold either way: every connection opened, and the only refusals were rate
        // refusals, retried. (The next test makes a refusal certain.)
        let counters = local.counters();
        assert_eq!(counters.accepted(), 40);
        assert_eq!(
            counters.refused_total(),
            counters.refused(RefusalReason::RateExceeded),
            "{:?}",
            counters.refusals()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_by_the_connection_limit_is_retried_until_a_slot_frees() {
    guarded("connection limit", async {
        let local = start(LocalDsql::builder().max_connections(1)).await;
        let config = config_from(&local);
        let first = connect_spawned(&config).await.expect("first connection");
        // The only slot is taken: the second connect is refused (53300) for certain and retries.
        let second = tokio::spawn({
            let config = config.clone();
            async move { connect_spawned(&config).await }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while local.counters().refused(RefusalReason::TooManyConnections) == 0 {
            assert!(
                Instant::now() < deadline,
                "the second connect was never refused"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(first);
        let second = second
            .await
            .expect("task")
            .expect("connects once the slot frees");
        assert_eq!(select_one(&second).await, 1);
        let counters = local.counters();
        assert_eq!(counters.accepted(), 2);
        assert_eq!(
            counters.refused_total(),
            counters.refused(RefusalReason::TooManyConnections),
            "{:?}",
            counters.refusals()
        );
    })
    .await;
}

/// No token provider given: the AWS default chain, read from the environment. Environment
/// variables cannot be set safely in a multi-threaded test process, so this test runs itself as
/// a child process with them set (the child is told apart by `DSQL_TP_CHILD_URL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_credential_chain_from_the_environment() {
    if let Ok(url) = std::env::var("DSQL_TP_CHILD_URL") {
        let config: Config = url.parse().expect("config");
        match connect_spawned(&config).await {
            Ok(client) => println!("child: connected, SELECT 1 = {}", select_one(&client).await),
            Err(e) => println!("child: failed, kind {:?}: {e}", e.kind()),
        }
        return;
    }
    guarded("default chain", async {
        let local = start(LocalDsql::builder()).await;
        let creds = local.credentials();
        let home = tempfile::tempdir().unwrap();
        let child = |secret: &str| {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args(["--exact", "default_credential_chain_from_the_environment"])
                .args(["--nocapture", "--test-threads=1"])
                .env("DSQL_TP_CHILD_URL", local.connection_string())
                .env("AWS_ACCESS_KEY_ID", creds.access_key_id())
                .env("AWS_SECRET_ACCESS_KEY", secret)
                .env("AWS_REGION", local.region())
                // No profile files, no instance metadata: the environment is the only source.
                .env("AWS_CONFIG_FILE", home.path().join("config"))
                .env(
                    "AWS_SHARED_CREDENTIALS_FILE",
                    home.path().join("credentials"),
                )
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env_remove("AWS_PROFILE")
                .env_remove("AWS_SESSION_TOKEN");
            if let Some(session) = creds.session_token() {
                cmd.env("AWS_SESSION_TOKEN", session);
            }
            let out = cmd.output().expect("run the test binary as a child");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let good = tokio::task::block_in_place(|| child(creds.secret_access_key()));
        assert!(good.contains("child: connected, SELECT 1 = 1"), "{good}");
        assert_eq!(local.counters().accepted(), 1);
        // The same run with another secret in the environment is refused: the key came from there.
        let bad = tokio::task::block_in_place(|| child("not-the-secret"));
        assert!(bad.contains("child: failed, kind AccessDenied"), "{bad}");
        assert!(bad.contains(creds.access_key_id()), "names the key: {bad}");
        assert!(!bad.contains("not-the-secret"), "{bad}");
        assert_eq!(local.counters().refused(RefusalReason::BadSignature), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occ_helper_retries_conflicts_until_every_increment_lands() {
    guarded("occ", async {
        let local = start(LocalDsql::builder()).await;
        let config = config_from(&local);
        let setup = connect_spawned(&config).await.expect("connect");
        // DSQL: one DDL statement per transaction, DDL and DML apart.
        setup
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS occ_counter (id int PRIMARY KEY, n bigint NOT NULL)",
            )
            .await
            .unwrap();
        setup
            .execute("INSERT INTO occ_counter (id, n) VALUES (1, 0)", &[])
            .await
            .unwrap();

        let policy = RetryPolicy {
            max_attempts: 500,
            max_elapsed: None,
            ..RetryPolicy::occ()
        };
        let runs = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let config = config.clone();
                let policy = policy.clone();
                let runs = runs.clone();
                tokio::spawn(async move {
                    let mut client = connect_spawned(&config).await?;
                    for _ in 0..50 {
                        let runs = &runs;
                        let after: i64 = dsql_tokio_postgres::transaction_with_retry(
                            &mut client,
                            &policy,
                            async |tx| {
                                runs.fetch_add(1, Ordering::Relaxed);
                                let row = tx
                                    .query_one(
                                        "UPDATE occ_counter SET n = n + 1 WHERE id = 1 RETURNING n",
                                        &[],
                                    )
                                    .await?;
                                Ok::<_, dsql_tokio_postgres::Error>(row.get(0))
                            },
                        )
                        .await?;
                        assert!(after >= 1);
                    }
                    Ok::<_, dsql_tokio_postgres::Error>(())
                })
            })
            .collect();
        for task in tasks {
            task.await
                .expect("task panicked")
                .expect("every increment commits");
        }
        let n: i64 = setup
            .query_one("SELECT n FROM occ_counter WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 400);
        // Whether the writers happened to overlap depends on scheduling; what must hold either
        // way: every increment landed once, however many runs it took. (The next test forces a
        // conflict by hand.)
        let runs = runs.load(Ordering::Relaxed);
        assert!(runs >= 400, "closure ran {runs} times");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occ_helper_retries_a_conflict_forced_by_hand_and_commits() {
    guarded("occ by hand", async {
        let local = start(LocalDsql::builder()).await;
        let config = config_from(&local);
        let mut client = connect_spawned(&config).await.expect("connect");
        client
            .batch_execute("CREATE TABLE occ_hand (id int PRIMARY KEY, n int NOT NULL)")
            .await
            .unwrap();
        client
            .execute("INSERT INTO occ_hand VALUES (1, 0)", &[])
            .await
            .unwrap();
        let rival = connect_spawned(&config).await.expect("connect rival");
        let rival = &rival;
        let runs = AtomicU32::new(0);
        let n: i32 = dsql_tokio_postgres::transaction_with_retry(
            &mut client,
            &RetryPolicy::occ(),
            async |tx| {
                let run = runs.fetch_add(1, Ordering::Relaxed);
                // Both sessions read; the rival writes and commits; then this one writes: on
                // the first run a certain conflict (DSQL's OC000), on the second none.
                tx.query_one("SELECT n FROM occ_hand WHERE id = 1", &[])
                    .await?;
                if run == 0 {
                    rival
                        .execute("UPDATE occ_hand SET n = n + 1 WHERE id = 1", &[])
                        .await?;
                }
                let row = tx
                    .query_one(
                        "UPDATE occ_hand SET n = n + 10 WHERE id = 1 RETURNING n",
                        &[],
                    )
                    .await?;
                Ok::<_, dsql_tokio_postgres::Error>(row.get(0))
            },
        )
        .await
        .expect("the retry commits");
        assert_eq!(runs.load(Ordering::Relaxed), 2, "one conflict, one retry");
        assert_eq!(n, 11, "the retry saw the rival's commit");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occ_helper_returns_other_errors_at_once_and_gives_up_after_its_budget() {
    guarded("occ errors", async {
        let local = start(LocalDsql::builder()).await;
        let config = config_from(&local);
        let mut client = connect_spawned(&config).await.expect("connect");
        let runs = AtomicU32::new(0);
        let err = dsql_tokio_postgres::transaction_with_retry(
            &mut client,
            &RetryPolicy::occ(),
            async |tx| {
                runs.fetch_add(1, Ordering::Relaxed);
                tx.execute("SELECT * FROM no_such_table", &[]).await?;
                Ok::<_, dsql_tokio_postgres::Error>(())
            },
        )
        .await
        .expect_err("a missing table is not an OCC conflict");
        assert_eq!(err.kind(), ErrorKind::Db);
        assert_eq!(err.as_db_error().map(|db| db.code().code()), Some("42P01"));
        assert_eq!(
            runs.load(Ordering::Relaxed),
            1,
            "non-OCC errors are not retried"
        );

        // A conflict on every attempt: the helper stops after max_attempts.
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS occ_hot (id int PRIMARY KEY, n int NOT NULL)",
            )
            .await
            .unwrap();
        client
            .execute("INSERT INTO occ_hot VALUES (1, 0)", &[])
            .await
            .unwrap();
        let rival = connect_spawned(&config).await.expect("connect rival");
        let rival = &rival;
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::occ()
        };
        let runs = AtomicU32::new(0);
        let err = dsql_tokio_postgres::transaction_with_retry(&mut client, &policy, async |tx| {
            runs.fetch_add(1, Ordering::Relaxed);
            // Take the snapshot, let a rival commit a change to the row, then write it.
            tx.query_one("SELECT n FROM occ_hot WHERE id = 1", &[])
                .await?;
            rival
                .execute("UPDATE occ_hot SET n = n + 1 WHERE id = 1", &[])
                .await?;
            tx.execute("UPDATE occ_hot SET n = n + 10 WHERE id = 1", &[])
                .await?;
            Ok::<_, dsql_tokio_postgres::Error>(())
        })
        .await
        .expect_err("conflicts on every attempt");
        assert_eq!(err.kind(), ErrorKind::OccConflict, "{err}");
        assert!(err.dsql_class().is_some_and(|c| c.is_occ_conflict()));
        assert_eq!(runs.load(Ordering::Relaxed), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privatelink_without_dns_signs_for_the_cluster_and_sends_its_id() {
    guarded("privatelink", async {
        let local = start(LocalDsql::builder()).await;
        // Dial "localhost" (a name the gateway's certificate carries), sign for the cluster host.
        let config = Config::new(
            ConnectOptions::new("localhost")
                .region(local.region())
                .cluster_id(local.cluster_id())
                .hostaddr(local.address().ip())
                .port(local.port())
                .sslrootcert(local.ca_path()),
        )
        .expect("config")
        .with_token_provider(provider(&local));
        assert_eq!(config.endpoint().connect_host(), "localhost");
        assert_eq!(config.signing_params().host(), local.host());
        assert!(
            config
                .pg_config()
                .get_options()
                .is_some_and(|o| o.contains("amzn-cluster-id="))
        );
        let client = connect_spawned(&config)
            .await
            .expect("connect via the endpoint");
        assert_eq!(select_one(&client).await, 1);
        assert_eq!(local.counters().accepted(), 1);

        // Another cluster's id: the token is signed for a host the gateway is not.
        let other = Config::new(
            ConnectOptions::new("localhost")
                .region(local.region())
                .cluster_id("abcdefghijklmnopqrstuvwxyz")
                .hostaddr(local.address().ip())
                .port(local.port())
                .sslrootcert(local.ca_path()),
        )
        .expect("config")
        .with_token_provider(provider(&local));
        let err = connect_err(&other, "wrong cluster").await;
        assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
        assert_eq!(local.counters().refused(RefusalReason::HostMismatch), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_options_by_name_reach_the_gateway_without_hostaddr() {
    guarded("by name", async {
        // The way a driver without hostaddr (sqlx) reaches dsql-local: dial `localhost`, verify
        // it against the gateway's certificate, sign for the cluster, send amzn-cluster-id.
        let local = start(LocalDsql::builder()).await;
        let options = testing::connect_options_by_name(&local);
        assert_eq!(options.hostaddr, None);
        let config = Config::new(options)
            .expect("config")
            .with_token_provider(provider(&local));
        let client = connect_spawned(&config).await.expect("connect by name");
        assert_eq!(select_one(&client).await, 1);
        assert_eq!(local.counters().accepted(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_reach_the_server() {
    guarded("startup settings", async {
        let local = start(LocalDsql::builder()).await;
        let config = config_with(&local, |o| {
            o.application_name = Some("orders-service".to_owned());
            o.options = Some("-c statement_timeout=4321".to_owned());
        });
        let client = connect_spawned(&config).await.expect("connect");
        let app: String = client
            .query_one("SELECT current_setting('application_name')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(app, "orders-service", "the user's application_name is kept");
        let timeout: String = client
            .query_one("SHOW statement_timeout", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(timeout, "4321ms");

        let default = connect_spawned(&config_from(&local))
            .await
            .expect("connect");
        let app: String = default
            .query_one("SELECT current_setting('application_name')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(app, dsql_tokio_postgres::DEFAULT_APPLICATION_NAME);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_a_server_that_never_answers() {
    guarded("connect timeout", async {
        // Accepts TCP, then says nothing: only connect_timeout can end the attempt.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let config = Config::new(
            ConnectOptions::new("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws")
                .hostaddr([127, 0, 0, 1].into())
                .port(port)
                .connect_timeout(Duration::from_millis(300)),
        )
        .expect("config")
        .with_token_provider(TokenProvider::new(Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        )));
        let err = connect_err(&config, "nobody answers").await;
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        silent.abort();
    })
    .await;
}
