//! TUF metadata building and signing for the image and director repositories, and key sources.
//!
//! Owns the shape of every signed role and the key files. Builders are plain functions over
//! tough's schema types, except a device's three director roles, which are signed far more
//! often and are written as canonical JSON directly (`director_json`, tested against those
//! types); signing goes through tough's `Sign` trait. It must not touch the
//! database, storage or HTTP.

pub mod dev_keys;
pub mod director_json;
pub mod keydir;
pub mod keys;
pub mod metadata;
pub mod pkcs11;
pub mod sign;
pub mod verify;

pub use keys::{KeyError, Signer};
pub use sign::{SignError, SignedMetadata};
