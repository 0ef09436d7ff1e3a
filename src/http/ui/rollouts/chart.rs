//! The geometry of a rollout's outcome chart: a server-rendered SVG (no script, no remote asset)
//! of cumulative installs, failures and rejections over time, drawn from the service's
//! [`RolloutTimeline`]. Only numbers and fixed words reach the markup.
//!
//! Lines differ by dash pattern as well as colour (solid, dashed, dotted), and the legend names
//! each in words, so the chart does not depend on telling colours apart.

use crate::services::rollout_timeline::{RolloutTimeline, TimelinePoint};

/// The SVG's coordinate box: wide enough for five time labels and the lines' end labels, short
/// enough to sit beside text.
const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 700.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 206.0;
/// Time labels under the x axis: both ends and three between.
const X_TICKS: i64 = 4;
/// The least distance between two end labels, in SVG units (the font is 12).
const LABEL_GAP: f64 = 15.0;

/// A labelled tick on an axis; `at` is the coordinate along that axis.
#[derive(Debug, Clone)]
pub struct Tick {
    /// x (time axis) or y (count axis), in SVG units.
    pub at: String,
    /// What the tick says.
    pub label: String,
    /// `start`, `middle` or `end`: the first and last time labels stay inside the box.
    pub anchor: &'static str,
}

/// A line's name and final count, right of the plot at the line's end, moved apart from the
/// others so that lines that lie on one another are still each named.
#[derive(Debug, Clone)]
pub struct EndLabel {
    /// y of the label's middle, in SVG units.
    pub y: String,
    /// "installed 12".
    pub text: String,
    /// The line's colour.
    pub fill: &'static str,
}

/// Everything the chart template draws.
#[derive(Debug, Clone)]
pub struct Chart {
    /// `viewBox` of the SVG.
    pub view_box: String,
    /// Plot edges, for the axes: left, right, top, bottom.
    pub left: String,
    pub right: String,
    pub top: String,
    pub bottom: String,
    /// Where the x-axis title sits.
    pub x_title_y: String,
    /// Polyline `points` of each line.
    pub installed: String,
    pub failed: String,
    pub rejected: String,
    /// Time labels.
    pub x_ticks: Vec<Tick>,
    /// Count labels (with grid lines).
    pub y_ticks: Vec<Tick>,
    /// The lines' end labels, top to bottom.
    pub end_labels: Vec<EndLabel>,
    /// Where the end labels start.
    pub label_x: String,
    /// The text equivalent, for the SVG's `<desc>`.
    pub description: String,
}

/// A step of 1, 2 or 5 × 10ⁿ that splits `max` into at most four intervals.
fn nice_step(max: u64) -> u64 {
    let rough = max.div_ceil(4).max(1);
    let mut magnitude = 1_u64;
    while magnitude.saturating_mul(10) <= rough {
        magnitude = magnitude.saturating_mul(10);
    }
    [1, 2, 5, 10].into_iter().map(|m| m * magnitude).find(|s| *s >= rough).unwrap_or(rough)
}

/// Counts to a display string with one decimal at most (SVG units).
fn coord(v: f64) -> String {
    format!("{:.1}", (v * 10.0).round() / 10.0)
}

fn time_label(secs: i64, span: i64) -> String {
    // Five labels must differ: seconds for a short span, the date for a long one.
    let format = match span {
        ..=600 => "%H:%M:%S",
        601..=86_400 => "%H:%M",
        _ => "%m-%d %H:%M",
    };
    jiff::Timestamp::from_second(secs).map(|t| t.strftime(format).to_string()).unwrap_or_default()
}

/// Lossless for any count or span a rollout can have (far below 2⁵³).
fn float(v: impl TryInto<i64>) -> f64 {
    v.try_into().map_or(0.0, |n: i64| n as f64)
}

/// Places labels that want to sit at `wanted` heights (any order) at least [`LABEL_GAP`] apart,
/// as near their wish as that allows, and no lower than `floor`. Returns the heights in the
/// order given.
fn spread(wanted: &[f64], floor: f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by(|a, b| wanted[*a].total_cmp(&wanted[*b]).then(a.cmp(b)));
    let mut placed = vec![0.0; wanted.len()];
    // Top down, each at least a gap below the one above; then bottom up, none below the floor
    // and each at least a gap above the one below.
    let mut above: Option<f64> = None;
    for &i in &order {
        placed[i] = above.map_or(wanted[i], |a| wanted[i].max(a + LABEL_GAP));
        above = Some(placed[i]);
    }
    let mut below = floor + LABEL_GAP;
    for &i in order.iter().rev() {
        placed[i] = placed[i].min(below - LABEL_GAP);
        below = placed[i];
    }
    placed
}

/// Lays out `timeline` as an SVG chart.
pub fn chart(timeline: &RolloutTimeline) -> Chart {
    let totals = timeline.totals();
    let highest = totals.installed.max(totals.failed).max(totals.rejected);
    let step = nice_step(highest);
    let top_count = highest.div_ceil(step).max(1) * step;
    let span = (timeline.end - timeline.start).max(1);
    let x = |at: i64| LEFT + (RIGHT - LEFT) * float(at - timeline.start) / float(span);
    let y = |count: u64| BOTTOM - (BOTTOM - TOP) * float(count) / float(top_count);
    let line = |pick: fn(&TimelinePoint) -> u64| {
        timeline
            .points
            .iter()
            .map(|p| format!("{},{}", coord(x(p.at)), coord(y(pick(p)))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let x_ticks = (0..=X_TICKS)
        .map(|i| {
            let at = timeline.start + span * i / X_TICKS;
            let anchor = match i {
                0 => "start",
                X_TICKS => "end",
                _ => "middle",
            };
            Tick { at: coord(x(at)), label: time_label(at, span), anchor }
        })
        .collect();
    let y_ticks = (0..=top_count / step)
        .map(|i| Tick { at: coord(y(i * step)), label: (i * step).to_string(), anchor: "end" })
        .collect();
    let ends = [
        (totals.installed, "installed", "#1a7f37"),
        (totals.failed, "failed", "#b42318"),
        (totals.rejected, "rejected", "#7a0b86"),
    ];
    let heights = spread(&ends.map(|(count, ..)| y(count)), BOTTOM);
    let mut end_labels: Vec<(f64, EndLabel)> = ends
        .iter()
        .zip(heights)
        .map(|((count, name, fill), at)| (at, EndLabel { y: coord(at), text: format!("{name} {count}"), fill }))
        .collect();
    end_labels.sort_by(|a, b| a.0.total_cmp(&b.0));
    let description = format!(
        "Cumulative device outcomes from {} to {}: {} installed, {} failed, {} rejected.",
        super::super::pages::when(timeline.start),
        super::super::pages::when(timeline.end),
        totals.installed,
        totals.failed,
        totals.rejected
    );
    Chart {
        view_box: format!("0 0 {WIDTH} {HEIGHT}"),
        left: coord(LEFT),
        right: coord(RIGHT),
        top: coord(TOP),
        bottom: coord(BOTTOM),
        x_title_y: coord(HEIGHT - 6.0),
        installed: line(|p| p.installed),
        failed: line(|p| p.failed),
        rejected: line(|p| p.rejected),
        x_ticks,
        y_ticks,
        end_labels: end_labels.into_iter().map(|(_, label)| label).collect(),
        label_x: coord(RIGHT + 8.0),
        description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: i64, installed: u64, failed: u64, rejected: u64) -> TimelinePoint {
        TimelinePoint { at, installed, failed, rejected }
    }

    #[test]
    fn steps_are_round_and_cover_the_highest_count() {
        for (max, step) in [(0, 1), (3, 1), (4, 1), (5, 2), (9, 5), (40, 10), (41, 20), (900, 500), (1_000, 500)] {
            assert_eq!(nice_step(max), step, "{max}");
            assert!(max.div_ceil(step) <= 4, "{max}");
        }
    }

    #[test]
    fn lines_span_the_plot_and_rise_with_the_counts() {
        let timeline = RolloutTimeline {
            start: 0,
            end: 3_600,
            points: vec![point(0, 0, 0, 0), point(1_800, 4, 1, 0), point(3_600, 8, 2, 1)],
        };
        let c = chart(&timeline);
        assert_eq!(c.installed, "64.0,206.0 382.0,111.0 700.0,16.0", "8 installed tops a 0..8 axis");
        assert_eq!(c.rejected.split(' ').next_back(), Some("700.0,182.3"));
        let labels: Vec<&str> = c.y_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0", "2", "4", "6", "8"]);
        assert_eq!(c.x_ticks.first().map(|t| t.label.as_str()), Some("00:00"));
        assert_eq!(c.x_ticks.last().map(|t| t.label.as_str()), Some("01:00"));
        assert!(c.description.contains("8 installed, 2 failed, 1 rejected"), "{}", c.description);
        let anchors: Vec<&str> = c.x_ticks.iter().map(|t| t.anchor).collect();
        assert_eq!(anchors, ["start", "middle", "middle", "middle", "end"], "the end labels stay in the box");
        let ends: Vec<(&str, &str)> = c.end_labels.iter().map(|l| (l.text.as_str(), l.y.as_str())).collect();
        // failed (2) at 158.5 and rejected (1) at 182.3 are far enough apart to stay where they are.
        assert_eq!(ends, [("installed 8", "16.0"), ("failed 2", "158.5"), ("rejected 1", "182.3")]);
    }

    #[test]
    fn lines_on_one_another_are_each_named_apart() {
        // Nothing failed or was rejected: both lines lie on the axis, their labels do not.
        let timeline = RolloutTimeline { start: 0, end: 60, points: vec![point(0, 0, 0, 0), point(60, 3, 0, 0)] };
        let c = chart(&timeline);
        let ys: Vec<f64> = c.end_labels.iter().map(|l| l.y.parse().unwrap()).collect();
        assert_eq!(
            c.end_labels.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["installed 3", "failed 0", "rejected 0"]
        );
        assert!(ys.windows(2).all(|w| w[1] - w[0] >= LABEL_GAP - 0.05), "{ys:?}");
        assert!(ys.iter().all(|y| *y <= BOTTOM), "{ys:?}");
        // All three equal: one above another, the lowest on the axis.
        assert_eq!(spread(&[BOTTOM, BOTTOM, BOTTOM], BOTTOM), [BOTTOM - 2.0 * LABEL_GAP, BOTTOM - LABEL_GAP, BOTTOM]);
        assert_eq!(spread(&[50.0, 10.0], BOTTOM), [50.0, 10.0], "already apart: unmoved");
    }
}
