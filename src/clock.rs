//! The clock seam: expiry and refresh logic take `now` from here so tests can move time.

use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The wall clock shifted by an adjustable offset, for tests of expiry and refresh.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset: Mutex<SignedDuration>,
}

impl OffsetClock {
    /// A clock `offset` away from the wall clock.
    pub fn new(offset: SignedDuration) -> Self {
        Self { offset: Mutex::new(offset) }
    }

    /// The current offset from the wall clock.
    pub fn offset(&self) -> SignedDuration {
        self.offset.lock().map(|g| *g).unwrap_or_default()
    }

    /// Moves the clock to `offset` from the wall clock.
    pub fn set_offset(&self, offset: SignedDuration) {
        if let Ok(mut guard) = self.offset.lock() {
            *guard = offset;
        }
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        let offset = self.offset.lock().map(|g| *g).unwrap_or_default();
        Timestamp::now().saturating_add(offset).unwrap_or_else(|_| Timestamp::now())
    }
}
