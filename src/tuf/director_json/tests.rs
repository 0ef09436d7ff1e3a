//! Each role written directly must be byte for byte what tough's schema types give through the
//! general canonical encoder, and must refuse what that refuses.

use std::collections::HashMap;
use std::num::NonZeroU64;

use jiff::Timestamp;
use patchgate_protocol::{SPEC_VERSION, canonical_json};
use proptest::prelude::*;
use serde_json::{Map, Value};
use tough::TargetName;
use tough::schema::{Hashes, Target, Targets};

use super::{snapshot, targets, timestamp};
use crate::tuf::metadata::{self, DirectorTarget};
use crate::tuf::sign::SignedMetadata;

/// The director targets role as tough's types (how it was built before this module).
fn reference_targets(version: u64, expires: Timestamp, entry: Option<&DirectorTarget>) -> Option<Vec<u8>> {
    let mut role = Targets::new(SPEC_VERSION.to_owned(), NonZeroU64::new(version)?, expires);
    role.delegations = None;
    if let Some(entry) = entry {
        let mut extra = HashMap::new();
        extra.insert("sha512".to_owned(), Value::String(entry.sha512.clone()));
        let hashes = Hashes { sha256: hex::decode(&entry.sha256).ok()?.into(), _extra: extra };
        let custom = entry.custom.clone().into_iter().collect();
        let target = Target { length: entry.length, hashes, custom, _extra: HashMap::new() };
        role.targets.insert(TargetName::new(entry.name.clone()).ok()?, target);
    }
    canonical_json(&role).ok()
}

fn reference_snapshot(version: u64, expires: Timestamp, targets_version: u64) -> Option<Vec<u8>> {
    canonical_json(&metadata::snapshot(version, expires, &[("targets".to_owned(), targets_version)]).ok()?).ok()
}

fn reference_timestamp(version: u64, expires: Timestamp, snapshot: &SignedMetadata) -> Option<Vec<u8>> {
    canonical_json(&metadata::timestamp(version, expires, snapshot).ok()?).ok()
}

fn versions() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1u64), 1..1_000u64, any::<u64>(), Just(u64::MAX)]
}

/// Instants from 1970 to 9999, mostly whole seconds, sometimes with milli-, micro- or
/// nanoseconds.
fn instants() -> impl Strategy<Value = Timestamp> {
    let nanos = prop_oneof![4 => Just(0i32), 1 => (1..1_000i32).prop_map(|n| n * 1_000_000),
        1 => (1..1_000_000i32).prop_map(|n| n * 1_000), 1 => 1..1_000_000_000i32];
    (0..=253_402_300_799i64, nanos).prop_map(|(s, n)| Timestamp::new(s, n).unwrap())
}

/// Strings with what canonical JSON treats specially: quotes, backslashes, control
/// characters, non-ASCII and a decomposed accent that NFC composes.
fn strings() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._-]{0,12}",
        "[ -~]{0,12}",
        proptest::collection::vec(
            prop_oneof![
                Just("e\u{301}"),
                Just("\""),
                Just("\\"),
                Just("\u{1}"),
                Just("\n"),
                Just("ü"),
                Just("a"),
                Just("/")
            ],
            0..8
        )
        .prop_map(|parts| parts.concat()),
    ]
}

fn json_values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        strings().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(strings(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn digests(len: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), len).prop_map(hex::encode),
        1 => proptest::collection::vec(any::<u8>(), len).prop_map(hex::encode_upper),
        1 => strings(),
    ]
}

fn target_names() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ("[a-z0-9-]{1,10}", "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}", "[a-z0-9._-]{1,12}")
            .prop_map(|(p, v, f)| format!("{p}/{v}/{f}")),
        1 => strings(),
        1 => Just("a/../b".to_owned()),
        1 => Just("/abs".to_owned()),
    ]
}

fn entries() -> impl Strategy<Value = DirectorTarget> {
    let custom = proptest::collection::btree_map(strings(), json_values(), 0..5);
    (target_names(), any::<u64>(), digests(32), digests(64), custom).prop_map(
        |(name, length, sha256, sha512, custom)| DirectorTarget {
            name,
            length,
            sha256,
            sha512,
            custom: custom.into_iter().collect::<Map<String, Value>>(),
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn targets_are_toughs_bytes(version in versions(), expires in instants(), entry in proptest::option::of(entries())) {
        let direct = targets(version, expires, entry.as_ref()).ok();
        prop_assert_eq!(direct, reference_targets(version, expires, entry.as_ref()));
    }

    #[test]
    fn snapshots_are_toughs_bytes(version in versions(), expires in instants(), targets_version in versions()) {
        prop_assert_eq!(snapshot(version, expires, targets_version).ok(), reference_snapshot(version, expires, targets_version));
    }

    #[test]
    fn timestamps_are_toughs_bytes(
        version in versions(),
        expires in instants(),
        snapshot_version in versions(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        sha256 in digests(32),
    ) {
        let snapshot = SignedMetadata { role: "snapshot".into(), version: snapshot_version, expires, bytes: body, sha256 };
        prop_assert_eq!(timestamp(version, expires, &snapshot).ok(), reference_timestamp(version, expires, &snapshot));
    }
}

/// A realistic director target, checked by hand once: the shape clients receive.
#[test]
fn a_director_target_reads_as_expected() {
    let mut custom = Map::new();
    custom.insert("version".into(), Value::from("1.0.0"));
    custom.insert("action".into(), Value::from("install"));
    let entry = DirectorTarget {
        name: "pump-x1/1.0.0/fw.bin".into(),
        length: 42,
        sha256: "ab".repeat(32),
        sha512: "cd".repeat(64),
        custom,
    };
    let expires = Timestamp::from_second(1_800_000_000).unwrap();
    let bytes = targets(3, expires, Some(&entry)).unwrap();
    let expected = format!(
        r#"{{"_type":"targets","expires":"2027-01-15T08:00:00Z","spec_version":"{SPEC_VERSION}","targets":{{"pump-x1/1.0.0/fw.bin":{{"custom":{{"action":"install","version":"1.0.0"}},"hashes":{{"sha256":"{}","sha512":"{}"}},"length":42}}}},"version":3}}"#,
        "ab".repeat(32),
        "cd".repeat(64)
    );
    assert_eq!(String::from_utf8(bytes).unwrap(), expected);
}
