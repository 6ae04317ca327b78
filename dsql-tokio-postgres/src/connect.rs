//! Opening connections: a token per connection, retries on DSQL's connect refusals.

use dsql_auth_core::{DsqlErrorClass, Retry, SystemClock, TokenProvider, classify, diagnostics};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::tls::{advice, rustls_error};

/// The connection half returned by [`connect`]: drive it (spawn it) for the client to work.
pub type DsqlConnection = Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// Opens a connection: gets a token (from the provider's cache when it is still fresh enough),
/// connects with TLS as configured, and retries DSQL's connect refusals (53400 rate exceeded,
/// 53300 too many connections) with the configured backoff. Any other failure is returned at
/// once, with its cause.
///
/// Returns tokio-postgres' own types; the connection must be polled (spawned) for the client
/// to make progress. [`connect_spawned`] does that for you.
pub async fn connect(config: &Config) -> Result<(Client, DsqlConnection), Error> {
    let provider = config.token_provider().await?;
    let endpoint = config.endpoint();
    let retry = Retry::new(
        config.connect_retry(),
        &SystemClock,
        |failed: &Failed, delay: std::time::Duration| {
            tracing::debug!(
                host = endpoint.connect_host(),
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                reason = %failed.class().unwrap_or(DsqlErrorClass::Other),
                "DSQL refused the connection; retrying"
            );
            tokio::time::sleep(delay)
        },
        rand::random::<f64>,
    );
    let outcome = retry
        .run(
            |failed: &Failed| failed.class().is_some_and(|c| c.is_retryable_connect()),
            // A plain closure returning a future (not an `async` closure): its futures borrow only
            // `config` and `provider`, which keeps `connect`'s future `Send` for bb8 and spawn.
            |attempt| connect_once(config, provider, attempt),
        )
        .await;
    let gave_up = match outcome {
        Ok(done) => {
            if done.attempts > 1 {
                tracing::info!(
                    host = endpoint.connect_host(),
                    connect_retries = done.attempts - 1,
                    "DSQL connection opened after refusals"
                );
            } else {
                tracing::debug!(host = endpoint.connect_host(), "DSQL connection opened");
            }
            return Ok(done.value);
        }
        Err(gave_up) => gave_up,
    };
    let err = match gave_up.error {
        Failed::Final(err) => return Err(err),
        Failed::Pg(err) => err,
    };
    let class = err
        .as_db_error()
        .map(|db| classify(db.code().code(), db.message()));
    match class {
        Some(class) if gave_up.exhausted => Err(Error::new(
            ErrorKind::Refused,
            diagnostics::refused_after_budget(
                endpoint.connect_host(),
                &class,
                gave_up.attempts,
                gave_up.elapsed,
            ),
        )
        .with_source(err)),
        Some(DsqlErrorClass::AccessDenied) => Err(access_denied(config, err).await),
        Some(_) => {
            let message = match err.as_db_error() {
                Some(db) => format!(
                    "DSQL at {} rejected the connection: {} (SQLSTATE {}); check the startup settings \
                     (user, dbname, options: DSQL rejects parameters it does not support)",
                    endpoint.connect_host(),
                    db.message(),
                    db.code().code()
                ),
                None => format!(
                    "DSQL at {} rejected the connection: {err}",
                    endpoint.connect_host()
                ),
            };
            Err(Error::new(ErrorKind::Db, message).with_source(err))
        }
        None => Err(transport_error(config, err)),
    }
}

/// One connect attempt's failure: a driver error (classified, maybe retried) or a final error.
enum Failed {
    Pg(tokio_postgres::Error),
    Final(Error),
}

impl Failed {
    fn class(&self) -> Option<DsqlErrorClass> {
        match self {
            Failed::Pg(err) => err
                .as_db_error()
                .map(|db| classify(db.code().code(), db.message())),
            Failed::Final(_) => None,
        }
    }
}

async fn connect_once(
    config: &Config,
    provider: &TokenProvider,
    attempt: u32,
) -> Result<(Client, DsqlConnection), Failed> {
    let endpoint = config.endpoint();
    let token = provider
        .token(config.signing_params())
        .await
        .map_err(|e| Failed::Final(Error::from_core(e)))?;
    let pg = config.pg_config_with_token(&token);
    drop(token);
    tracing::debug!(
        host = endpoint.connect_host(),
        sign_host = endpoint.sign_host(),
        user = config.options().user.as_str(),
        attempt,
        "opening DSQL connection"
    );
    let connecting = pg.connect(config.tls().clone());
    match config.options().connect_timeout {
        // tokio-postgres bounds only the TCP connect; this bounds TLS and authentication too.
        Some(limit) => match tokio::time::timeout(limit, connecting).await {
            Ok(result) => result.map_err(Failed::Pg),
            Err(_) => Err(Failed::Final(Error::new(
                ErrorKind::Timeout,
                format!(
                    "connecting to {}:{} took longer than connect_timeout ({} ms): check that the \
                     host is reachable, or raise connect_timeout",
                    endpoint.connect_host(),
                    endpoint.port(),
                    limit.as_millis()
                ),
            ))),
        },
        None => connecting.await.map_err(Failed::Pg),
    }
}

/// [`connect`], then spawns the connection on the current tokio runtime and returns the client.
/// The spawned task ends when the client is dropped or the server closes the connection.
pub async fn connect_spawned(config: &Config) -> Result<Client, Error> {
    let (client, connection) = connect(config).await?;
    let host = config.endpoint().connect_host().to_owned();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            // Expected now and then: DSQL closes connections at 60 minutes and on failover.
            tracing::debug!(host, error = %err, "DSQL connection ended with an error");
        }
    });
    Ok(client)
}

async fn access_denied(config: &Config, err: tokio_postgres::Error) -> Error {
    let key_id = match config.token_provider().await {
        Ok(provider) => provider.access_key_id().await.ok(),
        Err(_) => None,
    };
    let text = diagnostics::AccessDenied {
        connect_host: config.endpoint().connect_host(),
        user: &config.options().user,
        access_key_id: key_id.as_deref(),
        signing: config.signing_params(),
        server_detail: err.as_db_error().and_then(|db| db.detail()),
    }
    .to_string();
    Error::new(ErrorKind::AccessDenied, text).with_source(err)
}

fn transport_error(config: &Config, err: tokio_postgres::Error) -> Error {
    let endpoint = config.endpoint();
    if let Some(tls) = rustls_error(&err) {
        let message = format!(
            "TLS handshake with {} failed: {tls}; {}",
            endpoint.connect_host(),
            advice(tls)
        );
        return Error::new(ErrorKind::Tls, message).with_source(err);
    }
    let message = if err.is_closed() {
        format!(
            "{}:{} closed the connection during startup: check sslnegotiation (a server without direct TLS \
             closes the connection) and that this is a DSQL endpoint",
            endpoint.connect_host(),
            endpoint.port()
        )
    } else {
        format!(
            "cannot connect to {}:{}{}: {err}; check host, hostaddr, port and the network path",
            endpoint.connect_host(),
            endpoint.port(),
            config
                .options()
                .hostaddr
                .map(|a| format!(" (address {a})"))
                .unwrap_or_default()
        )
    };
    Error::new(ErrorKind::Connect, message).with_source(err)
}
