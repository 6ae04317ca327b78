#![doc = include_str!("../README.md")]
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

/// The core types a user of this crate needs, re-exported so one dependency suffices.
pub use dsql_auth_core::{
    Action, AuthToken, ConnectOptions, DsqlErrorClass, Endpoint, RetryPolicy, SigningParams,
    SslMode, SslNegotiation, TokenProvider,
};
/// tokio-postgres and its rustls connector, re-exported so the versions match.
pub use {tokio_postgres, tokio_postgres_rustls};
