//! Metadata lifetimes and when to re-sign: pure functions of `now`.

use jiff::{SignedDuration, Timestamp};

const DAY: i64 = 24 * 60 * 60;

/// The kinds of signed metadata, each with its own lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// `root.json` of either repository: signed in ceremonies, so long-lived.
    Root,
    /// The image repository's top-level targets (delegations only; offline key).
    TopTargets,
    /// A product's delegated targets role.
    Product,
    /// Snapshot (online key).
    Snapshot,
    /// Timestamp (online key).
    Timestamp,
    /// A device's director targets (online key), re-signed when its assignment changes or
    /// when the device reports within the refresh margin.
    DirectorTargets,
}

impl RoleKind {
    /// How long a freshly signed role of this kind stays valid.
    ///
    /// Root and top-level targets: 1 year, because they change only in key ceremonies.
    /// Product roles: 90 days, because the manufacturer's CI re-signs them with each release.
    /// Snapshot 7 days and timestamp 1 day bound how long an attacker who controls the network
    /// can freeze a device on old metadata (TUF's freeze attack).
    pub fn lifetime(self) -> SignedDuration {
        let days = match self {
            RoleKind::Root | RoleKind::TopTargets => 365,
            RoleKind::Product => 90,
            // A captured assignment replays for at most 30 days; a device reporting at least
            // every 20 days never sees it expire.
            RoleKind::DirectorTargets => 30,
            RoleKind::Snapshot => 7,
            RoleKind::Timestamp => 1,
        };
        SignedDuration::from_secs(days * DAY)
    }

    /// Re-sign once less than a third of the lifetime is left: leaves two refresh chances
    /// (the job runs far more often than that) before clients would see expired metadata.
    pub fn refresh_margin(self) -> SignedDuration {
        SignedDuration::from_secs(self.lifetime().as_secs() / 3)
    }

    /// The role kind for a role name of the image repository.
    pub fn of_image_role(role: &str) -> Self {
        match role {
            "root" => RoleKind::Root,
            "targets" => RoleKind::TopTargets,
            "snapshot" => RoleKind::Snapshot,
            "timestamp" => RoleKind::Timestamp,
            _ => RoleKind::Product,
        }
    }
}

/// Roots warn this long before they expire: a root ceremony needs several key holders.
pub const ROOT_WARNING: SignedDuration = SignedDuration::from_secs(90 * DAY);

/// Truncates to whole seconds: python-tuf refuses fractional-second expiries.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The expiry of a role of `kind` signed at `now`.
pub fn expires_at(kind: RoleKind, now: Timestamp) -> Timestamp {
    whole_seconds(now.saturating_add(kind.lifetime()).unwrap_or(now))
}

/// Whether a role of `kind` expiring at `expires` should be re-signed at `now`.
pub fn needs_refresh(kind: RoleKind, expires: Timestamp, now: Timestamp) -> bool {
    expires.duration_since(now) < kind.refresh_margin()
}

/// Whether readiness should fail for a role of `kind` expiring at `expires`.
///
/// Online roles fail once half their refresh margin is gone (4 h for the timestamp): the
/// refresh job acts at the margin itself, and failing there would take every instance out of
/// service at once for the seconds until the job's next tick. Roots fail inside
/// [`ROOT_WARNING`].
pub fn is_near_expiry(kind: RoleKind, expires: Timestamp, now: Timestamp) -> bool {
    let margin = match kind {
        RoleKind::Root => ROOT_WARNING,
        other => SignedDuration::from_secs(other.refresh_margin().as_secs() / 2),
    };
    expires.duration_since(now) < margin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn expiries_are_whole_seconds() {
        let now = t("2026-11-24T10:00:00.123456Z");
        assert_eq!(expires_at(RoleKind::Timestamp, now), t("2026-11-25T10:00:00Z"));
        assert_eq!(expires_at(RoleKind::Snapshot, now), t("2026-12-01T10:00:00Z"));
    }

    #[test]
    fn refresh_once_a_third_is_left() {
        let expires = t("2026-11-25T00:00:00Z"); // timestamp: 24 h lifetime, 8 h margin
        let cases = [("2026-11-24T15:59:59Z", false), ("2026-11-24T16:00:01Z", true), ("2026-11-26T00:00:00Z", true)];
        for (now, want) in cases {
            assert_eq!(needs_refresh(RoleKind::Timestamp, expires, t(now)), want, "{now}");
        }
        let product_expires = t("2027-02-22T00:00:00Z");
        assert!(!needs_refresh(RoleKind::Product, product_expires, t("2027-01-20T00:00:00Z")));
        assert!(needs_refresh(RoleKind::Product, product_expires, t("2027-01-25T00:00:00Z")));
    }

    #[test]
    fn readiness_fails_halfway_through_the_margin() {
        let expires = t("2026-11-25T00:00:00Z"); // timestamp: margin 8 h, readiness 4 h
        assert!(!is_near_expiry(RoleKind::Timestamp, expires, t("2026-11-24T17:00:00Z")));
        assert!(is_near_expiry(RoleKind::Timestamp, expires, t("2026-11-24T20:00:01Z")));
    }

    #[test]
    fn roots_warn_ninety_days_ahead() {
        let expires = t("2027-11-24T00:00:00Z");
        assert!(!is_near_expiry(RoleKind::Root, expires, t("2027-08-20T00:00:00Z")));
        assert!(is_near_expiry(RoleKind::Root, expires, t("2027-08-30T00:00:00Z")));
    }
}
