#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod client;
pub mod config;
mod error;
#[cfg(feature = "fake-api")]
pub mod fake;
pub mod io;
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
