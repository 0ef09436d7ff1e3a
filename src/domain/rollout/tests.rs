//! Table and property tests of the rollout rules.
use super::*;
use RolloutAction as A;
use RolloutState as S;
use patchgate_protocol::bucket::bucket;
use proptest::prelude::*;
use std::collections::BTreeSet;

const ADVANCE: A = A::Advance { force: false };
const FORCE: A = A::Advance { force: true };
/// When stage 0 of [`view`] has soaked its hour.
const READY: i64 = 1000 + 3600;
const HEALTHY: StageCounts = counts(20, 20, 0, 0, 0);
const LOST: StageCounts = counts(20, 10, 10, 0, 0);

const fn counts(assigned: u64, installed: u64, failed: u64, rejected: u64, stalled: u64) -> StageCounts {
    StageCounts { assigned, installing: 0, installed, failed, rejected, stalled }
}

fn pct(bp: u16) -> Percent {
    Percent::from_basis_points(bp).unwrap()
}

fn gate(rate_bp: u16, min_reports: u32) -> Gate {
    Gate { max_failure_rate: FailureRate::from_basis_points(rate_bp).unwrap(), min_reports, stall_seconds: 600 }
}

fn stage(cohort: &str, bp: u16, soak_seconds: i64) -> StagePlan {
    StagePlan { cohort: cohort.to_owned(), percent: pct(bp), soak_seconds }
}

/// Two stages of cohort beta (5 %, then 100 %), one hour soak each, gate 5 % over at least 10
/// reports; the current stage started at 1000.
fn view(state: RolloutState, current_stage: usize, auto_advance: bool) -> RolloutView {
    let stages = vec![stage("beta", 500, 3600), stage("beta", 10_000, 3600)];
    RolloutView { state, stages, current_stage, stage_started_at: 1000, gate: gate(500, 10), auto_advance }
}

fn t(state: S, current_stage: usize, stage_started_at: i64, reason: Option<&str>, gate_reset: bool) -> Transition {
    Transition { state, current_stage, stage_started_at, reason: reason.map(str::to_owned), gate_reset }
}

#[test]
fn every_action_in_every_state() {
    // Every allowed (action, from, to); every other pair must be refused with NotAllowed.
    let allowed: Vec<(A, &[S], S)> = vec![
        (A::Start, &[S::Draft], S::Running),
        (A::Pause, &[S::Running], S::Paused),
        (A::Resume, &[S::Paused, S::Halted], S::Running),
        (ADVANCE, &[S::Running], S::Running),
        (FORCE, &[S::Running], S::Running),
        (A::Abort, &[S::Running, S::Paused, S::Halted], S::Aborted),
        (A::Rollback, &[S::Running, S::Paused, S::Halted, S::Aborted, S::Completed], S::RolledBack),
    ];
    for from in RolloutState::ALL {
        for action in [A::Start, A::Pause, A::Resume, ADVANCE, FORCE, A::Abort, A::Rollback] {
            let result = apply_action(&view(from, 0, false), action, READY, &HEALTHY).map(|t| t.state);
            let expected = allowed.iter().find(|(a, f, _)| *a == action && f.contains(&from)).map(|(_, _, to)| *to);
            let refused = RolloutError::NotAllowed { action: action.as_str(), state: from.as_str() };
            assert_eq!(result, expected.ok_or(refused), "{action:?} from {from:?}");
        }
    }
}

#[test]
fn transitions_carry_the_right_stage_time_and_reason() {
    let lost_reason = "forced: failure rate 50.00% (10 of 20 final reports) is over the gate of 5.00%";
    // (state, current stage, action, now, counts, expected)
    let cases = vec![
        (S::Draft, 0, A::Start, 5000, HEALTHY, t(S::Running, 0, 5000, None, false)),
        (S::Running, 1, A::Pause, 5000, HEALTHY, t(S::Paused, 1, 1000, None, false)),
        (S::Paused, 1, A::Resume, 5000, HEALTHY, t(S::Running, 1, 1000, None, false)),
        (S::Halted, 1, A::Resume, 5000, LOST, t(S::Running, 1, 5000, None, true)),
        (S::Running, 0, ADVANCE, READY, HEALTHY, t(S::Running, 1, READY, None, false)),
        (S::Running, 1, ADVANCE, READY, HEALTHY, t(S::Completed, 1, 1000, None, false)),
        (S::Running, 0, FORCE, READY, HEALTHY, t(S::Running, 1, READY, None, false)),
        (S::Running, 0, FORCE, 1200, counts(5, 2, 0, 0, 0), t(S::Running, 1, 1200, Some(FORCED_EARLY), false)),
        (S::Running, 1, FORCE, READY, LOST, t(S::Completed, 1, 1000, Some(lost_reason), false)),
        (S::Halted, 1, A::Abort, 5000, HEALTHY, t(S::Aborted, 1, 1000, None, false)),
        (S::Completed, 1, A::Rollback, 5000, HEALTHY, t(S::RolledBack, 1, 1000, None, false)),
    ];
    for (state, current, action, now, stage_counts, expected) in cases {
        let actual = apply_action(&view(state, current, false), action, now, &stage_counts);
        assert_eq!(actual, Ok(expected), "{action:?} from {state:?}");
    }
}
const FORCED_EARLY: &str = "forced: soak 3m20s of 1h, 2 of 10 reports";

#[test]
fn unforced_advance_names_every_unmet_check() {
    let cases = vec![
        (1200, HEALTHY, "soak 3m20s of 1h"),
        (READY, counts(20, 9, 0, 0, 0), "9 of 10 reports"),
        (READY, counts(100, 18, 2, 0, 0), "failure rate 10.00% (2 of 20 final reports) is over the gate of 5.00%"),
        (1000, StageCounts::default(), "soak 0s of 1h, 0 of 10 reports"),
    ];
    for (now, stage_counts, reason) in cases {
        let error = apply_action(&view(S::Running, 0, false), ADVANCE, now, &stage_counts).unwrap_err();
        assert_eq!(error.to_string(), format!("stage 1 is not ready to advance: {reason}"));
    }
}

#[test]
fn gate_verdict_edge_cases() {
    // (name, rate bp, min reports, counts, over_gate, failure_rate_bp, enough_reports, alert)
    let cases = vec![
        ("nothing assigned", 500, 0, counts(0, 0, 3, 0, 0), false, 10_000, true, false),
        ("no reports yet", 500, 10, counts(50, 0, 0, 0, 0), false, 0, false, false),
        ("exactly at the gate", 500, 100, counts(100, 95, 5, 0, 0), false, 500, true, false),
        ("one over the gate", 500, 100, counts(100, 94, 6, 0, 0), true, 600, true, false),
        ("stalled count as failed", 500, 100, counts(100, 94, 0, 0, 6), true, 600, true, false),
        ("rejected raises an alert", 500, 100, counts(100, 99, 0, 1, 0), false, 100, true, true),
        ("few reports, still open", 500, 50, counts(100, 0, 2, 0, 0), false, 10_000, false, false),
        ("few reports, certainly over", 500, 50, counts(20, 0, 2, 0, 0), true, 10_000, false, false),
        ("zero tolerance", 0, 1000, counts(5000, 0, 0, 1, 0), true, 10_000, false, true),
        ("everything may fail", 10_000, 0, counts(10, 0, 10, 0, 0), false, 10_000, true, false),
    ];
    for (name, rate_bp, min_reports, stage_counts, over_gate, failure_rate_bp, enough_reports, alert) in cases {
        let verdict = gate_verdict(&gate(rate_bp, min_reports), &stage_counts);
        let actual = (verdict.over_gate, verdict.failure_rate_bp, verdict.enough_reports, verdict.alert);
        assert_eq!(actual, (over_gate, failure_rate_bp, enough_reports, alert), "{name}");
        assert_eq!(verdict.reason.is_some(), over_gate, "{name}");
    }
    let certain = gate_verdict(&gate(500, 50), &counts(20, 0, 2, 0, 0)).reason.unwrap();
    assert_eq!(
        certain,
        "failure rate 100.00% (2 of 2 final reports) is over the gate of 5.00%, and stays over it even if \
         all 20 devices assigned so far succeed (so it halts before the 50 final reports the gate otherwise \
         waits for)"
    );
}

#[test]
fn evaluate_halts_advances_completes_or_waits() {
    let lost = "failure rate 50.00% (10 of 20 final reports) is over the gate of 5.00%";
    let halted = |stage: &str| Some(t(S::Halted, 1, 1000, Some(&format!("stage {stage}: {lost}")), false));
    let (advanced, completed) =
        (Some(t(S::Running, 1, READY, None, false)), Some(t(S::Completed, 1, 1000, None, false)));
    let few = counts(20, 9, 0, 0, 0);
    // (name, state, current stage, auto_advance, counts per stage, now, expected)
    let cases = vec![
        ("advance after soak", S::Running, 0, true, vec![HEALTHY], READY, advanced),
        ("no advance before soak", S::Running, 0, true, vec![HEALTHY], READY - 1, None),
        ("no advance below min_reports", S::Running, 0, true, vec![few], READY, None),
        ("no counts, no advance", S::Running, 0, true, vec![], READY, None),
        ("last stage completes", S::Running, 1, true, vec![HEALTHY; 2], READY, completed),
        ("earlier stage halts", S::Running, 1, true, vec![LOST, HEALTHY], READY, halted("1 (beta 5.00%)")),
        ("halt beats advance", S::Running, 1, true, vec![HEALTHY, LOST], READY, halted("2 (beta 100.00%)")),
        ("manual rollout waits", S::Running, 1, false, vec![HEALTHY; 2], READY, None),
        ("manual rollout still halts", S::Running, 1, false, vec![HEALTHY, LOST], 0, halted("2 (beta 100.00%)")),
        ("paused is left alone", S::Paused, 1, true, vec![LOST; 2], READY, None),
        ("halted is left alone", S::Halted, 1, true, vec![LOST; 2], READY, None),
    ];
    for (name, state, current, auto_advance, stage_counts, now, expected) in cases {
        assert_eq!(evaluate(&view(state, current, auto_advance), &stage_counts, now), expected, "{name}");
    }
}

#[test]
fn validate_plan_cases() {
    let ok = gate(500, 10);
    let many: Vec<_> = (1..=33).map(|i| stage("beta", i * 100, 0)).collect();
    let one = vec![stage("beta", 100, 0)];
    let cases = vec![
        ("valid", vec![stage("beta", 100, 0), stage("all", 50, 60), stage("beta", 100, 30 * DAY)], ok, true),
        ("no stages", vec![], ok, false),
        ("32 stages", many[..32].to_vec(), ok, true),
        ("33 stages", many, ok, false),
        ("negative soak", vec![stage("beta", 100, -1)], ok, false),
        ("soak over 30 days", vec![stage("beta", 100, 30 * DAY + 1)], ok, false),
        ("blank cohort", vec![stage(" ", 100, 0)], ok, false),
        ("lowered later", vec![stage("beta", 100, 0), stage("all", 100, 0), stage("beta", 99, 0)], ok, false),
        ("stall under a minute", one.clone(), Gate { stall_seconds: 59, ..ok }, false),
        ("min_reports too high", one, gate(500, 1_000_001), false),
    ];
    for (name, stages, plan_gate, valid) in cases {
        assert_eq!(validate_plan(&stages, &plan_gate).is_ok(), valid, "{name}");
    }
    let lowered = validate_plan(&[stage("beta", 1000, 0), stage("beta", 500, 0)], &ok).unwrap_err();
    let message = "stage 2 lowers cohort beta from 10.00% (stage 1) to 5.00%; a later stage may only raise it";
    assert_eq!(lowered, RolloutError::InvalidPlan(message.to_owned()));
}

#[test]
fn stage_for_device_takes_the_first_open_stage_holding_the_device() {
    let stages = vec![stage("beta", 100, 0), stage("all", 5000, 0), stage("all", 10_000, 0)];
    // (bucket, current stage, device in beta?, expected)
    let cases = vec![
        (99, 2, true, Some(0)),
        (99, 2, false, Some(1)),
        (100, 2, true, Some(1)),
        (5000, 1, true, None),
        (5000, 2, false, Some(2)),
        (9999, 0, true, None),
    ];
    for (b, current, in_beta, expected) in cases {
        let actual = stage_for_device(&stages, current, b, |cohort| cohort == "all" || in_beta);
        assert_eq!(actual, expected, "bucket {b}, stage {current}, beta {in_beta}");
    }
}

#[test]
fn percent_and_failure_rate_parsing() {
    assert_eq!(Percent::parse(12.34).map(Percent::basis_points), Ok(1234));
    assert_eq!(Percent::parse(0.01).map(Percent::basis_points), Ok(1));
    assert_eq!(Percent::parse(100.0).map(Percent::basis_points), Ok(10_000));
    for bad in [12.345, 0.0, 100.01, -1.0, f64::NAN, f64::INFINITY, 1e-9] {
        assert!(Percent::parse(bad).is_err(), "percent {bad}");
    }
    assert_eq!(FailureRate::parse(0.05).map(FailureRate::basis_points), Ok(500));
    assert_eq!(FailureRate::parse(0.0).map(FailureRate::basis_points), Ok(0));
    assert_eq!(FailureRate::parse(1.0).map(FailureRate::basis_points), Ok(10_000));
    for bad in [0.12345, 1.1, -0.1, f64::NAN] {
        assert!(FailureRate::parse(bad).is_err(), "rate {bad}");
    }
    assert!(Percent::from_basis_points(0).is_err() && Percent::from_basis_points(10_001).is_err());
    assert!(FailureRate::from_basis_points(10_001).is_err());
    assert_eq!((pct(1250).to_string(), pct(1250).as_f64()), ("12.50%".to_owned(), 12.5));
}

#[test]
fn names_round_trip_and_classify() {
    use AssignmentPolicy as P;
    for state in RolloutState::ALL {
        assert_eq!(RolloutState::parse(state.as_str()), Some(state));
    }
    let active: Vec<_> = RolloutState::ALL.into_iter().filter(|s| s.is_active()).collect();
    let terminal: Vec<_> = RolloutState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
    assert_eq!(
        (active, terminal),
        (vec![S::Running, S::Paused, S::Halted], vec![S::Aborted, S::Completed, S::RolledBack])
    );
    assert_eq!(RolloutAction::parse("advance", true), Some(FORCE));
    assert_eq!(RolloutAction::parse("rollback", true), Some(A::Rollback));
    assert_eq!(RolloutAction::parse("delete", false), None);
    let policies: Vec<_> = RolloutState::ALL.into_iter().map(assignment_policy).collect();
    let expected = [P::Nothing, P::Assign, P::KeepStarted, P::KeepStarted, P::KeepStarted, P::Assign, P::RollBack];
    assert_eq!(policies, expected);
}

/// Indexes of the `(device id, in beta)` devices that enter the plan by `current`.
fn entering(rollout: &str, devices: &[(String, bool)], stages: &[StagePlan], current: usize) -> BTreeSet<usize> {
    let enters = |(id, beta): &(String, bool)| {
        stage_for_device(stages, current, bucket(rollout, id), |cohort| cohort == "all" || *beta).is_some()
    };
    (0..devices.len()).filter(|&i| enters(&devices[i])).collect()
}

fn devices() -> impl Strategy<Value = Vec<(String, bool)>> {
    prop::collection::vec(("[a-z0-9-]{1,24}", any::<bool>()), 1..60)
}

proptest! {
    #[test]
    fn raising_a_percent_never_removes_a_device(
        rollout in "[a-z0-9-]{1,36}",
        devices in devices(),
        plan in prop::collection::vec((any::<bool>(), 1u16..=10_000), 1..5),
        raised in any::<prop::sample::Index>(),
        raised_bp in 1u16..=10_000,
    ) {
        let stages: Vec<_> = plan.iter().map(|&(beta, bp)| stage(if beta { "beta" } else { "all" }, bp, 0)).collect();
        let (k, last) = (raised.index(stages.len()), stages.len() - 1);
        let mut higher = stages.clone();
        higher[k].percent = pct(raised_bp.max(stages[k].percent.basis_points()));
        prop_assert!(entering(&rollout, &devices, &stages, last).is_subset(&entering(&rollout, &devices, &higher, last)));
    }

    #[test]
    fn a_stage_takes_exactly_its_cohort_below_the_percent(
        rollout in "[a-z0-9-]{1,36}",
        devices in devices(),
        bp in 1u16..=10_000,
    ) {
        let expected: BTreeSet<usize> =
            (0..devices.len()).filter(|&i| devices[i].1 && bucket(&rollout, &devices[i].0) < bp).collect();
        prop_assert_eq!(entering(&rollout, &devices, &[stage("beta", bp, 0)], 0), expected);
    }

    #[test]
    fn no_failures_never_trip_the_gate(
        rate_bp in 0u16..=10_000,
        min_reports in 0u32..=1_000_000,
        (assigned, installing, installed) in (any::<u64>(), any::<u64>(), any::<u64>()),
    ) {
        let stage_counts = StageCounts { assigned, installing, installed, ..StageCounts::default() };
        let verdict = gate_verdict(&gate(rate_bp, min_reports), &stage_counts);
        prop_assert!(!verdict.over_gate && verdict.reason.is_none() && verdict.failure_rate_bp == 0);
    }

    #[test]
    fn parsing_round_trips_every_basis_point(bp in 1u16..=10_000) {
        prop_assert_eq!(Percent::parse(f64::from(bp) / 100.0), Ok(pct(bp)));
        let rate = FailureRate::from_basis_points(bp).unwrap();
        prop_assert_eq!(FailureRate::parse(rate.as_f64()), Ok(rate));
    }
}
