//! Keeps Cloudflare Hyperdrive configurations supplied with fresh Aurora DSQL IAM tokens.
//!
//! ```no_run
//! # async fn demo(token: dsql_auth_core::AuthToken) -> Result<(), dsql_hyperdrive::Error> {
//! let client = dsql_hyperdrive::HyperdriveClient::new("<account id>", std::env::var("CLOUDFLARE_API_TOKEN").unwrap_or_default())?;
//! client.rotate_password("<config id>", token.as_str().into()).await?; // PATCH {"origin":{"password":...}}
//! # Ok(()) }
//! ```
//!
//! The pieces:
//! - [`client`]: the Hyperdrive configs API (list with pagination, get, create, edit), lenient
//!   envelope parsing, retries on 429 (honouring `retry-after`), 5xx and codes 2010/2011/2015.
//! - [`policy`]: when to rotate, a pure function of (state, now, random): a third of the token's
//!   effective life (token or credentials expiry, whichever is first) left, minus jitter.
//! - [`config`], [`state`] and [`rotate`]: the rotator behind `dsql hyperdrive sync|run|status`:
//!   its TOML file, its state file, and one pass over all endpoints with a report per endpoint.
//! - `fake` (feature `fake-api`): a local fake of the API that test-connects to the origin with
//!   the new password, like Hyperdrive does.
//!
//! Rotation only ever sends the new password (PATCH); it never replaces (PUT) or deletes a
//! configuration. Tokens and the API token are [`Secret`]s: never printed.
#![deny(missing_docs)]

pub mod client;
pub mod config;
mod error;
pub mod io;
#[cfg(feature = "fake-api")]
pub mod fake;
pub mod model;
pub mod policy;
pub mod rotate;
mod secret;
pub mod state;

pub use client::{ClientBuilder, HyperdriveClient};
pub use config::{ConfigError, EndpointSpec, RotatorConfig};
pub use error::{ApiMessage, Error, ErrorKind, Result};
pub use model::{ConfigEdit, HyperdriveConfig, NewConfig, Origin};
pub use policy::{Decision, RotateReason, RotationPolicy, RotationState};
pub use rotate::{EndpointReport, EndpointStatus, Rotator, SyncAction, SyncOptions, SyncReport};
pub use secret::Secret;
pub use state::{EndpointState, StateFile};
