//! Fuzz targets of the wire formats (see `patchgate_protocol::fuzzing`): the signed report and
//! enrollment envelopes a server opens for any client, and canonical JSON, the bytes every
//! signature covers. Corpora: `fuzz/corpus/{report_envelope,enroll_request,canonical_json}/`,
//! written by `cargo test -p patchgate-protocol --test fuzz -- --ignored write_corpus`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly by design")]

use ed25519_dalek::SigningKey;
use patchgate_protocol::fuzzing::{self, Mutated};
use patchgate_protocol::report::{Attempt, AttemptState, DeviceReport, EnrollRequest, InstalledImage};
use patchgate_protocol::{canonical_json, open, open_enroll_request, peek_report_device_id, sign, verify};
use serde_json::{Value, json};

/// The key the report corpus is signed with (a fixed test key, nothing else trusts it).
fn device_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// Whether `value`'s canonical form is stable: the same bytes after the value went through
/// ordinary JSON and back. (OLPC canonical JSON writes control characters raw, so its bytes are
/// not always strict JSON: they are only ever hashed and signed, never parsed.)
fn canonical_is_stable(value: &Value) -> Result<(), String> {
    let Ok(bytes) = canonical_json(value) else {
        // Floats have no canonical form; anything else must encode.
        return if contains_float(value) { Ok(()) } else { Err(format!("no canonical form for {value}")) };
    };
    let again: Value = serde_json::from_slice(&serde_json::to_vec(value).unwrap()).unwrap();
    if canonical_json(&again).map_err(|e| e.to_string())? != bytes {
        return Err(format!("the canonical form of {value} changed after a JSON round trip"));
    }
    Ok(())
}

fn contains_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(contains_float),
        Value::Object(map) => map.values().any(contains_float),
        _ => false,
    }
}

#[test]
fn report_envelope() {
    let corpus = fuzzing::corpus("report_envelope");
    let public = device_key().verifying_key();
    let signed: Vec<Value> = corpus.iter().map(|b| verify(b, &public).expect("a corpus report verifies")).collect();
    fuzzing::run("report_envelope", fuzzing::cases(), fuzzing::mutated(corpus), |m: &Mutated| {
        let _ = peek_report_device_id(&m.bytes);
        let Ok(report) = open::<DeviceReport>(&m.bytes, &public) else { return Ok(()) };
        let _ = report.validate();
        // Whatever still verifies after a mutation says exactly what a corpus report signed.
        let value = serde_json::to_value(&report).unwrap();
        let verified = verify(&m.bytes, &public).map_err(|e| format!("open accepted, verify refused: {e}"))?;
        if !signed.contains(&verified) {
            return Err(format!("a mutated report verified with content nobody signed: {verified}"));
        }
        let typed: Vec<Value> = signed
            .iter()
            .map(|v| serde_json::to_value(serde_json::from_value::<DeviceReport>(v.clone()).unwrap()).unwrap())
            .collect();
        if !typed.contains(&value) {
            return Err(format!("the typed report differs from what was signed: {value}"));
        }
        Ok(())
    });
}

#[test]
fn enroll_request() {
    let corpus = fuzzing::corpus("enroll_request");
    let originals: Vec<EnrollRequest> =
        corpus.iter().map(|b| open_enroll_request(b).expect("a corpus enrollment opens").0).collect();
    fuzzing::run("enroll_request", fuzzing::cases(), fuzzing::mutated(corpus), |m: &Mutated| {
        let Ok((request, key)) = open_enroll_request(&m.bytes) else { return Ok(()) };
        if !originals.contains(&request) {
            return Err(format!("a mutated enrollment opened with content nobody signed: {request:?}"));
        }
        if request.verifying_key().map_err(|e| e.to_string())? != key {
            return Err("the key returned is not the key the request names".into());
        }
        Ok(())
    });
}

#[test]
fn canonical_json_of_generated_values() {
    let pairs = (fuzzing::json_value(), fuzzing::json_value());
    fuzzing::run("canonical_json_values", fuzzing::cases(), pairs, |(a, b): &(Value, Value)| {
        canonical_is_stable(a)?;
        // Two values sign the same bytes only if they are the same value.
        if let (Ok(x), Ok(y)) = (canonical_json(a), canonical_json(b))
            && (x == y) != (a == b)
        {
            return Err(format!(
                "{a} and {b}: equal canonical bytes {} equal values",
                if x == y { "but not" } else { "without" }
            ));
        }
        Ok(())
    });
}

#[test]
fn canonical_json_of_mutated_documents() {
    fuzzing::run(
        "canonical_json",
        fuzzing::cases(),
        fuzzing::mutated(fuzzing::corpus("canonical_json")),
        |m: &Mutated| match serde_json::from_slice::<Value>(&m.bytes) {
            Ok(value) => canonical_is_stable(&value),
            Err(_) => Ok(()),
        },
    );
}

/// Writes the corpora from the current message shapes (run after changing them).
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_corpus() {
    let key = device_key();
    let image = |v: &str| InstalledImage {
        name: format!("pump-x1/{v}/fw.bin"),
        sha256: "ab".repeat(32),
        version: v.to_owned(),
    };
    let attempt = |state, detail: Option<&str>| Attempt {
        name: "pump-x1/1.1.0/fw.bin".into(),
        state,
        detail: detail.map(str::to_owned),
    };
    let reports = [
        DeviceReport::new("pump-0001", 1, "2026-12-02T10:00:00Z", None, None, 1),
        DeviceReport::new("pump-0001", 42, "2026-12-02T10:01:00Z", Some(image("1.0.0")), None, 3),
        DeviceReport::new(
            "pump-0001",
            43,
            "2026-12-02T10:02:00Z",
            Some(image("1.0.0")),
            Some(attempt(AttemptState::Downloading, None)),
            4,
        ),
        DeviceReport::new(
            "icu-monitor-7",
            18_446_744_073_709_551_614,
            "2026-12-02T10:03:00Z",
            Some(image("1.1.0")),
            Some(attempt(AttemptState::Failed, Some("flash write failed: éé \"quoted\" \\ \u{1}"))),
            u64::MAX,
        ),
    ];
    let enrollments = [
        EnrollRequest::new(
            "pump-0001",
            "pump-x1",
            "revA",
            &key.verifying_key(),
            "pge_0123456789abcdef",
            "2026-12-02T10:00:00Z",
        ),
        EnrollRequest::new(
            "icu-monitor-7",
            "monitor-m2",
            "rev-b.2",
            &SigningKey::from_bytes(&[9u8; 32]).verifying_key(),
            "pge_fedcba9876543210",
            "2026-12-02T10:05:00Z",
        ),
    ];
    let documents = [
        json!({"signed": {"_type": "timestamp", "spec_version": "1.0.31", "version": 7, "expires": "2026-12-03T10:00:00Z",
            "meta": {"snapshot.json": {"version": 9}}}, "signatures": [{"keyid": "ab".repeat(32), "sig": "cd".repeat(64)}]}),
        json!({"_type": "targets", "version": 2, "expires": "2027-01-01T00:00:00Z", "targets": {"pump-x1/1.0.0/fw.bin":
            {"length": 1024, "hashes": {"sha256": "ab".repeat(32)}, "custom": {"version": "1.0.0", "hardware_ids": ["revA", "revB"],
            "rollback_floor": "0.0.0", "released_at": "2026-11-24T10:00:00Z"}}}, "delegations": {"keys": {}, "roles": []}}),
        json!({"unicode": "\u{2028}é💉\u{0}", "escapes": "\"\\/\u{8}\u{c}\n\r\t", "numbers": [0, -1, 9_223_372_036_854_775_807i64, u64::MAX],
            "nested": {"b": [[], {}], "a": null, "": true}}),
    ];
    let write = |target: &str, files: Vec<Vec<u8>>| {
        let dir = fuzzing::fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, bytes) in files.into_iter().enumerate() {
            std::fs::write(dir.join(format!("{i:02}.json")), bytes).unwrap();
        }
    };
    let signed_reports: Vec<Vec<u8>> =
        reports.iter().map(|r| serde_json::to_vec(&sign(r, &key).unwrap()).unwrap()).collect();
    write("report_envelope", signed_reports.clone());
    write(
        "enroll_request",
        enrollments
            .iter()
            .zip([key.clone(), SigningKey::from_bytes(&[9u8; 32])])
            .map(|(r, k)| serde_json::to_vec_pretty(&sign(r, &k).unwrap()).unwrap())
            .collect(),
    );
    let mut docs: Vec<Vec<u8>> = documents.iter().map(|d| serde_json::to_vec_pretty(d).unwrap()).collect();
    docs.extend(signed_reports);
    write("canonical_json", docs);
}
