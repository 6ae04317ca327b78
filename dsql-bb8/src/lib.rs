//! A [bb8](https://docs.rs/bb8) connection pool for Amazon Aurora DSQL, over
//! [dsql-tokio-postgres](dsql_tokio_postgres): every new connection authenticates with a token
//! that is valid at that moment, however long the pool lives.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = dsql_bb8::Pool::new("postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres".parse()?).await?;
//! let rows = pool.get().await?.query("SELECT 1", &[]).await?;
//! # let _ = rows; Ok(()) }
//! ```
//!
//! # What the pool does for DSQL
//!
//! - **Tokens**: connections are opened by [`dsql_tokio_postgres::connect`], which takes a token
//!   from the configuration's provider (cached, never near expiry) and retries DSQL's connect
//!   refusals (53400 rate exceeded, 53300 too many connections) with backoff.
//! - **Lifetimes**: DSQL closes connections after 60 minutes. Each pooled connection is retired
//!   after its own lifetime, drawn between 49.5 and 55 minutes by default, so a pool opened at
//!   once is not replaced at once. Idle connections close after 10 minutes.
//! - **Validation**: idle connections are checked with an empty query before being handed out,
//!   so one the server or network closed is replaced rather than returned.
//! - **Errors**: bb8 hides connect failures behind a timeout. [`Pool::get`] returns failures that
//!   retrying cannot fix (access denied, TLS, credentials, configuration) as soon as they happen,
//!   and attaches the last connect failure to a timeout.
//!
//! # Types
//!
//! [`Pool`] derefs to bb8's own `bb8::Pool<DsqlConnectionManager>`; a checked-out connection is
//! bb8's `PooledConnection` and derefs to tokio-postgres' `Client`. [`DsqlConnectionManager`]
//! also works with a plain [`bb8::Builder`] if you want bb8's API unchanged (you then lose the
//! early connect-failure reporting of [`Pool::get`]).
//!
//! # OCC retries
//!
//! ```no_run
//! # async fn demo(pool: &dsql_bb8::Pool) -> Result<(), Box<dyn std::error::Error>> {
//! use dsql_tokio_postgres::{RetryPolicy, transaction_with_retry};
//! let mut conn = pool.get().await?;
//! transaction_with_retry(&mut conn, &RetryPolicy::occ(), async |tx| {
//!     tx.execute("UPDATE counters SET n = n + 1 WHERE id = 1", &[]).await
//! })
//! .await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod error;
mod manager;
mod pool;

pub use error::Error;
pub use manager::{DsqlClient, DsqlConnectionManager};
pub use pool::{
    DEFAULT_CONNECTION_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LIFETIME_JITTER,
    DEFAULT_MAX_LIFETIME, DEFAULT_MAX_SIZE, Pool, PoolBuilder, PooledConnection,
};

pub use bb8;
pub use dsql_tokio_postgres;
