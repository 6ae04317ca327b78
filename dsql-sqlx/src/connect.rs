//! A single connection: a token valid now, DSQL's connect refusals retried, failures explained.

use std::time::{Duration, Instant};

use dsql_auth_core::{DsqlErrorClass, RetryPolicy, classify};
use sqlx::{ConnectOptions as _, PgConnection};

use crate::config::Config;
use crate::error::{Error, ErrorKind};

/// Opens one connection (sqlx's own [`PgConnection`]): signs a token (or takes a cached one with
/// enough life left), connects with TLS as configured, and retries DSQL's connect refusals (53400
/// rate exceeded, 53300 too many connections) as the config's retry policy says. Any other
/// failure is returned at once; access denied names the access key id, signing host, region
/// and action used.
pub async fn connect(config: &Config) -> Result<PgConnection, Error> {
    let provider = config.token_provider().await?;
    let started = Instant::now();
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let token = provider
            .token(config.signing_params())
            .await
            .map_err(Error::from_core)?;
        let pg = config.pg_options(&token);
        drop(token);
        let attempt = pg.connect();
        let result = match config.options().connect_timeout {
            Some(limit) => match tokio::time::timeout(limit, attempt).await {
                Ok(result) => result,
                Err(_) => return Err(connect_timed_out(config, limit)),
            },
            None => attempt.await,
        };
        drop(pg);
        let err = match result {
            Ok(conn) => {
                tracing::debug!(
                    host = config.endpoint().connect_host(),
                    attempts,
                    "DSQL connection opened"
                );
                return Ok(conn);
            }
            Err(err) => err,
        };
        match retry_delay(config.connect_retry(), &err, attempts, started.elapsed()) {
            Retry::After(delay) => tokio::time::sleep(delay).await,
            Retry::GiveUp => return Err(refused_after_budget(config, err, attempts, started)),
            Retry::No => return Err(explain(config, err).await),
        }
    }
}

pub(crate) enum Retry {
    After(Duration),
    GiveUp,
    No,
}

/// SEAM(core stage A): the core's retry runner replaces this decision and the loops around it.
pub(crate) fn retry_delay(
    policy: &RetryPolicy,
    err: &sqlx::Error,
    attempts: u32,
    elapsed: Duration,
) -> Retry {
    if !class_of(err).is_some_and(|c| c.is_retryable_connect()) {
        return Retry::No;
    }
    match policy.next_delay(attempts, elapsed, rand::random::<f64>()) {
        Some(delay) => {
            tracing::debug!(
                attempt = attempts,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "DSQL refused the connection (rate or connection limit); retrying"
            );
            Retry::After(delay)
        }
        None => Retry::GiveUp,
    }
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
    started: Instant,
) -> Error {
    // SEAM(core stage A): the diagnostic text comes from the core.
    Error::new(
        ErrorKind::Refused,
        format!(
            "DSQL kept refusing new connections to {} after {attempts} attempts in {} ms: open fewer \
             connections at once (a pool with a lower max size) or allow a larger connect retry budget",
            config.endpoint().connect_host(),
            started.elapsed().as_millis()
        ),
    )
    .with_source(err)
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
    let params = config.signing_params();
    let key_id = match config.token_provider().await {
        Ok(provider) => provider
            .access_key_id()
            .await
            .unwrap_or_else(|_| "<unknown>".to_owned()),
        Err(_) => "<unknown>".to_owned(),
    };
    let detail = match &err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.detail())
            .map(|d| format!(" ({d})"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    // SEAM(core stage A): the diagnostic text comes from the core.
    Error::new(
        ErrorKind::AccessDenied,
        format!(
            "DSQL at {} denied access to user {:?}{detail}: the token was signed with access key id {key_id} \
             for host {}, region {}, action {}. Check that these credentials are current, that their IAM \
             policy allows dsql:{} on this cluster, that host and region name this cluster, and (for a \
             role other than admin) that the role is linked to this IAM identity",
            config.endpoint().connect_host(),
            config.options().user,
            params.host(),
            params.region(),
            params.action(),
            params.action(),
        ),
    )
    .with_source(err)
}
