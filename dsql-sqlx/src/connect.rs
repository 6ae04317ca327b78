//! A single connection: a token valid now, DSQL's connect refusals retried, failures explained.
//! The retry decisions and the texts are dsql-auth-core's (`Retry`, `classify`, `diagnostics`).

use std::time::Duration;

use dsql_auth_core::{DsqlErrorClass, Retry, SystemClock, classify, diagnostics};
use sqlx::{ConnectOptions as _, PgConnection};

use crate::config::Config;
use crate::error::{Error, ErrorKind};

/// Opens one connection (sqlx's own [`PgConnection`]): signs a token (or takes a cached one with
/// enough life left), connects with TLS as configured, and retries DSQL's connect refusals (53400
/// rate exceeded, 53300 too many connections) as the config's retry policy says. Any other
/// failure is returned at once; access denied names the access key id, signing host, region
/// and action used.
pub async fn connect(config: &Config) -> Result<PgConnection, Error> {
    let outcome = Retry::new(
        config.connect_retry(),
        &SystemClock,
        |_: &Failed, delay: Duration| {
            tracing::debug!(
                target: "dsql_sqlx",
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "DSQL refused the connection (rate or connection limit); retrying"
            );
            tokio::time::sleep(delay)
        },
        rand::random::<f64>,
    )
    .run(Failed::is_retryable, |_| connect_once(config))
    .await;
    match outcome {
        Ok(done) => {
            tracing::debug!(target: "dsql_sqlx", host = config.endpoint().connect_host(), attempts = done.attempts, "DSQL connection opened");
            Ok(done.value)
        }
        Err(gave_up) => Err(match gave_up.error {
            Failed::Ours(e) => e,
            Failed::Sqlx(e) if gave_up.exhausted => {
                refused_after_budget(config, e, gave_up.attempts, gave_up.elapsed)
            }
            Failed::Sqlx(e) => explain(config, e).await,
        }),
    }
}

/// One attempt's failure: ours (token, timeout) or sqlx's (to classify).
enum Failed {
    Ours(Error),
    Sqlx(sqlx::Error),
}

impl Failed {
    fn is_retryable(&self) -> bool {
        matches!(self, Failed::Sqlx(e) if class_of(e).is_some_and(|c| c.is_retryable_connect()))
    }
}

async fn connect_once(config: &Config) -> Result<PgConnection, Failed> {
    let provider = config.token_provider().await.map_err(Failed::Ours)?;
    let token = provider
        .token(config.signing_params())
        .await
        .map_err(|e| Failed::Ours(Error::from_core(e)))?;
    let pg = config.pg_options(&token);
    drop(token);
    let attempt = pg.connect();
    let result = match config.options().connect_timeout {
        Some(limit) => match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => return Err(Failed::Ours(connect_timed_out(config, limit))),
        },
        None => attempt.await,
    };
    result.map_err(Failed::Sqlx)
}

pub(crate) fn class_of(err: &sqlx::Error) -> Option<DsqlErrorClass> {
    match err {
        sqlx::Error::Database(db) => {
            Some(classify(db.code().as_deref().unwrap_or(""), db.message()))
        }
        _ => None,
    }
}

fn connect_timed_out(config: &Config, limit: Duration) -> Error {
    let ep = config.endpoint();
    Error::new(
        ErrorKind::Timeout,
        format!(
            "connecting to {}:{} took longer than connect_timeout ({} ms): check that the host is \
             reachable, or raise connect_timeout",
            ep.connect_host(),
            ep.port(),
            limit.as_millis()
        ),
    )
}

pub(crate) fn refused_after_budget(
    config: &Config,
    err: sqlx::Error,
    attempts: u32,
    elapsed: Duration,
) -> Error {
    let reason = class_of(&err).unwrap_or(DsqlErrorClass::Other);
    let text = diagnostics::refused_after_budget(
        config.endpoint().connect_host(),
        &reason,
        attempts,
        elapsed,
    );
    Error::new(ErrorKind::Refused, text).with_source(err)
}

/// Turns a sqlx error from opening a connection into ours, with what to do next.
pub(crate) async fn explain(config: &Config, err: sqlx::Error) -> Error {
    let ep = config.endpoint();
    match &err {
        sqlx::Error::Database(db) => {
            if class_of(&err) == Some(DsqlErrorClass::AccessDenied) {
                return access_denied(config, err).await;
            }
            let message = format!(
                "DSQL at {} rejected the connection: {} (SQLSTATE {}); check the startup settings \
                 (user, dbname, options: DSQL rejects parameters it does not support)",
                ep.connect_host(),
                db.message(),
                db.code().as_deref().unwrap_or("none")
            );
            Error::new(ErrorKind::Db, message).with_source(err)
        }
        _ if is_tls(&err) => {
            let message = format!(
                "TLS with {}:{} failed: {}; with sslmode=verify-full the certificate must be issued \
                 by a trusted CA (sslrootcert adds one) for the host `{}`",
                ep.connect_host(),
                ep.port(),
                tls_cause(&err),
                ep.connect_host()
            );
            Error::new(ErrorKind::Tls, message).with_source(err)
        }
        sqlx::Error::PoolTimedOut => Error::new(
            ErrorKind::Timeout,
            format!(
                "no DSQL connection to {} within the pool's acquire timeout: the pool is busy, or new \
                 connections are slow; raise max_connections or acquire_timeout",
                ep.connect_host()
            ),
        )
        .with_source(err),
        sqlx::Error::PoolClosed => {
            Error::new(ErrorKind::PoolClosed, "the pool was closed").with_source(err)
        }
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => Error::new(
            ErrorKind::Config,
            format!("sqlx refused the connection settings: {err}"),
        )
        .with_source(err),
        _ => {
            let message = format!(
                "cannot connect to {}:{}: {err}; check host, port and the network path",
                ep.connect_host(),
                ep.port()
            );
            Error::new(ErrorKind::Connect, message).with_source(err)
        }
    }
}

/// sqlx reports handshake failures as `Error::Tls`, but certificate failures during the
/// handshake as I/O errors carrying a `rustls::Error`.
fn is_tls(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    }
}

fn tls_cause(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Io(io) => io
            .get_ref()
            .map_or_else(|| io.to_string(), ToString::to_string),
        other => other.to_string(),
    }
}

async fn access_denied(config: &Config, err: sqlx::Error) -> Error {
    let key_id = match config.token_provider().await {
        Ok(provider) => provider.access_key_id().await.ok(),
        Err(_) => None,
    };
    let detail = match &err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.detail())
            .map(str::to_owned),
        _ => None,
    };
    let text = diagnostics::AccessDenied {
        connect_host: config.endpoint().connect_host(),
        user: &config.options().user,
        access_key_id: key_id.as_deref(),
        signing: config.signing_params(),
        server_detail: detail.as_deref(),
    }
    .to_string();
    Error::new(ErrorKind::AccessDenied, text).with_source(err)
}
