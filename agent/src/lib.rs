//! The patchgate device agent: a device installs exactly what the manufacturer signed and the
//! director assigned to it, and nothing else, even when the network, a mirror or the director is
//! hostile.
//!
//! - [`state`]: the state directory (key, token, counter, installed image, attempt), every write
//!   atomic;
//! - [`net`]: HTTP (HTTPS except on loopback), enrollment and signed reports, and the
//!   `Transport` that carries the device token;
//! - [`verify`]: the cross-check of the director's assignment against the image repository
//!   (docs/design.md §2.5 and §2.7), a pure function;
//! - [`tuf`]: one TUF repository refreshed by our own TUF 1.0 client workflow (root chain,
//!   timestamp, snapshot, targets, and delegated roles loaded lazily along the delegation walk
//!   toward a target), with tough's schema types and signature thresholds;
//! - [`delta`]: finding and applying a signed delta from the running image to the assigned one;
//! - [`download`]: Range-resumable downloads into a staging file capped at the signed length;
//! - [`agent`]: [`Agent`], the use cases `enroll`, `check`, `install`, `confirm`, `run`;
//! - [`simulate`]: a fleet of virtual devices in one process;
//! - [`cli`]: the `patchgate-agent` command line and its exit codes.
//!
//! Depends on `patchgate-protocol`, tough, ed25519-dalek and reqwest; never on the server crate,
//! actix or sea-orm.

pub mod agent;
pub mod cli;
pub mod delta;
pub mod download;
pub mod error;
pub mod net;
pub mod simulate;
pub mod state;
pub mod tuf;
pub mod verify;

pub use agent::{Agent, CheckOutcome, EnrollOptions, InstallOptions, InstallOutcome, Tuning};
pub use error::{AgentError, Refusal};
pub use verify::Assigned;
