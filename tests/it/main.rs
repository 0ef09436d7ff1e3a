//! Integration tests: a real server on a loopback port, real HTTP, real signatures, real TUF
//! clients. One test binary (faster to build than one per file).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly by design")]

mod agent_e2e;
mod agent_install;
mod agents;
mod approval;
mod attacker;
mod ceremony;
mod cli;
mod common;
mod contract;
mod crash;
mod db;
mod ddi;
mod deltas;
mod device_path;
mod device_reads;
mod devices;
mod fleet;
mod forge;
mod fuzz_upload;
mod gate;
mod hostile;
mod hsm;
mod instances;
mod jobs;
mod limits;
mod ops;
mod process;
mod publish;
mod refusals_common;
mod refusals_director;
mod refusals_image;
mod retention;
mod rollouts;
mod s3;
mod serving;
mod shapes;
mod shutdown;
mod split_trust;
mod swupdate;
mod tuf_clients;
mod ui_auth;
mod ui_common;
mod ui_devices;
mod ui_releases;
mod ui_rollouts;
