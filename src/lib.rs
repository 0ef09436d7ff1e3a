//! patchgate: an over-the-air update server whose TUF image repository and director make sure
//! a device installs only what its manufacturer signed.
//!
//! Layers (docs/design.md §6): `http → services → {domain, tuf, db, storage}`; `domain` imports
//! nothing of ours.

pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod services;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod tuf;
