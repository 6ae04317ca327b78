//! Amazon Aurora DSQL for [tokio-postgres](https://docs.rs/tokio-postgres): IAM authentication
//! with a valid token on every new connection, verify-full TLS, retries on DSQL's connect
//! refusals and on optimistic-concurrency conflicts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dsql_tokio_postgres::Error> {
//! let config: dsql_tokio_postgres::Config = "postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres".parse()?;
//! let client = dsql_tokio_postgres::connect_spawned(&config).await?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! The client is tokio-postgres' own [`Client`](tokio_postgres::Client); [`connect`] returns the
//! `(Client, Connection)` pair when you want to drive the connection yourself.
//!
//! # Configuration
//!
//! [`Config`] comes from a connection string (URL `postgres://…` or libpq `key=value`) or from
//! the core's [`ConnectOptions`] (setters named after the connection-string keys) with
//! [`Config::new`]. Besides host, port, user and dbname it understands the DSQL keys
//! (`region`, `profile`, `token_duration_secs`, `cluster_id`) and the libpq keys a DSQL user needs:
//! `hostaddr`, `sslmode` (`verify-full` default, `verify-ca`, `require`), `sslrootcert`,
//! `sslnegotiation=direct`, `application_name`, `connect_timeout`, `options`. Unknown keys are an
//! error. The configuration is checked when it is built, including reading `sslrootcert`.
//!
//! # Tokens
//!
//! Tokens come from a [`TokenProvider`]: by default the AWS default credential chain (optionally
//! a named `profile`), resolved once on first connect; or your own with
//! [`Config::with_token_provider`]. The provider caches tokens and never hands out one whose
//! remaining life, capped by the credentials' own expiry, is below its margin, so a connection
//! opened at any moment authenticates. `admin` signs `DbConnectAdmin`, every other role `DbConnect`.
//!
//! # TLS
//!
//! rustls with the aws-lc-rs provider; see [`tls`] for what each `sslmode` checks. SNI carries
//! the host (DSQL requires it), `hostaddr` chooses the address without changing what is
//! verified or signed, and direct TLS offers ALPN `postgresql`.
//!
//! # PrivateLink without private DNS
//!
//! Connect to the VPC endpoint and name the cluster:
//! `host=vpce-….dsql-fnh4.us-east-1.vpce.amazonaws.com cluster_id=<id> region=us-east-1`.
//! The token is signed for `<id>.dsql.us-east-1.on.aws` and `-c amzn-cluster-id=<id>` is sent.
//! As in libpq, verify-full checks the certificate against the host dialled; when the endpoint's
//! certificate does not name it, the TLS error says so and `sslmode=verify-ca` still verifies
//! the chain.
//!
//! # Errors and retries
//!
//! Connect refusals that DSQL asks clients to retry (53400 rate exceeded, 53300 too many
//! connections) are retried with [`RetryPolicy::connect`] (exponential backoff, full jitter,
//! attempt and time budgets); everything else fails at once with an [`Error`] whose
//! [`kind`](Error::kind) says what happened. Access denied names the access key id, signing host,
//! region and action used, never the token.
//!
//! [`transaction_with_retry`] runs a closure in a transaction and reruns it on OCC conflicts.
#![deny(missing_docs)]

mod config;
mod connect;
mod error;
mod occ;
pub mod tls;

pub use config::{Config, DEFAULT_APPLICATION_NAME};
pub use connect::{DsqlConnection, connect, connect_spawned};
pub use error::{Error, ErrorKind};
pub use occ::transaction_with_retry;
pub use tls::MakeDsqlTls;

/// The core types a user of this crate needs, re-exported so one dependency suffices.
pub use dsql_auth_core::{
    Action, AuthToken, ConnectOptions, DsqlErrorClass, Endpoint, RetryPolicy, SigningParams,
    SslMode, SslNegotiation, TokenProvider,
};
/// tokio-postgres, re-exported so the versions match.
pub use tokio_postgres;
