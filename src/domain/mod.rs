//! Pure logic with no I/O: names and versions, metadata lifetimes and refresh decisions, rollout
//! rules (states, stage membership, gates), computing deltas between images and choosing which.
//!
//! Nothing here reads a clock, a database or a file; callers pass `now` in. It imports nothing
//! else of ours but `patchgate_protocol`.

pub mod delta;
pub mod delta_policy;
pub mod expiry;
pub mod ids;
pub mod metadata_file;
pub mod names;
pub mod plan;
pub mod rollout;
