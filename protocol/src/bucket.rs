//! Rollout bucketing (docs/design.md §4): which devices a stage at a given percent reaches.
//!
//! Owns the bucket function, which the server, the agent and any third-party implementation must
//! compute identically, so its byte layout is frozen by the test vectors below. Pure: no clock,
//! no randomness, no I/O.
//!
//! # Algorithm
//!
//! ```text
//! bucket(rollout_id, device_id):
//!     h = SHA-256(  "patchgate-bucket-v1"                 -- 19 ASCII bytes, no terminator
//!                 || u32_be(byte_length(rollout_id)) || utf8(rollout_id)
//!                 || u32_be(byte_length(device_id))  || utf8(device_id) )
//!     x = h[0] << 56 | h[1] << 48 | ... | h[7]            -- first 8 bytes, big-endian u64
//!     return x mod 10000                                  -- 0 ..= 9999
//!
//! in_stage(bucket, percent) = bucket < percent × 100      -- 12.34 % → 1234 basis points
//! ```
//!
//! Lengths are in bytes of the UTF-8 encoding, not characters (`gerät-1` is 8 bytes). The length
//! prefixes make the input unambiguous: (`ab`, `c`) and (`a`, `bc`) hash differently. Since a
//! device's bucket does not depend on the percent, raising a percent only adds devices; since it
//! depends on the rollout id, each rollout reaches a different first slice of the fleet.
//!
//! # Test vectors
//!
//! | rollout id      | device id      | bucket |
//! |-----------------|----------------|--------|
//! | `rollout-1`     | `pump-0001`    |   5438 |
//! | `rollout-1`     | `pump-0002`    |   6058 |
//! | `rollout-1`     | `monitor-17`   |   8591 |
//! | `rollout-1`     | `a`            |   4096 |
//! | `rollout-1`     | (empty)        |    904 |
//! | `rollout-1`     | `gerät-1`      |   7351 |
//! | `r-2026-11-eu`  | `pump-0001`    |    558 |
//! | `r-2026-11-eu`  | `pump-0002`    |   1783 |
//! | `r-2026-11-eu`  | `monitor-17`   |   1055 |
//! | `r-2026-11-eu`  | `a`            |    163 |
//! | `r-2026-11-eu`  | (empty)        |   5287 |
//! | `r-2026-11-eu`  | `gerät-1`      |   8898 |
//! | (empty)         | `pump-0001`    |   5714 |
//!
//! `gerät-1` is UTF-8 `67 65 72 c3 a4 74 2d 31`; (empty) is the empty string, length prefix
//! `00 00 00 00`. Example input for (`rollout-1`, `a`): `patchgate-bucket-v1`, `00 00 00 09`,
//! `rollout-1`, `00 00 00 01`, `a` (37 bytes); its SHA-256 starts `16 09 2a 1e 59 4e 10 00`, which
//! is the u64 1587846653460484096, and 1587846653460484096 mod 10000 = 4096.

use sha2::{Digest, Sha256};

/// Number of buckets: one per basis point, so a percent with two decimals is exact.
pub const BUCKETS: u32 = 10_000;

/// Domain separation, so no other SHA-256 use of these ids can collide with bucketing; the `v1`
/// lets a future layout coexist with this one.
const DOMAIN: &[u8] = b"patchgate-bucket-v1";

/// The device's bucket in a rollout, `0..BUCKETS`.
pub fn bucket(rollout_id: &str, device_id: &str) -> u16 {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    for part in [rollout_id, device_id] {
        // Ids are short; a length past u32::MAX (4 GiB) cannot occur on the wire, and saturating
        // keeps this function total instead of panicking.
        hasher.update(u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below 10 000, so it always fits a u16.
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u16
}

/// Whether a device in `bucket` is inside a stage at `basis_points` (percent × 100).
pub fn in_percent(bucket: u16, basis_points: u16) -> bool {
    bucket < basis_points
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in the module docs; keep both in sync.
    const VECTORS: &[(&str, &str, u16)] = &[
        ("rollout-1", "pump-0001", 5438),
        ("rollout-1", "pump-0002", 6058),
        ("rollout-1", "monitor-17", 8591),
        ("rollout-1", "a", 4096),
        ("rollout-1", "", 904),
        ("rollout-1", "gerät-1", 7351),
        ("r-2026-11-eu", "pump-0001", 558),
        ("r-2026-11-eu", "pump-0002", 1783),
        ("r-2026-11-eu", "monitor-17", 1055),
        ("r-2026-11-eu", "a", 163),
        ("r-2026-11-eu", "", 5287),
        ("r-2026-11-eu", "gerät-1", 8898),
        ("", "pump-0001", 5714),
    ];

    #[test]
    fn published_vectors_hold() {
        for &(rollout_id, device_id, expected) in VECTORS {
            assert_eq!(bucket(rollout_id, device_id), expected, "({rollout_id:?}, {device_id:?})");
        }
    }

    #[test]
    fn worked_example_in_the_docs_holds() {
        let mut input = b"patchgate-bucket-v1".to_vec();
        input.extend_from_slice(&[0, 0, 0, 9]);
        input.extend_from_slice(b"rollout-1");
        input.extend_from_slice(&[0, 0, 0, 1, b'a']);
        assert_eq!(input.len(), 37);
        let digest = Sha256::digest(&input);
        assert_eq!(digest[..8], [0x16, 0x09, 0x2a, 0x1e, 0x59, 0x4e, 0x10, 0x00]);
        assert_eq!(1_587_846_653_460_484_096_u64 % 10_000, 4096);
        assert_eq!(bucket("rollout-1", "a"), 4096);
    }

    #[test]
    fn length_prefixes_separate_the_ids() {
        assert_ne!(bucket("ab", "c"), bucket("a", "bc"));
        assert_ne!(bucket("rollout-1", "pump-0001"), bucket("pump-0001", "rollout-1"));
    }

    #[test]
    fn percent_bounds() {
        assert!(!in_percent(0, 0), "0 % reaches nobody");
        assert!(in_percent(0, 1) && !in_percent(1, 1), "0.01 % reaches bucket 0 only");
        assert!(in_percent(1233, 1234) && !in_percent(1234, 1234));
        assert!(in_percent(9_999, 10_000), "100 % reaches everybody");
    }

    #[test]
    fn buckets_are_uniform_to_half_a_percentage_point() {
        const N: u32 = 100_000;
        let mut counts = vec![0u32; BUCKETS as usize];
        for i in 0..N {
            let b = bucket("uniformity", &format!("device-{i:06}"));
            assert!(u32::from(b) < BUCKETS);
            counts[usize::from(b)] += 1;
        }
        let mut below = 0u32;
        for p in 1..=99u32 {
            below += counts[((p - 1) * 100) as usize..(p * 100) as usize].iter().sum::<u32>();
            let share = f64::from(below) * 100.0 / f64::from(N);
            assert!((share - f64::from(p)).abs() <= 0.5, "{p} %: {share:.3} % of ids");
        }
    }
}
