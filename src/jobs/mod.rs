//! Background jobs. Each takes a lease in the database so that it runs once per fleet of
//! server instances sharing one database.

pub mod blobs;
pub mod deltas;
pub mod expiry;
pub mod rollouts;
