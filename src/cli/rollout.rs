//! `patchgate rollout create|start|pause|resume|abort|rollback|advance|show|list`: steering
//! rollouts on a running server over its HTTP API, with the same `--server`/`--token` (or
//! `PATCHGATE_SERVER`/`PATCHGATE_TOKEN`) as `release publish`. A refusal prints the server's
//! error code and message and exits non-zero.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::ServerArgs;

/// Rollout commands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Create a rollout (in draft; `start` sends it).
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Product name.
        #[arg(long)]
        product: String,
        /// Release version to roll out.
        #[arg(long)]
        version: String,
        /// A stage, in order: COHORT:PERCENT or COHORT:PERCENT:SOAK_MINUTES (repeat for each).
        /// Cohort names may contain ':', so the numbers are read from the right.
        #[arg(long = "stage", required = true, value_parser = parse_stage)]
        stages: Vec<Stage>,
        /// Highest tolerated share of failed devices, 0 to 1 (0.05 = 5%).
        #[arg(long)]
        max_failure_rate: f64,
        /// Final reports a stage needs before it may advance.
        #[arg(long)]
        min_reports: u32,
        /// Minutes after which a silent assigned device counts as failed.
        #[arg(long)]
        stall_minutes: i64,
        /// Advance after each soak on its own while the gate holds.
        #[arg(long)]
        auto_advance: bool,
        /// Rollout id (generated if absent); it seeds every device's bucket.
        #[arg(long)]
        id: Option<String>,
    },
    /// Start a draft rollout.
    Start(Act),
    /// Pause a running rollout (devices not yet installing are withdrawn).
    Pause(Act),
    /// Resume a paused or halted rollout (for a halted one: acknowledges the failures).
    Resume(Act),
    /// Abort a rollout.
    Abort(Act),
    /// Roll back: devices that installed the release get the one they ran before.
    Rollback(Act),
    /// Move to the next stage.
    Advance {
        #[command(flatten)]
        act: Act,
        /// Skip the soak and report checks (audited).
        #[arg(long)]
        force: bool,
    },
    /// Show a rollout with per-stage counts and gate verdicts.
    Show {
        #[command(flatten)]
        target: Target,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List rollouts, newest first.
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Only this product.
        #[arg(long)]
        product: Option<String>,
        /// Only this state.
        #[arg(long)]
        state: Option<String>,
    },
}

/// A rollout on a server.
#[derive(Debug, Args)]
pub struct Target {
    #[command(flatten)]
    server: ServerArgs,
    /// Rollout id.
    id: String,
}

/// An action on a rollout, and why.
#[derive(Debug, Args)]
pub struct Act {
    #[command(flatten)]
    target: Target,
    /// Why, kept with the action in the audit log (up to 500 characters).
    #[arg(long)]
    note: Option<String>,
}

/// One `--stage` value.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    cohort: String,
    percent: f64,
    soak_minutes: i64,
}

/// Parses `COHORT:PERCENT[:SOAK_MINUTES]`, reading numbers from the right.
fn parse_stage(raw: &str) -> Result<Stage, String> {
    let bad = || format!("{raw:?} is not COHORT:PERCENT or COHORT:PERCENT:SOAK_MINUTES");
    let (head, last) = raw.rsplit_once(':').ok_or_else(bad)?;
    if let Some((cohort, percent)) = head.rsplit_once(':')
        && let (Ok(percent), Ok(soak_minutes)) = (percent.parse::<f64>(), last.parse::<i64>())
        && !cohort.is_empty()
    {
        return Ok(Stage { cohort: cohort.to_owned(), percent, soak_minutes });
    }
    let percent = last.parse::<f64>().map_err(|_| bad())?;
    if head.is_empty() {
        return Err(bad());
    }
    Ok(Stage { cohort: head.to_owned(), percent, soak_minutes: 0 })
}

/// Sends a request to `/api/v1/{segments…}` (each segment percent-encoded) and returns the
/// JSON answer, or the server's refusal as an error.
async fn call(
    server: &ServerArgs,
    method: reqwest::Method,
    segments: &[&str],
    query: &[(&str, String)],
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let remote = server.remote()?;
    let mut request = remote.api_query(method, segments, query);
    if let Some(body) = body {
        request = request.json(&body);
    }
    remote.send_json(request).await
}

/// Runs a rollout command.
pub async fn run(cmd: RolloutCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let (act, action, force) = match cmd {
        RolloutCommand::Create {
            server,
            product,
            version,
            stages,
            max_failure_rate,
            min_reports,
            stall_minutes,
            auto_advance,
            id,
        } => {
            let stages: Vec<Value> = stages
                .into_iter()
                .map(|s| json!({"cohort": s.cohort, "percent": s.percent, "soak_minutes": s.soak_minutes}))
                .collect();
            let body = json!({"id": id, "product": product, "version": version, "stages": stages,
                "gate": {"max_failure_rate": max_failure_rate, "min_reports": min_reports, "stall_minutes": stall_minutes},
                "auto_advance": auto_advance});
            let created = call(&server, Method::POST, &["rollouts"], &[], Some(body)).await?;
            say!(
                "created rollout {} (draft); start it with: patchgate rollout start {}",
                text(&created["id"]),
                text(&created["id"])
            );
            return Ok(());
        }
        RolloutCommand::Show { target, json } => {
            let status = call(&target.server, Method::GET, &["rollouts", &target.id], &[], None).await?;
            if json {
                say!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                say_raw!("{}", render_status(&status));
            }
            return Ok(());
        }
        RolloutCommand::List { server, product, state } => {
            let query: Vec<(&str, String)> =
                [("product", product), ("state", state)].into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
            let list = call(&server, Method::GET, &["rollouts"], &query, None).await?;
            say_raw!("{}", render_list(&list));
            return Ok(());
        }
        RolloutCommand::Start(a) => (a, "start", false),
        RolloutCommand::Pause(a) => (a, "pause", false),
        RolloutCommand::Resume(a) => (a, "resume", false),
        RolloutCommand::Abort(a) => (a, "abort", false),
        RolloutCommand::Rollback(a) => (a, "rollback", false),
        RolloutCommand::Advance { act, force } => (act, "advance", force),
    };
    let query = if force { vec![("force", "true".to_owned())] } else { Vec::new() };
    let body = act.note.map(|note| json!({"note": note}));
    let target = act.target;
    let r = call(&target.server, Method::POST, &["rollouts", &target.id, action], &query, body).await?;
    let stage = r["current_stage"].as_i64().unwrap_or(0) + 1;
    let stages = r["stages"].as_array().map_or(0, Vec::len);
    say!("rollout {}: {} (stage {stage} of {stages})", text(&r["id"]), text(&r["state"]));
    if let Some(reason) = r["reason"].as_str() {
        say!("reason: {reason}");
    }
    Ok(())
}

/// A JSON string value as text ("" if it is not a string).
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A JSON number (or anything else) as text.
fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// Unix seconds as RFC 3339, `-` if absent.
fn time(v: &Value) -> String {
    v.as_i64().and_then(|s| jiff::Timestamp::from_second(s).ok()).map_or_else(|| "-".to_owned(), |t| t.to_string())
}

/// A fraction as a percent with two decimals.
fn pct(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A stage's gate verdict in a few words.
fn verdict(gate: &Value, min_reports: &Value) -> String {
    let mut words = if gate["over_gate"].as_bool() == Some(true) {
        "OVER GATE".to_owned()
    } else if gate["enough_reports"].as_bool() == Some(true) {
        "ok".to_owned()
    } else {
        format!("waiting ({} of {} reports)", num(&gate["final_reports"]), num(min_reports))
    };
    if gate["alert"].as_bool() == Some(true) {
        words.push_str(", ALERT: rejected");
    }
    words
}

/// `rollout show`: a header, then one row per stage, then the gate's reasons.
fn render_status(r: &Value) -> String {
    let stages = r["stages"].as_array().map(Vec::as_slice).unwrap_or_default();
    let current = usize::try_from(r["current_stage"].as_i64().unwrap_or(0)).unwrap_or(0);
    let mut out = format!(
        "rollout {}: {} {}, {}, stage {} of {} (stage started {})\n",
        text(&r["id"]),
        text(&r["product"]),
        text(&r["version"]),
        text(&r["state"]),
        current + 1,
        stages.len(),
        time(&r["stage_started_at"]),
    );
    out.push_str(&format!(
        "gate: failure rate at most {}, {} final reports to advance, silent after {} min counts as failed; auto-advance: {}\n",
        pct(r["max_failure_rate"].as_f64().unwrap_or(0.0)),
        num(&r["min_reports"]),
        num(&r["stall_minutes"]),
        if r["auto_advance"].as_bool() == Some(true) { "yes" } else { "no" },
    ));
    if let Some(reason) = r["reason"].as_str() {
        out.push_str(&format!("reason: {reason}\n"));
    }
    out.push('\n');
    let header = ["", "#", "COHORT", "PERCENT", "SOAK", "ELIGIBLE", "ASSIGNED", "INSTALLING", "INSTALLED", "FAILED"];
    let header = header.into_iter().chain(["REJECTED", "STALLED", "FAIL RATE", "GATE"]);
    let mut rows = vec![header.map(str::to_owned).collect::<Vec<_>>()];
    let mut reasons = Vec::new();
    for (i, s) in stages.iter().enumerate() {
        let gate = &s["gate"];
        rows.push(vec![
            if i == current { ">".to_owned() } else { String::new() },
            (i + 1).to_string(),
            text(&s["cohort"]).to_owned(),
            s["percent"].as_f64().map_or_else(|| "-".to_owned(), |p| format!("{p}%")),
            format!("{}m", num(&s["soak_minutes"])),
            num(&s["eligible"]),
            num(&s["assigned"]),
            num(&s["installing"]),
            num(&s["installed"]),
            num(&s["failed"]),
            num(&s["rejected"]),
            num(&s["stalled"]),
            pct(gate["failure_rate"].as_f64().unwrap_or(0.0)),
            verdict(gate, &r["min_reports"]),
        ]);
        if let Some(reason) = gate["reason"].as_str() {
            reasons.push(format!("stage {}: {reason}\n", i + 1));
        }
        if let Some(note) = s["note"].as_str() {
            reasons.push(format!("stage {}: {note}\n", i + 1));
        }
    }
    out.push_str(&table(&rows));
    for reason in reasons {
        out.push_str(&reason);
    }
    out
}

/// `rollout list`: one row per rollout.
fn render_list(list: &Value) -> String {
    let mut rows = vec![["ID", "STATE", "STAGE", "CREATED", "CREATED BY"].map(str::to_owned).to_vec()];
    for r in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        let stages = r["stages"].as_array().map_or(0, Vec::len);
        rows.push(vec![
            text(&r["id"]).to_owned(),
            text(&r["state"]).to_owned(),
            format!("{} of {stages}", r["current_stage"].as_i64().unwrap_or(0) + 1),
            time(&r["created_at"]),
            text(&r["created_by"]).to_owned(),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_read_numbers_from_the_right() {
        let stage =
            |cohort: &str, percent: f64, soak_minutes: i64| Stage { cohort: cohort.into(), percent, soak_minutes };
        assert_eq!(parse_stage("beta:5"), Ok(stage("beta", 5.0, 0)));
        assert_eq!(parse_stage("beta:12.5:60"), Ok(stage("beta", 12.5, 60)));
        assert_eq!(parse_stage("region:eu:10"), Ok(stage("region:eu", 10.0, 0)));
        assert_eq!(parse_stage("region:eu:10:30"), Ok(stage("region:eu", 10.0, 30)));
        for bad in ["beta", ":5", "beta:x", "beta:5:x:"] {
            assert!(parse_stage(bad).is_err(), "{bad}");
        }
    }
}
