//! The "new rollout" form: its fields as the browser posts them (all strings, so a missing or
//! malformed value becomes a message next to its field rather than an opaque 400), their
//! validation into the API's [`CreateRollout`], and the view that re-renders it with the values
//! typed. Creating is `manage_rollout::create_rollout`, the same service the API calls.

use serde::Deserialize;

use super::super::pages::FieldErrors;
use crate::domain::ids::{CohortName, RolloutId};
use crate::domain::names::FirmwareVersion;
use crate::domain::rollout::{FailureRate, Percent};
use crate::services::ServiceError;
use crate::services::manage_rollout::{CreateRollout, GateInput, StageInput};

/// Stage rows on the form; more stages remain possible over the API.
pub const STAGE_ROWS: usize = 4;
/// The field names of each stage row: cohort, percent, soak minutes.
const STAGE_FIELDS: [[&str; 3]; STAGE_ROWS] = [
    ["stage1_cohort", "stage1_percent", "stage1_soak_minutes"],
    ["stage2_cohort", "stage2_percent", "stage2_soak_minutes"],
    ["stage3_cohort", "stage3_percent", "stage3_soak_minutes"],
    ["stage4_cohort", "stage4_percent", "stage4_soak_minutes"],
];
/// The domain's longest soak (30 days), in minutes.
const MAX_SOAK_MINUTES: i64 = 30 * 24 * 60;
/// The domain's highest `min_reports`.
const MAX_MIN_REPORTS: u32 = 1_000_000;
/// The domain's longest stall time, 30 days.
const MAX_STALL_MINUTES: i64 = 30 * 24 * 60;

/// The form as posted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RolloutForm {
    pub csrf: String,
    pub id: String,
    pub product: String,
    pub version: String,
    pub stage1_cohort: String,
    pub stage1_percent: String,
    pub stage1_soak_minutes: String,
    pub stage2_cohort: String,
    pub stage2_percent: String,
    pub stage2_soak_minutes: String,
    pub stage3_cohort: String,
    pub stage3_percent: String,
    pub stage3_soak_minutes: String,
    pub stage4_cohort: String,
    pub stage4_percent: String,
    pub stage4_soak_minutes: String,
    pub max_failure_rate: String,
    pub min_reports: String,
    pub stall_minutes: String,
    pub auto_advance: String,
}

impl RolloutForm {
    /// An empty form with the usual gate filled in.
    pub fn blank(product: String, version: String) -> Self {
        Self {
            product,
            version,
            max_failure_rate: "5".into(),
            min_reports: "5".into(),
            stall_minutes: "1440".into(),
            ..Self::default()
        }
    }

    /// Row `i`'s (cohort, percent, soak minutes), as typed.
    pub fn stage(&self, i: usize) -> [&str; 3] {
        match i {
            0 => [&self.stage1_cohort, &self.stage1_percent, &self.stage1_soak_minutes],
            1 => [&self.stage2_cohort, &self.stage2_percent, &self.stage2_soak_minutes],
            2 => [&self.stage3_cohort, &self.stage3_percent, &self.stage3_soak_minutes],
            _ => [&self.stage4_cohort, &self.stage4_percent, &self.stage4_soak_minutes],
        }
    }

    /// The non-empty stage rows: (row index, cohort as typed).
    pub fn stage_cohorts(&self) -> Vec<(usize, String)> {
        (0..STAGE_ROWS).map(|i| (i, self.stage(i)[0].trim().to_owned())).filter(|(_, c)| !c.is_empty()).collect()
    }

    /// The cohort field name of row `i`.
    pub fn cohort_field(i: usize) -> &'static str {
        STAGE_FIELDS[i.min(STAGE_ROWS - 1)][0]
    }
}

/// `12`, `12.5`, `12.25` (and a trailing `%`) as hundredths; `None` if it is not such a number.
fn hundredths(raw: &str) -> Option<u32> {
    let raw = raw.trim().trim_end_matches('%').trim_end();
    let (whole, decimals) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 6 || !digits(whole) || decimals.len() > 2 || !digits(decimals) {
        return None;
    }
    if raw.contains('.') && decimals.is_empty() {
        return None;
    }
    let cents = format!("{decimals:0<2}").parse::<u32>().ok()?;
    Some(whole.parse::<u32>().ok()? * 100 + cents)
}

/// A whole number in `min..=max`, or the message for the field.
fn whole(raw: &str, min: i64, max: i64, what: &str) -> Result<i64, String> {
    match raw.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("Enter {what}: a whole number from {min} to {max}.")),
    }
}

/// Validates the form. Every problem is recorded next to its field; the input is returned only
/// when there is none.
pub fn parse(form: &RolloutForm, errors: &mut FieldErrors) -> Option<CreateRollout> {
    let id = form.id.trim();
    if !id.is_empty()
        && let Err(e) = RolloutId::parse(id)
    {
        errors.add("id", format!("{e}, or leave it empty to have one generated."));
    }
    if form.product.trim().is_empty() {
        errors.add("product", "Choose the product.");
    }
    if let Err(e) = FirmwareVersion::parse(form.version.trim()) {
        let message = if form.version.trim().is_empty() {
            "Enter the release version, e.g. 1.4.2.".into()
        } else {
            e.to_string()
        };
        errors.add("version", message);
    }
    let stages = parse_stages(form, errors);
    let rate = hundredths(&form.max_failure_rate).filter(|bp| *bp <= 10_000);
    let rate = rate.and_then(|bp| FailureRate::parse(f64::from(bp) / 10_000.0).ok());
    if rate.is_none() {
        errors.add("max_failure_rate", "Enter a percent from 0 to 100 with at most two decimals, e.g. 5.");
    }
    let min_reports = whole(&form.min_reports, 0, i64::from(MAX_MIN_REPORTS), "the reports a stage needs");
    let stall = whole(&form.stall_minutes, 1, MAX_STALL_MINUTES, "the minutes of silence");
    for (field, result) in [("min_reports", &min_reports), ("stall_minutes", &stall)] {
        if let Err(message) = result {
            errors.add(field, message.clone());
        }
    }
    let (Some(rate), Ok(min_reports), Ok(stall_minutes)) = (rate, min_reports, stall) else { return None };
    if !errors.is_empty() {
        return None;
    }
    Some(CreateRollout {
        id: (!id.is_empty()).then(|| id.to_owned()),
        product: form.product.trim().to_owned(),
        version: form.version.trim().to_owned(),
        stages,
        gate: GateInput {
            max_failure_rate: rate.as_f64(),
            min_reports: u32::try_from(min_reports).unwrap_or(MAX_MIN_REPORTS),
            stall_minutes,
        },
        auto_advance: form.auto_advance == "on",
    })
}

/// The filled-in stage rows; an empty row is skipped, a half-filled one is an error.
fn parse_stages(form: &RolloutForm, errors: &mut FieldErrors) -> Vec<StageInput> {
    let mut stages = Vec::new();
    for (i, [cohort_field, percent_field, soak_field]) in STAGE_FIELDS.into_iter().enumerate() {
        let [cohort, percent, soak] = form.stage(i).map(str::trim);
        if cohort.is_empty() && percent.is_empty() && soak.is_empty() {
            continue;
        }
        if cohort.is_empty() {
            errors.add(cohort_field, "Enter the cohort, or clear this stage's row.");
        } else if let Err(e) = CohortName::parse(cohort) {
            errors.add(cohort_field, e.to_string());
        }
        let share = hundredths(percent).and_then(|bp| u16::try_from(bp).ok());
        let share = share.and_then(|bp| Percent::parse(f64::from(bp) / 100.0).ok());
        if share.is_none() {
            errors.add(percent_field, "Enter a percent over 0 and at most 100 with at most two decimals, e.g. 12.5.");
        }
        let soak_minutes =
            if soak.is_empty() { Ok(0) } else { whole(soak, 0, MAX_SOAK_MINUTES, "the soak in minutes") };
        if let Err(message) = &soak_minutes {
            errors.add(soak_field, message.clone());
        }
        if let (Some(share), Ok(soak_minutes)) = (share, soak_minutes) {
            stages.push(StageInput { cohort: cohort.to_owned(), percent: share.as_f64(), soak_minutes });
        }
    }
    if stages.is_empty() && (0..STAGE_ROWS).all(|i| form.stage(i).iter().all(|v| v.trim().is_empty())) {
        errors.add("stage1_cohort", "Fill in at least one stage: a cohort and a percent.");
    }
    stages
}

/// Where the service's refusal belongs on the form: a field and its message, or `None` for a
/// notice above the form.
pub fn refusal_field(e: &ServiceError, form: &RolloutForm) -> Option<(&'static str, String)> {
    match e {
        // "product P has no cohort C": the first row naming C.
        ServiceError::NotFound { code: "unknown_cohort", message } => form
            .stage_cohorts()
            .into_iter()
            .find(|(_, cohort)| message.ends_with(&format!(" has no cohort {cohort}")))
            .map(|(i, _)| (RolloutForm::cohort_field(i), message.clone())),
        ServiceError::NotFound { code: "unknown_product", message } => Some(("product", message.clone())),
        ServiceError::NotFound { code: "unknown_release", message } => Some(("version", message.clone())),
        ServiceError::Conflict { code: "rollout_exists", message }
        | ServiceError::Invalid { code: "invalid_rollout_id", message } => Some(("id", message.clone())),
        _ => None,
    }
}

/// A text input of the form as the template draws it: label, hint, value typed, message.
#[derive(Debug, Clone)]
pub struct Input {
    /// The field name (also its `id`).
    pub name: &'static str,
    pub label: String,
    pub hint: &'static str,
    pub value: String,
    pub error: Option<String>,
    /// `text`, `decimal` or `numeric` (the on-screen keyboard).
    pub inputmode: &'static str,
    /// A `datalist` id to suggest values from, or empty.
    pub list: &'static str,
}

impl Input {
    fn new(name: &'static str, label: impl Into<String>, value: &str, errors: &FieldErrors) -> Self {
        let error = errors.get(name).cloned();
        Self { name, label: label.into(), hint: "", value: value.to_owned(), error, inputmode: "text", list: "" }
    }

    fn hint(self, hint: &'static str) -> Self {
        Self { hint, ..self }
    }

    fn mode(self, inputmode: &'static str) -> Self {
        Self { inputmode, ..self }
    }
}

/// One stage row of the form.
#[derive(Debug, Clone)]
pub struct StageInputs {
    /// 1-based.
    pub number: usize,
    pub fields: Vec<Input>,
}

/// The id and version inputs.
pub fn release_inputs(form: &RolloutForm, errors: &FieldErrors) -> (Input, Input) {
    let id = Input::new("id", "Rollout id (optional)", &form.id, errors)
        .hint("Lowercase letters, digits, '-', '_', '.', ':'. Leave empty to have one generated. It never changes.");
    let version = Input::new("version", "Release version", &form.version, errors).hint("As published, e.g. 1.4.2.");
    (id, version)
}

/// The stage rows, with what was typed.
pub fn stage_inputs(form: &RolloutForm, errors: &FieldErrors) -> Vec<StageInputs> {
    STAGE_FIELDS
        .into_iter()
        .enumerate()
        .map(|(i, [cohort, percent, soak])| {
            let [c, p, s] = form.stage(i);
            let n = i + 1;
            StageInputs {
                number: n,
                fields: vec![
                    Input { list: "cohort-names", ..Input::new(cohort, format!("Stage {n} cohort"), c, errors) },
                    Input::new(percent, format!("Stage {n} percent"), p, errors)
                        .mode("decimal")
                        .hint("Share of the cohort, up to two decimals."),
                    Input::new(soak, format!("Stage {n} soak (minutes)"), s, errors)
                        .mode("numeric")
                        .hint("Empty means none."),
                ],
            }
        })
        .collect()
}

/// The gate inputs, with what was typed.
pub fn gate_inputs(form: &RolloutForm, errors: &FieldErrors) -> Vec<Input> {
    vec![
        Input::new("max_failure_rate", "Halt above this failure rate (percent)", &form.max_failure_rate, errors)
            .mode("decimal")
            .hint("A stage over it halts the rollout; 5 means 5 %."),
        Input::new("min_reports", "Final reports needed to advance", &form.min_reports, errors).mode("numeric"),
        Input::new("stall_minutes", "Stall time (minutes)", &form.stall_minutes, errors)
            .mode("numeric")
            .hint("An assigned device silent this long counts as failed."),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled() -> RolloutForm {
        RolloutForm {
            id: "r-eu".into(),
            product: "pump-x1".into(),
            version: "1.1.0".into(),
            stage1_cohort: "eu".into(),
            stage1_percent: "12.5".into(),
            stage1_soak_minutes: "60".into(),
            stage3_cohort: "eu".into(),
            stage3_percent: "100 %".into(),
            ..RolloutForm::blank(String::new(), String::new())
        }
    }

    #[test]
    fn percents_take_at_most_two_decimals() {
        for (raw, want) in
            [("5", Some(500)), ("12.5", Some(1250)), ("0.01", Some(1)), ("100%", Some(10_000)), (" 7.25 ", Some(725))]
        {
            assert_eq!(hundredths(raw), want, "{raw}");
        }
        for raw in ["", "abc", "1.234", "-1", "1e2", ".5", "5.", "+5", "1,5"] {
            assert_eq!(hundredths(raw), None, "{raw}");
        }
    }

    #[test]
    fn a_good_form_becomes_the_api_input_and_empty_rows_are_skipped() {
        let mut errors = FieldErrors::default();
        let input = parse(&filled(), &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(input.id.as_deref(), Some("r-eu"));
        assert_eq!(input.stages.len(), 2);
        assert_eq!((input.stages[0].percent, input.stages[0].soak_minutes), (12.5, 60));
        assert_eq!((input.stages[1].percent, input.stages[1].soak_minutes), (100.0, 0));
        assert_eq!(input.gate.max_failure_rate, 0.05);
        assert!(!input.auto_advance);
    }

    #[test]
    fn every_bad_field_gets_its_own_message() {
        let form = RolloutForm {
            id: "Bad Id".into(),
            version: "one".into(),
            stage1_cohort: String::new(),
            stage1_percent: "150".into(),
            stage1_soak_minutes: "x".into(),
            stage3_cohort: String::new(),
            stage3_percent: String::new(),
            max_failure_rate: "5.123".into(),
            min_reports: "-1".into(),
            stall_minutes: "0".into(),
            ..filled()
        };
        let mut errors = FieldErrors::default();
        assert!(parse(&RolloutForm { product: String::new(), ..form }, &mut errors).is_none());
        for field in [
            "id",
            "product",
            "version",
            "stage1_cohort",
            "stage1_percent",
            "stage1_soak_minutes",
            "max_failure_rate",
            "min_reports",
            "stall_minutes",
        ] {
            assert!(errors.get(field).is_some(), "{field}: {errors:?}");
        }
        let mut errors = FieldErrors::default();
        let empty = RolloutForm {
            stage1_cohort: String::new(),
            stage1_percent: String::new(),
            stage1_soak_minutes: String::new(),
            stage3_cohort: String::new(),
            stage3_percent: String::new(),
            ..filled()
        };
        assert!(parse(&empty, &mut errors).is_none());
        assert!(errors.get("stage1_cohort").is_some_and(|m| m.contains("at least one stage")), "{errors:?}");
    }
}
