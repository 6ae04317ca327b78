//! IAM authentication for Amazon Aurora DSQL, independent of any driver or async runtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dsql_auth_core::Error> {
//! let opts: dsql_auth_core::ConnectOptions = "postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres".parse()?;
//! let token = dsql_auth_core::TokenProvider::from_default_chain(None).await?.token(&opts.signing_params()?).await?;
//! # let _ = token; Ok(()) }
//! ```
//!
//! The pieces, each in its own module:
//! - [`endpoint`]: DSQL hosts, cluster ids, custom hosts, the host to sign for vs. the host to reach.
//! - [`connect_options`]: connection strings (URL and libpq key/value) with DSQL keys.
//! - [`token`]: SigV4 token signing, byte-for-byte equal to AWS's SDKs; [`AuthToken`] is a secret.
//! - [`provider`]: a runtime-agnostic token cache that never hands out a token near expiry.
//! - [`classify`] and [`retry`]: DSQL error classes (OCC, connect refusals), the retry policy and
//!   the one retry loop ([`Retry`]) every adapter runs.
//! - [`limits`]: DSQL's service limits and the [`PoolPolicy`] every pool adapter applies.
//! - [`diagnostics`]: the user-facing text for access denied, refusals and OCC exhaustion.
//! - [`clock`]: time is passed in, so the crate builds for `wasm32-unknown-unknown`.
#![deny(missing_docs)]

pub mod classify;
pub mod clock;
pub mod connect_options;
pub mod diagnostics;
pub mod endpoint;
mod error;
pub mod limits;
pub mod provider;
pub mod retry;
pub mod token;

pub use classify::{DsqlErrorClass, OccKind, classify};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use connect_options::{ConnectOptions, SslMode, SslNegotiation};
pub use endpoint::Endpoint;
pub use error::{Error, ErrorKind};
pub use limits::PoolPolicy;
pub use provider::{ProviderStats, TokenProvider, TokenProviderBuilder, TokenSchedule};
pub use retry::{GaveUp, OccBody, Retry, RetryPolicy, RetryState, Succeeded};
pub use token::{Action, AuthToken, Signer, SigningParams};
