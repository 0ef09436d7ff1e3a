//! The stage progress bar shared by the dashboard and the rollout page: installed, installing,
//! failed and rejected devices as SVG `rect` segments (the CSP forbids inline widths), and
//! basis points as percentages.

use crate::domain::rollout::{GateVerdict, StageCounts};

/// Width of a progress bar's coordinate box: per mille of the stage's devices.
pub const BAR: u64 = 1_000;

/// A progress bar segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// `p-installed`, `p-installing`, `p-failed` or `p-rejected`.
    pub class: &'static str,
    /// Fallback fill if the stylesheet is missing.
    pub fill: &'static str,
    /// Start, in [`BAR`] units.
    pub x: u64,
    /// Width, in [`BAR`] units.
    pub width: u64,
}

/// The gate's word on an open stage, and its badge class. Green only when there are outcomes
/// to judge: a stage with none is not "within gate", and one that assigns nothing although it
/// has eligible devices (a downgrade its devices refuse, devices that stopped reporting) says
/// so rather than looking healthy.
pub fn gate_word(v: &GateVerdict, assigned: u64, eligible: u64) -> (&'static str, &'static str) {
    if v.over_gate {
        ("badge-bad", "over gate")
    } else if v.final_reports > 0 {
        ("badge-ok", "within gate")
    } else if assigned == 0 && eligible > 0 {
        ("badge-warn", "nothing assigned yet")
    } else {
        ("badge-muted", "no outcomes yet")
    }
}

/// Why an open stage with eligible devices has assigned none, for the rollout page.
pub const NOTHING_ASSIGNED: &str = "No device is assigned yet: a device is assigned when it next reports, and one that \
                                    already runs this release or a newer one is not (a rollout does not downgrade; a \
                                    rollback does).";

/// The segments for `counts` out of `total` devices; never wider than the bar.
pub fn segments(counts: &StageCounts, total: u64) -> Vec<Segment> {
    let parts = [
        ("p-installed", "#1a7f37", counts.installed),
        ("p-installing", "#5b9bd5", counts.installing),
        ("p-failed", "#b42318", counts.failed),
        ("p-rejected", "#7a0b86", counts.rejected),
    ];
    let mut x = 0;
    let mut out = Vec::new();
    for (class, fill, n) in parts {
        let width = (n.saturating_mul(BAR) / total.max(1)).min(BAR - x);
        if width > 0 {
            out.push(Segment { class, fill, x, width });
            x += width;
        }
    }
    out
}

/// Basis points (of a fraction or a percent) as `12.34 %`.
pub fn bp_percent(bp: u64) -> String {
    format!("{}.{:02} %", bp / 100, bp % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_fill_at_most_the_bar() {
        let counts = StageCounts { installed: 3, installing: 1, failed: 1, rejected: 1, ..StageCounts::default() };
        let s = segments(&counts, 10);
        assert_eq!(
            s.iter().map(|s| (s.x, s.width)).collect::<Vec<_>>(),
            [(0, 300), (300, 100), (400, 100), (500, 100)]
        );
        let over = segments(&StageCounts { installed: 30, ..StageCounts::default() }, 10);
        assert_eq!(over[0].width, BAR);
        assert_eq!(bp_percent(1234), "12.34 %");
    }
}
