#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

#[cfg(target_arch = "wasm32")]
mod entry;
pub mod service;
pub mod settings;
