//! Pure logic with no I/O: names and versions, metadata lifetimes and refresh decisions.
//!
//! Nothing here reads a clock, a database or a file; callers pass `now` in. It imports nothing
//! else of ours.

pub mod expiry;
pub mod names;
