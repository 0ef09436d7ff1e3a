//! The device → server messages of docs/design.md §3, their plain-JSON answers, and their checks.
//!
//! Owns the shapes of the version report and the enrollment request (both travel inside an
//! [`Envelope`](crate::Envelope)) and the field checks any receiver must apply after verifying
//! the signature. Requests refuse unknown fields: they are signed, so a field the server does not
//! understand is a field whose meaning the device and the server disagree on. Answers accept
//! unknown fields so a newer server can add some without breaking deployed agents. Must not depend
//! on the server crate or on a date library: the agent links this crate on small devices.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::envelope::peek_unverified;
use crate::{ProtocolError, open, parse_public_key_hex};

/// `_type` of a [`DeviceReport`].
pub const DEVICE_REPORT_TYPE: &str = "device-report";
/// `_type` of an [`EnrollRequest`].
pub const DEVICE_ENROLL_TYPE: &str = "device-enroll";
/// Longest [`Attempt::detail`], in characters: enough for an error chain, small enough that a
/// fleet of chatty devices cannot fill the database with logs.
pub const MAX_DETAIL_CHARS: usize = 1_000;

/// A device's signed version report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceReport {
    /// Always [`DEVICE_REPORT_TYPE`].
    #[serde(rename = "_type")]
    pub kind: String,
    /// The device's id, as enrolled.
    pub device_id: String,
    /// Strictly increasing per device; the agent persists counter + 1 before sending.
    pub counter: u64,
    /// When the report was made, `YYYY-MM-DDTHH:MM:SSZ`.
    pub time: String,
    /// The image the device runs; `None` for a device that runs no image the repository knows.
    pub installed: Option<InstalledImage>,
    /// The update in progress or last finished, if any.
    pub attempt: Option<Attempt>,
    /// Version of the director targets metadata the device last verified.
    pub director_targets_version: u64,
}

/// The image a device runs, as named by the image repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledImage {
    /// The TUF target name, e.g. `pump-x1/1.0.0/fw.bin`.
    pub name: String,
    /// SHA-256 of the image, 64 lowercase hex characters.
    pub sha256: String,
    /// The release's version, e.g. `1.0.0`.
    pub version: String,
}

/// An update attempt and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// The TUF target name being installed.
    pub name: String,
    /// How far it got.
    pub state: AttemptState,
    /// A human explanation, mainly for `failed` and `rejected`; at most [`MAX_DETAIL_CHARS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The state of an update attempt, in the order an attempt normally goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// Fetching the image.
    Downloading,
    /// Writing the image.
    Installing,
    /// Written, waiting for the reboot into it.
    AwaitingReboot,
    /// Running the new image.
    Installed,
    /// The attempt failed on the device (not a network error: those are retried).
    Failed,
    /// The agent refused the update (metadata or image did not verify).
    Rejected,
}

impl AttemptState {
    /// Every state, in wire order.
    pub const ALL: [Self; 6] =
        [Self::Downloading, Self::Installing, Self::AwaitingReboot, Self::Installed, Self::Failed, Self::Rejected];

    /// The wire spelling, e.g. `awaiting_reboot`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downloading => "downloading",
            Self::Installing => "installing",
            Self::AwaitingReboot => "awaiting_reboot",
            Self::Installed => "installed",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }

    /// Parses the wire spelling (as stored in a database column, say).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// The attempt is over: `installed`, `failed` or `rejected`; what the gate counts.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Installed | Self::Failed | Self::Rejected)
    }

    /// "Installing or later" of docs/design.md §4: the device is changing its image, so pausing or
    /// aborting a rollout no longer withdraws its assignment. Failed and rejected are not started.
    pub fn is_started(self) -> bool {
        matches!(self, Self::Installing | Self::AwaitingReboot | Self::Installed)
    }

    /// Counts as a failure for the gate: `failed` or `rejected`.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Rejected)
    }
}

impl std::fmt::Display for AttemptState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DeviceReport {
    /// A report with `_type` filled in.
    pub fn new(
        device_id: impl Into<String>,
        counter: u64,
        time: impl Into<String>,
        installed: Option<InstalledImage>,
        attempt: Option<Attempt>,
        director_targets_version: u64,
    ) -> Self {
        Self {
            kind: DEVICE_REPORT_TYPE.to_owned(),
            device_id: device_id.into(),
            counter,
            time: time.into(),
            installed,
            attempt,
            director_targets_version,
        }
    }

    /// Checks `_type`, the shape of `time`, the installed image's `sha256` and `detail`'s length.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        check_type(&self.kind, DEVICE_REPORT_TYPE)?;
        check_time(&self.time)?;
        if let Some(installed) = &self.installed
            && !is_sha256_hex(&installed.sha256)
        {
            return Err(invalid("sha256", "must be 64 lowercase hex characters"));
        }
        if let Some(detail) = self.attempt.as_ref().and_then(|a| a.detail.as_deref())
            && detail.chars().count() > MAX_DETAIL_CHARS
        {
            return Err(invalid("detail", format!("longer than {MAX_DETAIL_CHARS} characters")));
        }
        Ok(())
    }
}

/// The `device_id` a report body claims, WITHOUT verifying anything: only for looking up the key
/// to [`open`] it with.
pub fn peek_report_device_id(body: &[u8]) -> Result<String, ProtocolError> {
    #[derive(Deserialize)]
    struct Claim {
        device_id: String,
    }
    Ok(peek_unverified::<Claim>(body)?.device_id)
}

/// A device's request to enroll, signed by the key it names (proof of possession).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// Always [`DEVICE_ENROLL_TYPE`].
    #[serde(rename = "_type")]
    pub kind: String,
    /// The id the device asks for.
    pub device_id: String,
    /// The product the device belongs to.
    pub product: String,
    /// The device's hardware id, matched against a target's `hardware_ids`.
    pub hardware_id: String,
    /// The device's ed25519 public key, hex of the 32 raw bytes.
    pub public_key: String,
    /// The enrollment token the device was provisioned with.
    pub enrollment_token: String,
    /// When the request was made, `YYYY-MM-DDTHH:MM:SSZ`.
    pub time: String,
}

impl EnrollRequest {
    /// A request with `_type` filled in and `public_key` as lowercase hex.
    pub fn new(
        device_id: impl Into<String>,
        product: impl Into<String>,
        hardware_id: impl Into<String>,
        public_key: &VerifyingKey,
        enrollment_token: impl Into<String>,
        time: impl Into<String>,
    ) -> Self {
        Self {
            kind: DEVICE_ENROLL_TYPE.to_owned(),
            device_id: device_id.into(),
            product: product.into(),
            hardware_id: hardware_id.into(),
            public_key: hex::encode(public_key.as_bytes()),
            enrollment_token: enrollment_token.into(),
            time: time.into(),
        }
    }

    /// Checks `_type`, the shape of `time` and that `public_key` is a usable ed25519 key.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        check_type(&self.kind, DEVICE_ENROLL_TYPE)?;
        check_time(&self.time)?;
        self.verifying_key().map(|_| ())
    }

    /// `public_key`, parsed.
    pub fn verifying_key(&self) -> Result<VerifyingKey, ProtocolError> {
        parse_public_key_hex(&self.public_key).map_err(|e| invalid("public_key", e.to_string()))
    }
}

/// Opens and validates an enrollment body: verifies that it is signed by the key it names.
///
/// Returns the request and its parsed key. The enrollment token and the device id are still for
/// the caller to check.
pub fn open_enroll_request(body: &[u8]) -> Result<(EnrollRequest, VerifyingKey), ProtocolError> {
    #[derive(Deserialize)]
    struct Claim {
        public_key: String,
    }
    let claimed = peek_unverified::<Claim>(body)?.public_key;
    let key = parse_public_key_hex(&claimed).map_err(|e| invalid("public_key", e.to_string()))?;
    let request: EnrollRequest = open(body, &key)?;
    request.validate()?;
    Ok((request, key))
}

/// The server's answer to an accepted report (plain JSON, no envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAnswer {
    /// The director targets version the device should now fetch.
    pub director_targets_version: u64,
    /// Whether that version differs from the one the device reported.
    pub changed: bool,
    /// Seconds to wait before the next report.
    pub poll_seconds: u64,
}

/// The server's answer to an accepted enrollment (plain JSON, no envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollAnswer {
    /// The device's id, as recorded.
    pub device_id: String,
    /// The bearer token for the device's director paths; shown once.
    pub device_token: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidField { field, reason: reason.into() }
}

fn check_type(kind: &str, expected: &str) -> Result<(), ProtocolError> {
    if kind == expected { Ok(()) } else { Err(invalid("_type", format!("must be {expected:?}"))) }
}

/// A shape check for `YYYY-MM-DDTHH:MM:SSZ` with plausible ranges; not a calendar (it accepts
/// 2026-02-31): the server parses the time properly, the agent never needs to.
fn check_time(time: &str) -> Result<(), ProtocolError> {
    let b = time.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    let num = |at: usize| u32::from(b[at] - b'0') * 10 + u32::from(b[at + 1] - b'0');
    if shape_ok
        && (1..=12).contains(&num(5))
        && (1..=31).contains(&num(8))
        && num(11) < 24
        && num(14) < 60
        && num(17) < 60
    {
        Ok(())
    } else {
        Err(invalid("time", "must be RFC 3339 UTC in whole seconds, YYYY-MM-DDTHH:MM:SSZ"))
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests;
