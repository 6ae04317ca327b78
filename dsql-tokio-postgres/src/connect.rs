//! Opening connections: a token per connection, retries on DSQL's connect refusals.

use std::time::Instant;

use dsql_auth_core::{DsqlErrorClass, classify};
use tokio_postgres::{Client, Connection, Socket};

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::tls::{TlsStream, is_tls_error};

/// The connection half returned by [`connect`]: drive it (spawn it) for the client to work.
pub type DsqlConnection = Connection<Socket, TlsStream<Socket>>;

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
    let started = Instant::now();
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let token = provider
            .token(config.signing_params())
            .await
            .map_err(Error::from_core)?;
        let pg = config.pg_config_with_token(&token);
        drop(token);
        tracing::debug!(
            host = endpoint.connect_host(),
            sign_host = endpoint.sign_host(),
            user = config.options().user.as_str(),
            attempt = attempts,
            "opening DSQL connection"
        );
        let attempt = pg.connect(config.tls().clone());
        let result = match config.options().connect_timeout {
            // tokio-postgres bounds only the TCP connect; this bounds TLS and authentication too.
            Some(limit) => match tokio::time::timeout(limit, attempt).await {
                Ok(result) => result,
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "connecting to {}:{} took longer than connect_timeout ({} ms): check that the \
                             host is reachable, or raise connect_timeout",
                            endpoint.connect_host(),
                            endpoint.port(),
                            limit.as_millis()
                        ),
                    ));
                }
            },
            None => attempt.await,
        };
        let err = match result {
            Ok(pair) => {
                if attempts > 1 {
                    tracing::info!(
                        host = endpoint.connect_host(),
                        connect_retries = attempts - 1,
                        "DSQL connection opened after refusals"
                    );
                } else {
                    tracing::debug!(host = endpoint.connect_host(), "DSQL connection opened");
                }
                return Ok(pair);
            }
            Err(err) => err,
        };
        let class = err
            .as_db_error()
            .map(|db| classify(db.code().code(), db.message()));
        match class {
            Some(class) if class.is_retryable_connect() => {
                let delay = config.connect_retry().next_delay(
                    attempts,
                    started.elapsed(),
                    rand::random::<f64>(),
                );
                match delay {
                    Some(delay) => {
                        tracing::debug!(
                            host = endpoint.connect_host(),
                            attempt = attempts,
                            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            reason = %class,
                            "DSQL refused the connection; retrying"
                        );
                        tokio::time::sleep(delay).await;
                    }
                    None => {
                        return Err(Error::new(
                            ErrorKind::Refused,
                            format!(
                                "DSQL kept refusing new connections to {} ({class}) after {attempts} attempts \
                                 in {} ms: open fewer connections at once (use a pool with a lower max size) \
                                 or allow a larger connect retry budget",
                                endpoint.connect_host(),
                                started.elapsed().as_millis()
                            ),
                        )
                        .with_source(err));
                    }
                }
            }
            Some(DsqlErrorClass::AccessDenied) => return Err(access_denied(config, err).await),
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
                return Err(Error::new(ErrorKind::Db, message).with_source(err));
            }
            None => return Err(transport_error(config, err)),
        }
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
    let params = config.signing_params();
    let key_id = match config.token_provider().await {
        Ok(provider) => provider
            .access_key_id()
            .await
            .unwrap_or_else(|_| "<unknown>".to_owned()),
        Err(_) => "<unknown>".to_owned(),
    };
    let detail = err
        .as_db_error()
        .and_then(|db| db.detail())
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
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

fn transport_error(config: &Config, err: tokio_postgres::Error) -> Error {
    let endpoint = config.endpoint();
    if let Some(tls) = is_tls_error(&err) {
        let message = tls.to_string();
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
                .as_deref()
                .map(|a| format!(" (address {a})"))
                .unwrap_or_default()
        )
    };
    Error::new(ErrorKind::Connect, message).with_source(err)
}
