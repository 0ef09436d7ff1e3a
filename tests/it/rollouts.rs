//! Staged rollouts end to end: 1 000 enrolled devices with real keys report over real HTTP;
//! who is assigned at each stage, soak and `min_reports`, the gate halting a failing stage,
//! pause/resume/abort/rollback and withdrawal, all as docs/design.md §4 says.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use jiff::SignedDuration;
use patchgate::jobs::rollouts::evaluate_all;
use patchgate_protocol::bucket::bucket;
use patchgate_protocol::report::AttemptState;
use serde_json::{Value, json};

use crate::common::{TestApp, firmware, spawn_app};
use crate::fleet::{Device, Image, enrollment_token};

const PRODUCT: &str = "pump-x1";
const HW: &str = "pump-x1-revA";

/// One device's report to send: its index, the device, and the attempt it reports.
type Job<'a> = (usize, &'a mut Device, Option<(Image, AttemptState)>);

struct Fleet {
    app: TestApp,
    old: Image,
    new: Image,
    devices: Vec<Device>,
}

/// `eu` devices tagged `region:eu`, `us` devices `region:us`, all running 1.0.0 and known to
/// the server; cohorts `eu` (selector) and `everyone` (both tags' devices, explicitly).
async fn fleet(eu: usize, us: usize) -> Fleet {
    let app = spawn_app().await;
    app.create_product(PRODUCT, &[HW]).await;
    let old = Image::from_publish(&app.publish(PRODUCT, "1.0.0", "fw.bin", firmware(1, 4096)).await);
    let new = Image::from_publish(&app.publish(PRODUCT, "1.1.0", "fw.bin", firmware(2, 4096)).await);
    let eu_token = enrollment_token(&app, PRODUCT, &["region:eu"], eu as i64).await;
    let us_token = enrollment_token(&app, PRODUCT, &["region:us"], us.max(1) as i64).await;
    let plan: Vec<(String, String)> = (0..eu + us)
        .map(|i| (format!("pump-{i:04}"), if i < eu { eu_token.clone() } else { us_token.clone() }))
        .collect();
    let app_ref = &app;
    let mut devices: Vec<Device> = futures_util::stream::iter(plan)
        .map(|(id, token)| async move { Device::enroll(app_ref, &id, PRODUCT, HW, &token).await })
        .buffer_unordered(8)
        .collect()
        .await;
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    for d in &mut devices {
        d.installed = Some(old.clone());
    }
    let mut fleet = Fleet { app, old, new, devices };
    let all: Vec<usize> = (0..fleet.devices.len()).collect();
    // The first report tells each device its director version (1, signed at enrollment);
    // with no rollout, the next changes nothing.
    assert_eq!(fleet.report(&all, |_| None).await.len(), all.len());
    assert!(fleet.report(&all, |_| None).await.is_empty(), "no rollout yet: nothing is assigned");
    let res = fleet
        .app
        .client
        .post(fleet.app.url("/api/v1/cohorts"))
        .bearer_auth(&fleet.app.admin)
        .json(&json!({"name": "eu", "product": PRODUCT, "selector": {"tags": ["region:eu"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    fleet
}

impl Fleet {
    /// Devices `which` report (8 at a time), each with the attempt `attempt` gives it; returns
    /// the indices whose director metadata changed.
    async fn report(
        &mut self,
        which: &[usize],
        attempt: impl Fn(&Device) -> Option<(Image, AttemptState)>,
    ) -> BTreeSet<usize> {
        let app = &self.app;
        let wanted: BTreeSet<usize> = which.iter().copied().collect();
        let jobs: Vec<Job<'_>> = self
            .devices
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| wanted.contains(i))
            .map(|(i, d)| {
                let a = attempt(d);
                (i, d, a)
            })
            .collect();
        futures_util::stream::iter(jobs)
            .map(|(i, d, a)| async move {
                let before = d.director_version;
                let answer = d.report(app, a.as_ref().map(|(img, s)| (img, *s))).await;
                (i, answer["director_targets_version"].as_u64().unwrap() != before)
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .filter_map(|(i, changed)| changed.then_some(i))
            .collect()
    }

    fn in_bucket(&self, rollout: &str, basis_points: u16, tag_eu: usize) -> BTreeSet<usize> {
        (0..tag_eu).filter(|i| bucket(rollout, &self.devices[*i].id) < basis_points).collect()
    }

    async fn act(&self, id: &str, action: &str) -> (u16, Value) {
        let res = self
            .app
            .client
            .post(self.app.url(&format!("/api/v1/rollouts/{id}/{action}")))
            .bearer_auth(&self.app.admin)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    async fn rollout(&self, id: &str) -> Value {
        self.app.get_json(&format!("/api/v1/rollouts/{id}")).await
    }

    async fn create(&self, body: Value) -> Value {
        let res = self
            .app
            .client
            .post(self.app.url("/api/v1/rollouts"))
            .bearer_auth(&self.app.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    fn advance_clock(&self, minutes: i64) {
        let now = self.app.clock.offset();
        self.app.clock.set_offset(now + SignedDuration::from_mins(minutes));
    }
}

#[tokio::test]
async fn a_thousand_devices_go_through_three_stages_with_soak_min_reports_and_the_gate() {
    const EU: usize = 900;
    let mut f = fleet(EU, 100).await;
    let id = "r-acceptance";
    f.create(json!({"id": id, "product": PRODUCT, "version": "1.1.0", "auto_advance": true,
        "stages": [{"cohort": "eu", "percent": 1, "soak_minutes": 60}, {"cohort": "eu", "percent": 10, "soak_minutes": 60},
                   {"cohort": "eu", "percent": 100, "soak_minutes": 60}],
        "gate": {"max_failure_rate": 0.05, "min_reports": 5, "stall_minutes": 1440}}))
    .await;
    // A draft assigns nothing.
    let all: Vec<usize> = (0..f.devices.len()).collect();
    assert!(f.report(&all, |_| None).await.is_empty());
    assert_eq!(f.act(id, "start").await.0, 200);

    // Stage 1: exactly the eu devices whose bucket is under 1%.
    let stage1 = f.in_bucket(id, 100, EU);
    assert!(stage1.len() >= 6, "the fixed ids give stage 1 enough devices ({})", stage1.len());
    assert_eq!(f.report(&all, |_| None).await, stage1);
    for i in &stage1 {
        let (name, custom) = f.devices[*i].assignment(&f.app).await.unwrap();
        assert_eq!(name, f.new.name);
        assert_eq!(custom["rollout_id"], id);
        assert_eq!(custom["action"], "install");
    }
    // Not before the soak, and not below min_reports.
    let (status, body) = f.act(id, "advance").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "stage_not_ready");
    let first4: Vec<usize> = stage1.iter().copied().take(4).collect();
    let new = f.new.clone();
    f.report(&first4, |_| Some((new.clone(), AttemptState::Installed))).await;
    f.advance_clock(61);
    evaluate_all(&f.app.services).await.unwrap();
    assert_eq!(f.rollout(id).await["current_stage"], 0, "4 final reports are under min_reports = 5");
    let rest: Vec<usize> = stage1.iter().copied().skip(4).collect();
    f.report(&rest, |_| Some((new.clone(), AttemptState::Installed))).await;
    evaluate_all(&f.app.services).await.unwrap();
    assert_eq!(f.rollout(id).await["current_stage"], 1, "soak passed and min_reports met: auto-advance");

    // Stage 2 (10%): the first half of its devices report and are assigned.
    let stage2: BTreeSet<usize> = f.in_bucket(id, 1000, EU).difference(&stage1).copied().collect();
    let (half1, half2): (Vec<usize>, Vec<usize>) = stage2.iter().partition(|i| **i % 2 == 0);
    assert_eq!(f.report(&half1, |_| None).await, half1.iter().copied().collect());
    // 10% of the stage fail against a 5% gate: halted, with the reason recorded.
    let failing = stage2.len().div_ceil(10);
    let failers: Vec<usize> = half1.iter().copied().take(failing).collect();
    assert_eq!(failers.len(), failing);
    f.report(&failers, |_| Some((new.clone(), AttemptState::Failed))).await;
    let r = f.rollout(id).await;
    assert_eq!(r["state"], "halted", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("over the gate"), "{r}");
    // No further device is assigned; an assigned one that had not started is withdrawn, one
    // that is installing keeps its assignment.
    assert!(f.report(&half2, |_| None).await.is_empty());
    for i in &half2 {
        assert!(f.devices[*i].assignment(&f.app).await.is_none());
    }
    let (installing, idle) = (half1[failing], half1[failing + 1]);
    f.report(&[installing], |_| Some((new.clone(), AttemptState::Installing))).await;
    f.report(&[idle], |_| None).await;
    assert!(f.devices[installing].assignment(&f.app).await.is_some());
    assert!(f.devices[idle].assignment(&f.app).await.is_none(), "withdrawn at its next report");

    // An admin acknowledges and resumes: the rest of stage 2 is assigned, exactly the set.
    assert_eq!(f.act(id, "resume").await.0, 200);
    f.report(&all, |_| None).await;
    let mut assigned2 = BTreeSet::new();
    for i in 0..f.devices.len() {
        if f.devices[i].assignment(&f.app).await.is_some() {
            assigned2.insert(i);
        }
    }
    let expected2: BTreeSet<usize> = stage1.union(&stage2).copied().collect();
    assert_eq!(assigned2, expected2);
    let stage2_list: Vec<usize> = stage2.iter().copied().collect();
    f.report(&stage2_list, |_| Some((new.clone(), AttemptState::Installed))).await;
    f.advance_clock(61);
    evaluate_all(&f.app.services).await.unwrap();
    assert_eq!(f.rollout(id).await["current_stage"], 2);

    // Stage 3 (100% of eu): every eu device, never a us device.
    let stage3: BTreeSet<usize> = (0..EU).filter(|i| !expected2.contains(i)).collect();
    assert_eq!(f.report(&all, |_| None).await, stage3);
    let eu_all: Vec<usize> = (0..EU).collect();
    f.report(&eu_all, |_| Some((new.clone(), AttemptState::Installed))).await;
    f.advance_clock(61);
    evaluate_all(&f.app.services).await.unwrap();
    assert_eq!(f.rollout(id).await["state"], "completed");
    for i in EU..f.devices.len() {
        assert!(f.devices[i].assignment(&f.app).await.is_none(), "us devices are not in the cohort");
    }
    // Every admin and gate action is in the audit log.
    let audit: Value = f.app.get_json("/api/v1/audit?limit=1000").await;
    let text = audit.to_string();
    for action in
        ["rollout.create", "rollout.start", "rollout.halt", "rollout.resume", "rollout.advance", "rollout.complete"]
    {
        assert!(text.contains(action), "{action} missing from the audit log");
    }
}

#[tokio::test]
async fn pause_abort_and_rollback_withdraw_or_reverse_assignments() {
    let mut f = fleet(40, 0).await;
    let all: Vec<usize> = (0..40).collect();
    let gate = json!({"max_failure_rate": 0.5, "min_reports": 1, "stall_minutes": 1440});
    let stages = json!([{"cohort": "eu", "percent": 100, "soak_minutes": 0}]);
    f.create(json!({"id": "r-one", "product": PRODUCT, "version": "1.1.0", "stages": stages, "gate": gate})).await;
    assert_eq!(f.act("r-one", "start").await.0, 200);
    assert_eq!(f.report(&all, |_| None).await.len(), 40);
    let new = f.new.clone();
    // 0..10 installed, 10..20 installing, 20..40 idle.
    f.report(&(0..10).collect::<Vec<_>>(), |_| Some((new.clone(), AttemptState::Installed))).await;
    for d in &mut f.devices[0..10] {
        d.installed = Some(new.clone());
    }
    f.report(&(10..20).collect::<Vec<_>>(), |_| Some((new.clone(), AttemptState::Installing))).await;

    // Pause: idle devices are withdrawn at their next report; the others keep it.
    assert_eq!(f.act("r-one", "pause").await.0, 200);
    let withdrawn = f.report(&all, |_| None).await;
    assert_eq!(withdrawn, (20..40).collect());
    for i in 20..40 {
        assert!(f.devices[i].assignment(&f.app).await.is_none());
    }
    assert!(f.devices[15].assignment(&f.app).await.is_some());
    // Resume: they are assigned again.
    assert_eq!(f.act("r-one", "resume").await.0, 200);
    assert_eq!(f.report(&all, |_| None).await, (20..40).collect());
    // Abort: the same withdrawal, for good.
    assert_eq!(f.act("r-one", "abort").await.0, 200);
    assert_eq!(f.report(&all, |_| None).await, (20..40).collect());
    assert_eq!(f.act("r-one", "resume").await.0, 409, "an aborted rollout cannot resume");

    // Rollback: whoever installed (or is installing) goes back to 1.0.0 with action rollback.
    assert_eq!(f.act("r-one", "rollback").await.0, 200);
    let changed = f.report(&all, |_| None).await;
    assert_eq!(changed, (0..20).collect());
    for i in 0..20 {
        let (name, custom) = f.devices[i].assignment(&f.app).await.unwrap();
        assert_eq!(name, f.old.name);
        assert_eq!(custom["action"], "rollback");
        assert_eq!(custom["version"], "1.0.0");
    }
    for i in 20..40 {
        assert!(f.devices[i].assignment(&f.app).await.is_none());
    }
    // One running rollout per product and cohort.
    f.create(json!({"id": "r-two", "product": PRODUCT, "version": "1.1.0", "stages": stages, "gate": gate})).await;
    f.create(json!({"id": "r-three", "product": PRODUCT, "version": "1.1.0", "stages": stages, "gate": gate})).await;
    assert_eq!(f.act("r-two", "start").await.0, 200);
    let (status, body) = f.act("r-three", "start").await;
    assert_eq!(status, 409);
    assert!(body["message"].as_str().unwrap().contains("r-two"), "{body}");
}
