//! A rollout over time: installs, failures and rejections per time bucket (to be written).
