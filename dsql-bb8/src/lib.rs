#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod error;
mod manager;
mod pool;

pub use error::{Error, ErrorKind};
pub use manager::{DsqlClient, DsqlConnectionManager};
pub use pool::{
    Bb8Builder, DEFAULT_CONNECTION_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LIFETIME_JITTER,
    DEFAULT_MAX_LIFETIME, DEFAULT_MAX_SIZE, Pool, PoolBuilder, PooledConnection,
};

pub use bb8;
pub use dsql_tokio_postgres;
