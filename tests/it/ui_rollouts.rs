//! Admin UI tests: rollouts (to be written).
