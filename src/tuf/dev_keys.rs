//! Recognising the committed development keys (`keys-example/`) by key id, not by path, so a
//! copy of them anywhere is still recognised.

/// Key ids of every key in `keys-example/`. Regenerating `keys-example/` means updating this.
pub const DEV_KEYIDS: &[&str] = &[
    "86c0fd8ac542ec9e3ba57757c82b5dc1d0ffe765583cadfb821827f5da6a1759",
    "c10428236a9271ccae7a7075429b81132d9e810d7f3d8348e112955d36df7b0b",
    "0806db07300aef86a797d4bb263b455fc0adc6584db62d94fbdcbeebecda6f10",
    "bbeb9e138a285b0d6df2d40497d212fb45b7eaa7c933bafa30df6420cb9f0f23",
    "b26537d98e4ebd23998adb4dcfbf35df820f24ff7816f4d415f5431885e77dee",
    "23143db8769ab2c2281178cde1a2def558c6a8a8125c22e32b82b5e3336ccdb0",
    "54238a1cfce1b32c277c2cec33e022795359ce5d0fabb6f2666a0cb595456468",
];

/// Whether `keyid` belongs to the public development key set.
pub fn is_dev_key(keyid: &str) -> bool {
    DEV_KEYIDS.contains(&keyid)
}
