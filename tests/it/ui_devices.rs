//! Admin UI tests: devices (to be written).
