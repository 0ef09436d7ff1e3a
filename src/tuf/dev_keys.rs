//! Recognising the committed development keys (`keys-example/`) by key id, not by path, so a
//! copy of them anywhere is still recognised. The list lives in the protocol crate, because the
//! agent refuses roots that trust these keys too.

pub use patchgate_protocol::keys::{DEV_KEYIDS, is_dev_key};
