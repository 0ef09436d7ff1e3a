//! Rollout rules: the state machine, which stage a device enters, stage gates and plan validation.
//!
//! Pure functions over plain values, so the services layer gathers inputs (counts from the
//! database, `now` from its `Clock`, a device's bucket from `patchgate_protocol::bucket`) and
//! applies the returned [`Transition`]. Nothing here does I/O or reads a clock, and it imports
//! nothing of the server crate; the only crate of ours it may use is `patchgate_protocol`.
//!
//! Why the rules are what they are (docs/design.md §4):
//! - Percents are basis points. docs/design.md §4 allows two decimals, which is exactly the 10 000 buckets a
//!   device hashes into, so membership is the integer test `bucket < basis_points`, no float.
//! - A device's bucket depends only on the rollout and device ids, so raising a percent only adds
//!   devices. [`validate_plan`] refuses a plan whose percent for a cohort goes down, which would
//!   silently withdraw devices that may already be installing.
//! - The gate counts final reports only; a device silent past `stall_seconds` counts as failed,
//!   because a device the update bricked never reports. A stage halts as soon as its failures
//!   keep it over the gate even if every other device assigned so far succeeds, even below
//!   `min_reports`: these are medical devices, and waiting for more reports means more failures.
//! - Pausing does not stop the soak clock: the devices that installed keep running the release,
//!   which is what the soak measures. Resuming from `halted` restarts both the soak and the gate
//!   window: the admin acknowledged the failures so far, and the stage must prove itself again.

use std::collections::HashMap;
use std::fmt;

/// The share of devices a stage takes is compared against a bucket in `0..10_000`.
const BUCKETS: u16 = 10_000;
const DAY: i64 = 24 * 60 * 60;
/// A longer plan is a mistake rather than a plan, and it would hold the cohort's slot for months.
pub const MAX_STAGES: usize = 32;
/// A stage that needs more than a month of soak should be a new rollout after a review.
const MAX_SOAK_SECONDS: i64 = 30 * DAY;
/// Below a minute, devices still downloading the image would be counted as stalled (failed).
const MIN_STALL_SECONDS: i64 = 60;
/// A device silent for longer than a month is gone, not installing.
const MAX_STALL_SECONDS: i64 = 30 * DAY;
/// More than any fleet we serve: a larger value is a typo that makes a stage unable to advance.
const MAX_MIN_REPORTS: u32 = 1_000_000;

/// Formats basis points of a percent (`1234` → `12.34%`); also fits failure rates, whose basis
/// points of a fraction are hundredths of a percent.
fn fmt_bp(bp: u16) -> String {
    format!("{}.{:02}%", bp / 100, bp % 100)
}

/// Whole units for audit reasons: `1h30m`, `45s`.
fn fmt_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let parts = [(seconds / DAY, "d"), (seconds % DAY / 3600, "h"), (seconds % 3600 / 60, "m"), (seconds % 60, "s")];
    let text: String = parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect();
    if text.is_empty() { "0s".to_owned() } else { text }
}

/// `value × scale` as a whole number, if `value` has no more decimals than `scale` allows.
fn scaled(value: f64, scale: f64) -> Option<u16> {
    let exact = value * scale;
    let rounded = exact.round();
    // In 0..=10_000 once checked, so the cast cannot truncate.
    ((exact - rounded).abs() <= 1e-6 && (0.0..=f64::from(BUCKETS)).contains(&rounded)).then_some(rounded as u16)
}

/// A share of a cohort in basis points (percent × 100), `1..=10_000`; docs/design.md §4 allows two decimals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u16);

impl Percent {
    pub fn from_basis_points(bp: u16) -> Result<Self, RolloutError> {
        match bp {
            1..=BUCKETS => Ok(Self(bp)),
            _ => Err(RolloutError::InvalidPercent(format!("{bp} basis points is not in 1..=10000"))),
        }
    }

    /// A percent as admins write it: `0 < percent <= 100`, at most two decimals.
    pub fn parse(percent: f64) -> Result<Self, RolloutError> {
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(RolloutError::InvalidPercent(format!("{percent} is not over 0 and at most 100")));
        }
        let bp = scaled(percent, 100.0)
            .ok_or_else(|| RolloutError::InvalidPercent(format!("{percent} has more than two decimals")))?;
        Self::from_basis_points(bp)
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }

    /// For display and JSON only; decisions use [`Percent::basis_points`].
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_bp(self.0))
    }
}

/// A failure-rate ceiling as a fraction in basis points (`0.05` → `500`), `0..=10_000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FailureRate(u16);

impl FailureRate {
    pub fn from_basis_points(bp: u16) -> Result<Self, RolloutError> {
        match bp {
            0..=BUCKETS => Ok(Self(bp)),
            _ => Err(RolloutError::InvalidFailureRate(format!("{bp} basis points is not in 0..=10000"))),
        }
    }

    /// A fraction in `[0, 1]` with at most four decimals (`0.05` is 5 %).
    pub fn parse(fraction: f64) -> Result<Self, RolloutError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(RolloutError::InvalidFailureRate(format!("{fraction} is not a fraction between 0 and 1")));
        }
        let bp = scaled(fraction, 10_000.0)
            .ok_or_else(|| RolloutError::InvalidFailureRate(format!("{fraction} has more than four decimals")))?;
        Self::from_basis_points(bp)
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }

    /// For display and JSON only, as a fraction.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

/// Shown as a percent: `0.05` → `5.00%`.
impl fmt::Display for FailureRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_bp(self.0))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutState {
    Draft,
    Running,
    Paused,
    Halted,
    Aborted,
    Completed,
    RolledBack,
}

impl RolloutState {
    /// Every state.
    pub const ALL: [Self; 7] =
        [Self::Draft, Self::Running, Self::Paused, Self::Halted, Self::Aborted, Self::Completed, Self::RolledBack];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Halted => "halted",
            Self::Aborted => "aborted",
            Self::Completed => "completed",
            Self::RolledBack => "rolled_back",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// Holds the "one running rollout per product and cohort" slot: a paused or halted rollout
    /// still has devices installing, and another rollout must not assign them something else.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::Halted)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Aborted | Self::Completed | Self::RolledBack)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutAction {
    Start,
    Pause,
    Resume,
    Advance { force: bool },
    Abort,
    Rollback,
}

impl RolloutAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Advance { .. } => "advance",
            Self::Abort => "abort",
            Self::Rollback => "rollback",
        }
    }

    /// The action named in the URL; `force` only means something for `advance` and is ignored
    /// for the others.
    pub fn parse(name: &str, force: bool) -> Option<Self> {
        [Self::Start, Self::Pause, Self::Resume, Self::Advance { force }, Self::Abort, Self::Rollback]
            .into_iter()
            .find(|action| action.as_str() == name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePlan {
    pub cohort: String,
    pub percent: Percent,
    pub soak_seconds: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    pub max_failure_rate: FailureRate,
    pub min_reports: u32,
    pub stall_seconds: i64,
}

/// Everything the rules need to know about one rollout.
#[derive(Clone, Debug)]
pub struct RolloutView {
    pub state: RolloutState,
    /// Non-empty (checked by [`validate_plan`]).
    pub stages: Vec<StagePlan>,
    /// Index into `stages`; 0 in draft.
    pub current_stage: usize,
    /// When the current stage began: its soak counts from here.
    pub stage_started_at: i64,
    pub gate: Gate,
    pub auto_advance: bool,
}

/// Outcomes of the devices assigned in ONE stage, counted by the caller over the current gate
/// window (see [`Transition::gate_reset`]). Each device is in at most one of the outcome fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageCounts {
    /// Devices assigned in this stage, all outcomes; withdrawn assignments excluded.
    pub assigned: u64,
    /// Reported `installing` or `awaiting_reboot`, no final outcome yet.
    pub installing: u64,
    /// Final: installed (confirmed).
    pub installed: u64,
    /// Final: failed.
    pub failed: u64,
    /// Final: rejected.
    pub rejected: u64,
    /// No final outcome and silent past `gate.stall_seconds` since assignment: counts as failed.
    pub stalled: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateVerdict {
    /// installed + failed + rejected + stalled.
    pub final_reports: u64,
    /// failed + rejected + stalled.
    pub failures: u64,
    /// failures / final_reports in basis points, rounded down; 0 without final reports.
    pub failure_rate_bp: u16,
    /// final_reports >= gate.min_reports.
    pub enough_reports: bool,
    pub over_gate: bool,
    /// Any `rejected`: the agent refused the image (bad signature, hardware or floor), which
    /// points at the release or the repository rather than the device, so a human must look.
    pub alert: bool,
    /// A sentence for the halt reason when `over_gate`.
    pub reason: Option<String>,
}

/// Judges one stage's counts against the gate.
///
/// Over the gate when either
/// - there are enough final reports and failures / final_reports > max_failure_rate, or
/// - whatever the number of reports, failures / max(assigned, final_reports) > max_failure_rate:
///   the rate is already certain to end over the gate even if every remaining device succeeds.
///   For medical devices we do not wait for `min_reports` to stop a rollout that is already lost.
///
/// Exactly at the gate is not over it. A stage with no device assigned is never over the gate.
/// Compared in integers (`failures × 10 000 > rate_bp × denominator`), so no rounding decides.
pub fn gate_verdict(gate: &Gate, counts: &StageCounts) -> GateVerdict {
    let failures = counts.failed.saturating_add(counts.rejected).saturating_add(counts.stalled);
    let final_reports = counts.installed.saturating_add(failures);
    let rate_bp = u128::from(gate.max_failure_rate.basis_points());
    let over = |denominator: u64| u128::from(failures) * u128::from(BUCKETS) > rate_bp * u128::from(denominator);
    let enough_reports = final_reports >= u64::from(gate.min_reports);
    let over_observed = enough_reports && over(final_reports);
    let certain_denominator = counts.assigned.max(final_reports);
    let over_gate = counts.assigned > 0 && (over_observed || over(certain_denominator));
    // failures <= final_reports, so the rate fits in 0..=10_000.
    let failure_rate_bp = match final_reports {
        0 => 0,
        n => u16::try_from(u128::from(failures) * u128::from(BUCKETS) / u128::from(n)).unwrap_or(BUCKETS),
    };
    let observed = format!("failure rate {} ({failures} of {final_reports} final reports)", fmt_bp(failure_rate_bp));
    let ceiling = gate.max_failure_rate;
    let reason = over_gate.then(|| {
        if over_observed {
            return format!("{observed} is over the gate of {ceiling}");
        }
        format!(
            "{observed} is over the gate of {ceiling}, and stays over it even if all {certain_denominator} \
             devices assigned so far succeed (so it halts before the {} final reports the gate otherwise \
             waits for)",
            gate.min_reports
        )
    });
    let alert = counts.rejected > 0;
    GateVerdict { final_reports, failures, failure_rate_bp, enough_reports, over_gate, alert, reason }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state: RolloutState,
    pub current_stage: usize,
    pub stage_started_at: i64,
    /// The halt reason, or the checks a forced advance skipped (for the audit log); else `None`.
    pub reason: Option<String>,
    /// The gate window restarts at `now`: counts from then on only (resume from halted).
    pub gate_reset: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RolloutError {
    #[error("invalid percent: {0}")]
    InvalidPercent(String),
    #[error("invalid failure rate: {0}")]
    InvalidFailureRate(String),
    #[error("cannot {action} a rollout that is {state}")]
    NotAllowed { action: &'static str, state: &'static str },
    /// `stage` is the 0-based index, like `current_stage`; the message shows it 1-based.
    #[error("stage {} is not ready to advance: {reason}", .stage + 1)]
    NotReady { stage: usize, reason: String },
    #[error("invalid rollout plan: {0}")]
    InvalidPlan(String),
}

/// An admin action. `counts` are the current stage's counts (used by a non-forced advance).
pub fn apply_action(
    view: &RolloutView,
    action: RolloutAction,
    now: i64,
    counts: &StageCounts,
) -> Result<Transition, RolloutError> {
    use RolloutState as S;
    let to = |state| staying(view, state, None);
    match (action, view.state) {
        (RolloutAction::Start, S::Draft) => {
            Ok(Transition { current_stage: 0, stage_started_at: now, ..to(S::Running) })
        }
        (RolloutAction::Pause, S::Running) => Ok(to(S::Paused)),
        (RolloutAction::Resume, S::Paused) => Ok(to(S::Running)),
        (RolloutAction::Resume, S::Halted) => {
            Ok(Transition { stage_started_at: now, gate_reset: true, ..to(S::Running) })
        }
        (RolloutAction::Advance { force }, S::Running) => {
            let stage = view.stages.get(view.current_stage).ok_or_else(|| {
                RolloutError::InvalidPlan(format!("stage {} of {}", view.current_stage + 1, view.stages.len()))
            })?;
            let unmet = unmet_checks(view, stage, counts, now);
            match (unmet.is_empty(), force) {
                (true, _) => Ok(next_stage(view, now, None)),
                (false, true) => Ok(next_stage(view, now, Some(format!("forced: {}", unmet.join(", "))))),
                (false, false) => Err(RolloutError::NotReady { stage: view.current_stage, reason: unmet.join(", ") }),
            }
        }
        (RolloutAction::Abort, S::Running | S::Paused | S::Halted) => Ok(to(S::Aborted)),
        (RolloutAction::Rollback, state) if !matches!(state, S::Draft | S::RolledBack) => Ok(to(S::RolledBack)),
        (action, state) => Err(RolloutError::NotAllowed { action: action.as_str(), state: state.as_str() }),
    }
}

/// What keeps the current stage from advancing, in words for an error or the audit log.
fn unmet_checks(view: &RolloutView, stage: &StagePlan, counts: &StageCounts, now: i64) -> Vec<String> {
    let verdict = gate_verdict(&view.gate, counts);
    let soaked = now.saturating_sub(view.stage_started_at);
    let mut unmet = Vec::new();
    if soaked < stage.soak_seconds {
        unmet.push(format!("soak {} of {}", fmt_duration(soaked), fmt_duration(stage.soak_seconds)));
    }
    if !verdict.enough_reports {
        unmet.push(format!("{} of {} reports", verdict.final_reports, view.gate.min_reports));
    }
    unmet.extend(verdict.reason);
    unmet
}

/// The next stage, starting now, or `completed` after the last one.
fn next_stage(view: &RolloutView, now: i64, reason: Option<String>) -> Transition {
    let next = view.current_stage.saturating_add(1);
    if next < view.stages.len() {
        return Transition {
            state: RolloutState::Running,
            current_stage: next,
            stage_started_at: now,
            reason,
            gate_reset: false,
        };
    }
    staying(view, RolloutState::Completed, reason)
}

/// A move to `state` that keeps the current stage and its soak clock.
fn staying(view: &RolloutView, state: RolloutState, reason: Option<String>) -> Transition {
    let (current_stage, stage_started_at) = (view.current_stage, view.stage_started_at);
    Transition { state, current_stage, stage_started_at, reason, gate_reset: false }
}

/// What the gate job does on its own for a running rollout: halt, advance, complete, or nothing.
///
/// `counts[i]` are stage `i`'s counts for every stage `0..=current_stage`. Earlier stages are
/// judged too: their devices keep reporting, and a late failure there halts the rollout. Halting
/// beats advancing.
pub fn evaluate(view: &RolloutView, counts: &[StageCounts], now: i64) -> Option<Transition> {
    if view.state != RolloutState::Running {
        return None;
    }
    let judged = view.stages.iter().zip(counts).take(view.current_stage.saturating_add(1));
    for (index, (stage, stage_counts)) in judged.enumerate() {
        if let Some(why) = gate_verdict(&view.gate, stage_counts).reason {
            let reason = format!("stage {} ({} {}): {why}", index + 1, stage.cohort, stage.percent);
            return Some(staying(view, RolloutState::Halted, Some(reason)));
        }
    }
    let stage = view.stages.get(view.current_stage)?;
    let current = counts.get(view.current_stage).copied().unwrap_or_default();
    (view.auto_advance && unmet_checks(view, stage, &current, now).is_empty()).then(|| next_stage(view, now, None))
}

/// Validates a plan at creation.
pub fn validate_plan(stages: &[StagePlan], gate: &Gate) -> Result<(), RolloutError> {
    let invalid = |message: String| Err(RolloutError::InvalidPlan(message));
    if stages.is_empty() || stages.len() > MAX_STAGES {
        return invalid(format!("{} stages; a plan has 1 to {MAX_STAGES}", stages.len()));
    }
    if !(MIN_STALL_SECONDS..=MAX_STALL_SECONDS).contains(&gate.stall_seconds) {
        return invalid(format!("stall time {}s is not between 1 minute and 30 days", gate.stall_seconds));
    }
    if gate.min_reports > MAX_MIN_REPORTS {
        return invalid(format!("min_reports {} is over the maximum of {MAX_MIN_REPORTS}", gate.min_reports));
    }
    let mut last_percent: HashMap<&str, (usize, Percent)> = HashMap::new();
    for (index, stage) in stages.iter().enumerate() {
        let n = index + 1;
        if stage.cohort.trim().is_empty() {
            return invalid(format!("stage {n} has no cohort"));
        }
        if !(0..=MAX_SOAK_SECONDS).contains(&stage.soak_seconds) {
            return invalid(format!("stage {n} soak of {}s is not between 0 and 30 days", stage.soak_seconds));
        }
        // Lowering a cohort's percent would withdraw devices that may already be installing.
        if let Some((earlier, percent)) = last_percent.insert(&stage.cohort, (n, stage.percent))
            && stage.percent < percent
        {
            return invalid(format!(
                "stage {n} lowers cohort {} from {percent} (stage {earlier}) to {}; a later stage may only raise it",
                stage.cohort, stage.percent
            ));
        }
    }
    Ok(())
}

/// The stage at which a device enters the rollout: the first index `i <= current_stage` whose
/// cohort holds the device and whose percent covers its bucket. `None` if no stage takes it.
pub fn stage_for_device(
    stages: &[StagePlan],
    current_stage: usize,
    bucket: u16,
    in_cohort: impl Fn(&str) -> bool,
) -> Option<usize> {
    stages
        .iter()
        .take(current_stage.saturating_add(1))
        .position(|stage| bucket < stage.percent.basis_points() && in_cohort(&stage.cohort))
}

/// What a device's report may be given under a rollout in a given state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignmentPolicy {
    /// Running or completed: assign devices in stages, keep assignments. A completed rollout
    /// still assigns, so devices that join the cohort later get the release.
    Assign,
    /// Paused, halted, aborted: withdraw assignments unless the device already reports
    /// `installing` or later (interrupting an install is worse); assign no new device.
    KeepStarted,
    /// Rolled back: devices that installed (or are installing) this release get the release they
    /// ran before; other assignments are withdrawn.
    RollBack,
    /// Draft: nothing is assigned yet.
    Nothing,
}

pub fn assignment_policy(state: RolloutState) -> AssignmentPolicy {
    match state {
        RolloutState::Running | RolloutState::Completed => AssignmentPolicy::Assign,
        RolloutState::Paused | RolloutState::Halted | RolloutState::Aborted => AssignmentPolicy::KeepStarted,
        RolloutState::RolledBack => AssignmentPolicy::RollBack,
        RolloutState::Draft => AssignmentPolicy::Nothing,
    }
}

#[cfg(test)]
mod tests;
