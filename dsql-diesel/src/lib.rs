#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod connect;
mod error;
mod occ;
#[cfg(any(feature = "bb8", feature = "deadpool"))]
mod pooled;

#[cfg(feature = "bb8")]
pub mod bb8;
#[cfg(feature = "deadpool")]
pub mod deadpool;

pub use connect::connect;
pub use error::{Error, ErrorKind};
pub use occ::transaction_with_retry;
#[cfg(any(feature = "bb8", feature = "deadpool"))]
pub use pooled::{DEFAULT_CONNECTION_TIMEOUT, DEFAULT_MAX_SIZE, Manager, connection_expires_at};

/// The configuration type and the core types a user needs, re-exported so one dependency suffices.
pub use dsql_auth_core::{OccBody, PoolPolicy};
pub use dsql_tokio_postgres::{Config, ConnectOptions, RetryPolicy, TokenProvider};
/// diesel, diesel-async and dsql-tokio-postgres, re-exported so the versions match.
pub use {diesel, diesel_async, dsql_tokio_postgres};
