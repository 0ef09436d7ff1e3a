//! Table tests and property tests of the planner: no database, no clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly by design")]

use proptest::prelude::*;

use patchgate_protocol::report::AttemptState;

use super::*;
use crate::domain::rollout::Percent;

const HW: &str = "hw-a";

fn v(s: &str) -> Option<FirmwareVersion> {
    Some(FirmwareVersion::parse(s).unwrap())
}

fn release(id: i64, version: &str) -> ReleaseFacts {
    ReleaseFacts { id, version: v(version), yanked: false, hardware_ids: vec![HW.into()], rollback_floor: None }
}

fn rollout(id: &str, state: RolloutState, release_id: i64, percents: &[u16]) -> RolloutFacts {
    RolloutFacts {
        id: id.into(),
        state,
        release_id,
        stages: percents
            .iter()
            .map(|&bp| StagePlan {
                cohort: "all".into(),
                percent: Percent::from_basis_points(bp).unwrap(),
                soak_seconds: 0,
            })
            .collect(),
        current_stage: percents.len() - 1,
    }
}

/// Releases 1.0.0 (id 1), 1.1.0 (id 2), 1.2.0 (id 3); cohort `all` selects tag `t`.
fn plan(rollouts: Vec<RolloutFacts>) -> ProductPlan {
    ProductPlan {
        security_floor: None,
        rollouts,
        cohorts: HashMap::from([(
            "all".to_owned(),
            CohortFacts { members: HashSet::new(), selector: vec!["t".into()] },
        )]),
        releases: [release(1, "1.0.0"), release(2, "1.1.0"), release(3, "1.2.0")]
            .into_iter()
            .map(|r| (r.id, r))
            .collect(),
    }
}

fn device(runs: Option<(i64, &str)>, assignments: Vec<AssignmentFacts>) -> DeviceFacts {
    DeviceFacts {
        device_id: "d-1".into(),
        hardware_id: HW.into(),
        tags: HashSet::from(["t".to_owned()]),
        installed_release_id: runs.map(|r| r.0),
        installed_version: runs.and_then(|r| v(r.1)),
        assignments,
    }
}

fn row(rollout_id: &str, release_id: i64, state: AssignmentState, from: Option<i64>) -> AssignmentFacts {
    AssignmentFacts { rollout_id: rollout_id.into(), release_id, from_release_id: from, state }
}

const DOWNLOADING: AssignmentState = AssignmentState::Attempt(AttemptState::Downloading);
const INSTALLING: AssignmentState = AssignmentState::Attempt(AttemptState::Installing);
const INSTALLED: AssignmentState = AssignmentState::Attempt(AttemptState::Installed);

fn install(release_id: i64, rollout_id: &str) -> Decision {
    Decision::Install { release_id, rollout_id: rollout_id.into() }
}

fn withdraw(rollout_id: &str) -> Change {
    Change::Withdraw { rollout_id: rollout_id.into() }
}

/// Every device in bucket 42: inside any stage above 0.42 %.
fn bucket42(_: &str) -> u16 {
    42
}

#[test]
fn the_rules_table() {
    use AssignmentState::{Assigned, Withdrawn};
    use RolloutState::*;
    let assign = |r: &str, from: Option<i64>| Change::Assign { rollout_id: r.into(), stage: 0, from_release_id: from };
    // (case, plan, device, decision, changes)
    let cases: Vec<(&str, ProductPlan, DeviceFacts, Decision, Vec<Change>)> = vec![
        (
            "draft assigns nothing",
            plan(vec![rollout("r", Draft, 2, &[10_000])]),
            device(Some((1, "1.0.0")), vec![]),
            Decision::Nothing,
            vec![],
        ),
        (
            "running, in the stage: assigned",
            plan(vec![rollout("r", Running, 2, &[100])]),
            device(Some((1, "1.0.0")), vec![]),
            install(2, "r"),
            vec![assign("r", Some(1))],
        ),
        (
            "running, outside the stage: nothing",
            plan(vec![rollout("r", Running, 2, &[42])]),
            device(Some((1, "1.0.0")), vec![]),
            Decision::Nothing,
            vec![],
        ),
        (
            "already assigned: kept, no change",
            plan(vec![rollout("r", Running, 2, &[100])]),
            device(Some((1, "1.0.0")), vec![row("r", 2, DOWNLOADING, Some(1))]),
            install(2, "r"),
            vec![],
        ),
        (
            "runs it already",
            plan(vec![rollout("r", Running, 2, &[100])]),
            device(Some((2, "1.1.0")), vec![]),
            Decision::Nothing,
            vec![],
        ),
        (
            "runs something newer",
            plan(vec![rollout("r", Running, 2, &[100])]),
            device(Some((3, "1.2.0")), vec![]),
            Decision::Nothing,
            vec![],
        ),
        (
            "paused, not started: withdrawn",
            plan(vec![rollout("r", Paused, 2, &[100])]),
            device(Some((1, "1.0.0")), vec![row("r", 2, Assigned, Some(1))]),
            Decision::Nothing,
            vec![withdraw("r")],
        ),
        (
            "paused, installing: kept",
            plan(vec![rollout("r", Paused, 2, &[100])]),
            device(Some((1, "1.0.0")), vec![row("r", 2, INSTALLING, Some(1))]),
            install(2, "r"),
            vec![],
        ),
        (
            "halted, downloading: withdrawn",
            plan(vec![rollout("r", Halted, 2, &[100])]),
            device(Some((1, "1.0.0")), vec![row("r", 2, DOWNLOADING, Some(1))]),
            Decision::Nothing,
            vec![withdraw("r")],
        ),
        (
            "aborted, never assigned: nothing",
            plan(vec![rollout("r", Aborted, 2, &[100])]),
            device(Some((1, "1.0.0")), vec![]),
            Decision::Nothing,
            vec![],
        ),
        (
            "withdrawn comes back on resume",
            plan(vec![rollout("r", Running, 2, &[100])]),
            device(Some((1, "1.0.0")), vec![row("r", 2, Withdrawn, Some(1))]),
            install(2, "r"),
            vec![assign("r", Some(1))],
        ),
        (
            "rolled back after install: the release before",
            plan(vec![rollout("r", RolledBack, 2, &[100])]),
            device(Some((2, "1.1.0")), vec![row("r", 2, INSTALLED, Some(1))]),
            Decision::Rollback { release_id: 1, rollout_id: "r".into() },
            vec![],
        ),
        (
            "rolled back, never started: withdrawn",
            plan(vec![rollout("r", RolledBack, 2, &[100])]),
            device(Some((1, "1.0.0")), vec![row("r", 2, Assigned, Some(1))]),
            Decision::Nothing,
            vec![withdraw("r")],
        ),
        (
            "newer rollout supersedes one not started",
            plan(vec![rollout("new", Running, 3, &[100]), rollout("old", Running, 2, &[100])]),
            device(Some((1, "1.0.0")), vec![row("old", 2, Assigned, Some(1))]),
            install(3, "new"),
            vec![withdraw("old"), assign("new", Some(1))],
        ),
        (
            "busy installing an older rollout: finish it",
            plan(vec![rollout("new", Running, 3, &[100]), rollout("old", Running, 2, &[100])]),
            device(Some((1, "1.0.0")), vec![row("old", 2, INSTALLING, Some(1))]),
            install(2, "old"),
            vec![],
        ),
    ];
    for (case, plan, device, decision, changes) in cases {
        let out = decide(&plan, &device, bucket42).unwrap();
        assert_eq!((out.decision, out.changes), (decision, changes), "{case}");
    }
}

#[test]
fn yanks_floors_and_hardware_keep_a_release_from_being_named() {
    let running = || plan(vec![rollout("r", RolloutState::Running, 2, &[10_000])]);
    let fresh = device(Some((1, "1.0.0")), vec![]);
    let assigned = device(Some((1, "1.0.0")), vec![row("r", 2, DOWNLOADING, Some(1))]);

    let mut yanked = running();
    yanked.releases.get_mut(&2).unwrap().yanked = true;
    assert_eq!(decide(&yanked, &fresh, bucket42).unwrap().decision, Decision::Nothing);
    let out = decide(&yanked, &assigned, bucket42).unwrap();
    assert_eq!((out.decision, out.changes), (Decision::Nothing, vec![withdraw("r")]), "yanked after assignment");

    let mut floored = running();
    floored.security_floor = v("1.2.0");
    assert_eq!(decide(&floored, &fresh, bucket42).unwrap().decision, Decision::Nothing);
    let out = decide(&floored, &assigned, bucket42).unwrap();
    assert_eq!((out.decision, out.changes), (Decision::Nothing, vec![withdraw("r")]), "floor raised after assignment");

    let mut other_hardware = running();
    other_hardware.releases.get_mut(&2).unwrap().hardware_ids = vec!["hw-b".into()];
    assert_eq!(decide(&other_hardware, &fresh, bucket42).unwrap().decision, Decision::Nothing);

    // A rollback below the rolled-back release's own rollback_floor keeps the device on it.
    let mut floor_on_release = plan(vec![rollout("r", RolloutState::RolledBack, 2, &[10_000])]);
    floor_on_release.releases.get_mut(&2).unwrap().rollback_floor = v("1.1.0");
    let installed = device(Some((2, "1.1.0")), vec![row("r", 2, INSTALLED, Some(1))]);
    let out = decide(&floor_on_release, &installed, bucket42).unwrap();
    assert_eq!(out.decision, install(2, "r"));
    assert_eq!(out.held_back.len(), 1);
}

#[test]
fn a_release_missing_from_the_plan_is_an_error_not_a_guess() {
    let mut broken = plan(vec![rollout("r", RolloutState::Running, 9, &[10_000])]);
    broken.releases.remove(&9);
    assert_eq!(decide(&broken, &device(None, vec![]), bucket42), Err(UnknownRelease(9)));
}

fn state() -> impl Strategy<Value = RolloutState> {
    prop_oneof![
        Just(RolloutState::Draft),
        Just(RolloutState::Running),
        Just(RolloutState::Paused),
        Just(RolloutState::Halted),
        Just(RolloutState::Aborted),
        Just(RolloutState::Completed),
        Just(RolloutState::RolledBack),
    ]
}

fn assignment_state() -> impl Strategy<Value = AssignmentState> {
    prop_oneof![
        Just(AssignmentState::Assigned),
        Just(AssignmentState::Withdrawn),
        proptest::sample::select(AttemptState::ALL.to_vec()).prop_map(AssignmentState::Attempt),
    ]
}

proptest! {
    /// Raising a stage's percent only adds devices: whoever is assigned at `low` is at `high`.
    #[test]
    fn raising_the_percent_only_adds_devices(bucket in 0u16..10_000, low in 1u16..=10_000, extra in 0u16..=10_000) {
        let high = low.saturating_add(extra).min(10_000);
        let fresh = device(Some((1, "1.0.0")), vec![]);
        let at = |bp: u16| decide(&plan(vec![rollout("r", RolloutState::Running, 2, &[bp])]), &fresh, |_| bucket).unwrap().decision;
        if at(low) != Decision::Nothing {
            prop_assert_eq!(at(high), install(2, "r"));
        }
        prop_assert_eq!(at(low) != Decision::Nothing, bucket < low);
    }

    /// Under any rollout state and any assignment, the director never names a yanked release
    /// or one below the security floor, and never installs the release the device runs.
    #[test]
    fn never_a_yanked_release_or_one_below_the_floor(
        rollout_state in state(),
        row_state in proptest::option::of(assignment_state()),
        target in 1i64..=3,
        runs in 1i64..=3,
        yanked in proptest::option::of(1i64..=3),
        floor in proptest::option::of(prop_oneof![Just("1.0.0"), Just("1.1.0"), Just("1.2.0")]),
        bucket in 0u16..10_000,
        percent in 1u16..=10_000,
    ) {
        let mut p = plan(vec![rollout("r", rollout_state, target, &[percent])]);
        p.security_floor = floor.and_then(v);
        if let Some(id) = yanked {
            p.releases.get_mut(&id).unwrap().yanked = true;
        }
        let versions = ["", "1.0.0", "1.1.0", "1.2.0"];
        let rows = row_state.map(|s| vec![row("r", target, s, Some(runs))]).unwrap_or_default();
        let d = device(Some((runs, versions[usize::try_from(runs).unwrap()])), rows);
        let out = decide(&p, &d, |_| bucket).unwrap();
        let named = match &out.decision {
            Decision::Nothing => None,
            Decision::Install { release_id, .. } | Decision::Rollback { release_id, .. } => Some(*release_id),
        };
        if let Some(id) = named {
            let r = &p.releases[&id];
            prop_assert!(!r.yanked, "named a yanked release: {:?}", out);
            if let (Some(f), Some(ver)) = (&p.security_floor, &r.version) {
                prop_assert!(ver >= f, "named a release below the floor: {:?}", out);
            }
        }
        // Paused, halted or aborted: nobody new is assigned, and a row not started is withdrawn.
        if matches!(rollout_state, RolloutState::Paused | RolloutState::Halted | RolloutState::Aborted) {
            let assigns = out.changes.iter().any(|c| matches!(c, Change::Assign { .. }));
            prop_assert!(!assigns, "assigned while {:?}: {:?}", rollout_state, out);
            if row_state.is_some_and(|s| matches!(s, AssignmentState::Assigned | DOWNLOADING)) {
                prop_assert_eq!(out.changes.clone(), vec![withdraw("r")]);
                prop_assert_eq!(out.decision.clone(), Decision::Nothing);
            }
        }
        // A draft never does anything.
        if rollout_state == RolloutState::Draft {
            prop_assert_eq!((out.decision.clone(), out.changes.clone()), (Decision::Nothing, vec![]));
        }
        // A rollback names only the release the device ran before.
        if let Decision::Rollback { release_id, .. } = out.decision {
            prop_assert_eq!(rollout_state, RolloutState::RolledBack);
            prop_assert_eq!(Some(release_id), Some(runs));
        }
    }
}
