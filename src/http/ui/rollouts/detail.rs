//! What the rollout page shows, in words and numbers ready for its template: the facts, each
//! stage's figures with a progress bar and a gate verdict, built from the service's
//! [`RolloutStatus`] (the same figures as `GET /api/v1/rollouts/{id}`).

use super::super::pages::when;
use crate::domain::rollout::{GateVerdict, RolloutState};
use crate::services::rollout_status::{RolloutStatus, StageStatus, Traffic};

pub use super::super::progress::{Segment, bp_percent};

/// A soak or stall time in words.
pub fn minutes_text(seconds: i64) -> String {
    let minutes = seconds.max(0) / 60;
    match (minutes / 60, minutes % 60) {
        (0, 0) => "none".to_owned(),
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// A byte count in words: `812 B`, `23.4 KiB`, `1.2 MiB`, `3.0 GiB`.
pub fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let (mut unit, mut divisor) = (0, 1024_u128);
    loop {
        // Rounded to a tenth; 1023.95 KiB reads as 1.0 MiB, not 1024.0 KiB.
        let tenths = (u128::from(n) * 10 + divisor / 2) / divisor;
        if tenths < 10_240 || unit + 1 == UNITS.len() {
            return format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit]);
        }
        divisor *= 1024;
        unit += 1;
    }
}

/// What the rollout's devices downloaded, deltas beside full images.
fn traffic_text(t: &Traffic) -> String {
    if t.delta_requests == 0 && t.image_requests == 0 {
        return "nothing counted yet (devices' downloads count here when they send their device token, as the agent does)"
            .into();
    }
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    format!(
        "{} as deltas ({} request{}), {} as full images ({} request{})",
        bytes_text(t.delta_bytes),
        t.delta_requests,
        plural(t.delta_requests),
        bytes_text(t.image_bytes),
        t.image_requests,
        plural(t.image_requests)
    )
}

/// The rollout's plan and gate, as label and value.
pub fn facts(status: &RolloutStatus) -> Vec<(&'static str, String)> {
    let r = &status.rollout;
    vec![
        (
            "Stage",
            match r.started_at {
                Some(_) => format!("{} of {}", r.current_stage + 1, status.stages.len()),
                None => format!("not started ({} stages)", status.stages.len()),
            },
        ),
        ("Started", r.started_at.map(when).unwrap_or_else(|| "not yet".into())),
        ("Current stage since", if r.started_at.is_some() { when(r.stage_started_at) } else { "—".into() }),
        (
            "Gate",
            format!(
                "halts when more than {} of a stage's final reports are failures",
                bp_percent(u64::try_from(r.max_failure_rate_bp).unwrap_or(0))
            ),
        ),
        ("Final reports to advance", r.min_reports.to_string()),
        ("Stall time", minutes_text(r.stall_seconds)),
        ("Advances by itself", if r.auto_advance { "yes".into() } else { "no".into() }),
        ("Downloaded", traffic_text(&status.traffic)),
        (
            "hawkBit devices",
            match status.ddi_devices {
                0 => "none".into(),
                n => format!(
                    "{n} of its devices speak hawkBit's device API: they verify no TUF metadata, and the \
                     installs and failures they report count in the gate on their word, not a signed report"
                ),
            },
        ),
        ("Created", format!("{} by {}", when(r.created_at), r.created_by)),
    ]
}

/// A badge: its style and its word.
#[derive(Debug, Clone)]
pub struct Badge {
    pub class: &'static str,
    pub word: String,
}

/// One row of the stage table.
#[derive(Debug, Clone)]
pub struct StageRow {
    pub number: usize,
    pub current: bool,
    pub cohort: String,
    pub percent: String,
    pub soak: String,
    pub eligible: u64,
    pub assigned: u64,
    pub installing: u64,
    pub installed: u64,
    pub failed: u64,
    pub rejected: u64,
    pub stalled: u64,
    pub segments: Vec<Segment>,
    /// The bar in words.
    pub progress_text: String,
    /// Why the stage takes no device, or empty.
    pub note: String,
    pub gate_badges: Vec<Badge>,
    pub gate_text: String,
}

/// The gate's verdict on a stage in words, with its badges.
pub fn verdict(
    v: &GateVerdict,
    ceiling_bp: u64,
    min_reports: i64,
    started: bool,
    (assigned, eligible): (u64, u64),
) -> (Vec<Badge>, String) {
    if !started {
        return (vec![Badge { class: "badge-muted", word: "not started".into() }], "Not open yet.".into());
    }
    let (class, word) = super::super::progress::gate_word(v, assigned, eligible);
    let mut badges = vec![Badge { class, word: word.into() }];
    if v.alert {
        badges.push(Badge { class: "badge-security", word: "rejections".into() });
    }
    let reports = if v.enough_reports {
        format!("enough reports ({} of {min_reports} needed)", v.final_reports)
    } else {
        format!("not enough reports yet ({} of {min_reports} needed)", v.final_reports)
    };
    let mut text = format!(
        "Failure rate {} ({} of {} final reports) against a gate of {}; {reports}.",
        bp_percent(u64::from(v.failure_rate_bp)),
        v.failures,
        v.final_reports,
        bp_percent(ceiling_bp)
    );
    if assigned == 0 && eligible > 0 {
        text = format!("{} {text}", super::super::progress::NOTHING_ASSIGNED);
    }
    (badges, text)
}

fn segments(s: &StageStatus, total: u64) -> Vec<Segment> {
    super::super::progress::segments(&s.counts, total)
}

/// The table rows of `status`.
pub fn stage_rows(status: &RolloutStatus) -> Vec<StageRow> {
    let r = &status.rollout;
    let draft = r.state == RolloutState::Draft.as_str();
    let current = usize::try_from(r.current_stage).unwrap_or(0);
    let ceiling = u64::try_from(r.max_failure_rate_bp).unwrap_or(0);
    status
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let c = &s.counts;
            // Devices may have been assigned before their tags changed: never draw past 100 %.
            let total = s.eligible.max(c.assigned).max(c.installed + c.installing + c.failed + c.rejected);
            let share = |n: u64| n.saturating_mul(100).checked_div(total).unwrap_or(0);
            let progress_text = format!(
                "{} of {total} installed ({} %), {} installing, {} failed, {} rejected",
                c.installed,
                share(c.installed),
                c.installing,
                c.failed,
                c.rejected
            );
            let started = !draft && (i <= current || c.assigned > 0);
            let (gate_badges, gate_text) =
                verdict(&s.verdict, ceiling, r.min_reports, started, (c.assigned, s.eligible));
            StageRow {
                number: i + 1,
                current: !draft && i == current,
                cohort: s.plan.cohort.clone(),
                percent: bp_percent(u64::from(s.plan.percent.basis_points())),
                soak: minutes_text(s.plan.soak_seconds),
                eligible: s.eligible,
                assigned: c.assigned,
                installing: c.installing,
                installed: c.installed,
                failed: c.failed,
                rejected: c.rejected,
                stalled: s.stalled,
                segments: segments(s, total),
                progress_text,
                note: s.why_empty().unwrap_or_default(),
                gate_badges,
                gate_text,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_rates_read_naturally() {
        assert_eq!(minutes_text(0), "none");
        assert_eq!(minutes_text(45 * 60), "45 min");
        assert_eq!(minutes_text(24 * 3_600), "24 h");
        assert_eq!(minutes_text(90 * 60), "1 h 30 min");
        assert_eq!(bp_percent(500), "5.00 %");
        assert_eq!(bp_percent(1_234), "12.34 %");
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(bytes_text(0), "0 B");
        assert_eq!(bytes_text(1_023), "1023 B");
        assert_eq!(bytes_text(1_024), "1.0 KiB");
        assert_eq!(bytes_text(23_932), "23.4 KiB");
        assert_eq!(bytes_text(1_048_575), "1.0 MiB");
        assert_eq!(bytes_text(10_182_808), "9.7 MiB");
        assert_eq!(bytes_text(3 << 30), "3.0 GiB");
        assert_eq!(bytes_text(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn a_verdict_says_why_in_words() {
        let v = GateVerdict {
            final_reports: 10,
            failures: 2,
            failure_rate_bp: 2_000,
            enough_reports: true,
            over_gate: true,
            alert: true,
            reason: Some("x".into()),
        };
        let (badges, text) = verdict(&v, 500, 5, true, (10, 10));
        let words: Vec<&str> = badges.iter().map(|b| b.word.as_str()).collect();
        assert_eq!(words, ["over gate", "rejections"]);
        assert!(text.contains("20.00 % (2 of 10 final reports) against a gate of 5.00 %"), "{text}");
        assert!(text.contains("enough reports (10 of 5 needed)"), "{text}");
        assert_eq!(verdict(&v, 500, 5, false, (10, 10)).0[0].word, "not started");
        // No outcome yet is not green; eligible devices and none assigned is a warning.
        let none = GateVerdict {
            final_reports: 0,
            failures: 0,
            failure_rate_bp: 0,
            over_gate: false,
            alert: false,
            ..v.clone()
        };
        let word = |assigned, eligible| verdict(&none, 500, 5, true, (assigned, eligible)).0[0].word.clone();
        assert_eq!(word(3, 10), "no outcomes yet");
        assert_eq!(word(0, 0), "no outcomes yet");
        assert_eq!(word(0, 10), "nothing assigned yet");
        assert!(verdict(&none, 500, 5, true, (0, 10)).1.starts_with("No device is assigned yet"));
        let fine = GateVerdict { over_gate: false, alert: false, failures: 0, failure_rate_bp: 0, ..v.clone() };
        assert_eq!(verdict(&fine, 500, 5, true, (10, 10)).0[0].word, "within gate");
    }
}
