//! Tests of the device messages: signing round trips and the refusal of every bad field.

use ed25519_dalek::SigningKey;
use rand_core::OsRng;
use serde_json::json;

use super::*;
use crate::{ProtocolError, open, sign, verify};

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn report() -> DeviceReport {
    DeviceReport::new(
        "pump-0001",
        42,
        "2026-11-24T10:00:00Z",
        Some(InstalledImage { name: "pump-x1/1.0.0/fw.bin".into(), sha256: SHA.into(), version: "1.0.0".into() }),
        Some(Attempt { name: "pump-x1/1.1.0/fw.bin".into(), state: AttemptState::AwaitingReboot, detail: None }),
        3,
    )
}

fn signed_body<T: Serialize>(value: T, key: &SigningKey) -> Vec<u8> {
    serde_json::to_vec(&sign(value, key).unwrap()).unwrap()
}

fn invalid_field(result: Result<(), ProtocolError>) -> &'static str {
    match result {
        Err(ProtocolError::InvalidField { field, .. }) => field,
        other => panic!("expected InvalidField, got {other:?}"),
    }
}

#[test]
fn report_has_the_wire_shape_of_design_section_3() {
    let value = serde_json::to_value(report()).unwrap();
    assert_eq!(
        value,
        json!({"_type": "device-report", "device_id": "pump-0001", "counter": 42,
               "time": "2026-11-24T10:00:00Z",
               "installed": {"name": "pump-x1/1.0.0/fw.bin", "sha256": SHA, "version": "1.0.0"},
               "attempt": {"name": "pump-x1/1.1.0/fw.bin", "state": "awaiting_reboot"},
               "director_targets_version": 3})
    );
    let fresh = DeviceReport::new("pump-0002", 1, "2026-11-24T10:00:00Z", None, None, 0);
    let value = serde_json::to_value(&fresh).unwrap();
    assert_eq!((&value["installed"], &value["attempt"]), (&json!(null), &json!(null)));
    assert_eq!(fresh.validate(), Ok(()));
}

#[test]
fn signed_report_opens_with_the_device_key() {
    let key = SigningKey::generate(&mut OsRng);
    let body = signed_body(report(), &key);
    let opened: DeviceReport = open(&body, &key.verifying_key()).unwrap();
    assert_eq!(opened, report());
    assert_eq!(opened.validate(), Ok(()));
    assert_eq!(peek_report_device_id(&body).unwrap(), "pump-0001");
}

#[test]
fn counter_changed_after_signing_is_a_bad_signature() {
    let key = SigningKey::generate(&mut OsRng);
    let mut envelope = sign(serde_json::to_value(report()).unwrap(), &key).unwrap();
    envelope.signed["counter"] = json!(43);
    let body = serde_json::to_vec(&envelope).unwrap();
    assert_eq!(open::<DeviceReport>(&body, &key.verifying_key()), Err(ProtocolError::BadSignature));
}

#[test]
fn report_signed_by_another_key_has_no_signature_for_ours() {
    let (device, impostor) = (SigningKey::generate(&mut OsRng), SigningKey::generate(&mut OsRng));
    let body = signed_body(report(), &impostor);
    assert_eq!(open::<DeviceReport>(&body, &device.verifying_key()), Err(ProtocolError::NoSignatureForKey));
}

#[test]
fn signed_unknown_field_verifies_but_does_not_open_as_a_report() {
    let key = SigningKey::generate(&mut OsRng);
    let mut value = serde_json::to_value(report()).unwrap();
    value["reboot_count"] = json!(7);
    let body = signed_body(&value, &key);
    assert_eq!(verify(&body, &key.verifying_key()).unwrap(), value);
    let err = open::<DeviceReport>(&body, &key.verifying_key()).unwrap_err();
    assert!(matches!(&err, ProtocolError::Malformed(m) if m.contains("reboot_count")), "{err:?}");
}

#[test]
fn unknown_attempt_state_does_not_open() {
    let key = SigningKey::generate(&mut OsRng);
    let mut value = serde_json::to_value(report()).unwrap();
    value["attempt"]["state"] = json!("rebooting");
    let body = signed_body(&value, &key);
    assert!(matches!(open::<DeviceReport>(&body, &key.verifying_key()), Err(ProtocolError::Malformed(_))));
}

#[test]
fn report_validation_refuses_each_bad_field() {
    let mut wrong_type = report();
    wrong_type.kind = "device-enroll".into();
    assert_eq!(invalid_field(wrong_type.validate()), "_type");

    let mut bad_sha = report();
    if let Some(installed) = bad_sha.installed.as_mut() {
        installed.sha256 = SHA.to_uppercase();
    }
    assert_eq!(invalid_field(bad_sha.validate()), "sha256");

    let with_detail = |chars: usize| {
        let mut r = report();
        r.attempt.as_mut().unwrap().detail = Some("é".repeat(chars));
        r
    };
    // Characters, not bytes: 1 000 two-byte characters are allowed.
    assert_eq!(with_detail(MAX_DETAIL_CHARS).validate(), Ok(()));
    assert_eq!(invalid_field(with_detail(MAX_DETAIL_CHARS + 1).validate()), "detail");
}

#[test]
fn time_must_be_utc_whole_seconds() {
    for good in ["2026-11-24T10:00:00Z", "1999-12-31T23:59:59Z", "2026-01-01T00:00:00Z"] {
        let mut r = report();
        r.time = good.into();
        assert_eq!(r.validate(), Ok(()), "{good}");
    }
    for bad in [
        "",
        "2026-11-24T10:00:00",
        "2026-11-24T10:00:00.5Z",
        "2026-11-24T10:00:00+00:00",
        "2026-11-24 10:00:00Z",
        "2026-11-24t10:00:00z",
        "2026-13-24T10:00:00Z",
        "2026-11-00T10:00:00Z",
        "2026-11-24T24:00:00Z",
        "2026-11-24T10:60:00Z",
        "2026-11-24T10:00:60Z",
        "２026-11-24T10:00:00Z",
    ] {
        let mut r = report();
        r.time = bad.into();
        assert_eq!(invalid_field(r.validate()), "time", "{bad}");
    }
}

#[test]
fn attempt_state_spellings_and_classes() {
    for state in AttemptState::ALL {
        assert_eq!(serde_json::to_value(state).unwrap(), json!(state.as_str()));
        assert_eq!(AttemptState::parse(state.as_str()), Some(state));
        assert_eq!(state.to_string(), state.as_str());
    }
    assert_eq!(AttemptState::parse("Installed"), None);
    let classes = |s: AttemptState| (s.is_final(), s.is_started(), s.is_failure());
    assert_eq!(classes(AttemptState::Downloading), (false, false, false));
    assert_eq!(classes(AttemptState::Installing), (false, true, false));
    assert_eq!(classes(AttemptState::AwaitingReboot), (false, true, false));
    assert_eq!(classes(AttemptState::Installed), (true, true, false));
    assert_eq!(classes(AttemptState::Failed), (true, false, true));
    assert_eq!(classes(AttemptState::Rejected), (true, false, true));
}

fn enroll(key: &SigningKey) -> EnrollRequest {
    EnrollRequest::new(
        "pump-0001",
        "pump-x1",
        "pump-x1-revA",
        &key.verifying_key(),
        "pge_token",
        "2026-11-24T10:00:00Z",
    )
}

#[test]
fn enroll_request_is_self_signed_proof_of_possession() {
    let key = SigningKey::generate(&mut OsRng);
    let request = enroll(&key);
    assert_eq!(serde_json::to_value(&request).unwrap()["_type"], json!("device-enroll"));
    let (opened, opened_key) = open_enroll_request(&signed_body(&request, &key)).unwrap();
    assert_eq!((opened, opened_key), (request, key.verifying_key()));
}

#[test]
fn enroll_request_signed_by_a_key_other_than_the_one_it_names_is_refused() {
    let (named, signer) = (SigningKey::generate(&mut OsRng), SigningKey::generate(&mut OsRng));
    let body = signed_body(enroll(&named), &signer);
    assert_eq!(open_enroll_request(&body), Err(ProtocolError::NoSignatureForKey));
}

#[test]
fn enroll_validation_refuses_each_bad_field() {
    let key = SigningKey::generate(&mut OsRng);
    let mut wrong_type = enroll(&key);
    wrong_type.kind = "device-report".into();
    assert_eq!(invalid_field(wrong_type.validate()), "_type");
    let mut bad_time = enroll(&key);
    bad_time.time = "yesterday".into();
    assert_eq!(invalid_field(bad_time.validate()), "time");
    let mut bad_key = enroll(&key);
    bad_key.public_key.pop();
    assert_eq!(invalid_field(bad_key.validate()), "public_key");
    // A wrong `_type` is refused even when the signature is right.
    let body = signed_body(&wrong_type, &key);
    assert!(matches!(open_enroll_request(&body), Err(ProtocolError::InvalidField { field: "_type", .. })));
}

#[test]
fn answers_tolerate_fields_a_newer_server_adds() {
    let answer: ReportAnswer =
        serde_json::from_value(json!({"director_targets_version": 4, "changed": true, "poll_seconds": 300, "x": 1}))
            .unwrap();
    assert_eq!(answer, ReportAnswer { director_targets_version: 4, changed: true, poll_seconds: 300 });
    let answer: EnrollAnswer = serde_json::from_value(json!({"device_id": "d", "device_token": "t", "y": []})).unwrap();
    assert_eq!(answer, EnrollAnswer { device_id: "d".into(), device_token: "t".into() });
}
