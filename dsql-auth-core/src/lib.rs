#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod classify;
pub mod clock;
pub mod connect_options;
pub mod diagnostics;
pub mod endpoint;
mod error;
mod host;
pub mod limits;
pub mod occ_retry;
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
