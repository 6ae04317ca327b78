#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod config;
mod connect;
mod error;
mod occ;
mod pool;

pub use config::{Config, DEFAULT_APPLICATION_NAME, DEFAULT_STATEMENT_CACHE_CAPACITY};
pub use connect::connect;
pub use error::{Error, ErrorKind};
#[doc(hidden)]
pub use occ::private as __occ_private;
pub use occ::{OccTarget, transaction_with_retry};
pub use pool::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_LIFETIME_JITTER, DEFAULT_MAX_LIFETIME, Pool, past_lifetime,
    pool_options, pool_options_with,
};

pub use dsql_auth_core::{ConnectOptions, PoolPolicy, RetryPolicy, TokenProvider};
pub use sqlx;
