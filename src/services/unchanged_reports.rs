//! Unchanged reports: the usual poll, recorded with one conditional statement per group.
//!
//! Most polls change nothing but the device's counter and last-seen time. The group-commit
//! writer (`group_commit`) records all such reports of a group with one `UPDATE … FROM` per
//! round (the rows travel as one JSON parameter), inside the group's transaction, and answers
//! each request only after the commit.
//!
//! The conditional update is the whole check, so it holds across groups and across instances
//! sharing one database: a row is written only if the device is active, the counter is above
//! the stored one, the report repeats exactly what is stored (installed image, attempt), the
//! stored decision was made at the current `plan` epoch, and no director role is inside its
//! refresh margin. Anything else is [`FastOutcome::NotApplied`] and takes the full path (which
//! answers a stale counter with 409, or decides and signs afresh). Two reports of one device in
//! one group go into successive rounds, so the second sees the first's counter.

use std::collections::HashMap;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, FromQueryResult, IdenStatic, Iterable,
    Statement, Value,
};

use crate::db::entities::device;

/// The most unchanged reports one group carries.
pub const MAX_UNCHANGED: usize = 1024;

/// An unchanged report, as the conditional update needs it.
#[derive(Debug, Clone)]
pub struct UnchangedReport {
    /// Device row.
    pub device_row: i64,
    /// The report's counter.
    pub counter: i64,
    /// Server time, Unix seconds.
    pub seen_at: i64,
    /// Installed image name and sha256, as reported.
    pub installed: Option<(String, String)>,
    /// Attempt name, state and detail, as reported.
    pub attempt: Option<(String, String, Option<String>)>,
}

/// What the writer did with one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastOutcome {
    /// Recorded; the device's director targets version is this.
    Recorded {
        /// The stored director targets version.
        director_targets_version: i64,
    },
    /// Recorded, and decided again because the stored decision predated the current plan
    /// (`redecide`); the director targets version is now this.
    Decided {
        /// The director targets version after the decision.
        director_targets_version: i64,
        /// Whether the director signed new roles for the device.
        signed: bool,
    },
    /// Not written: the full path must look at it.
    NotApplied,
}

/// Splits a batch into rounds in which each device appears at most once, keeping order.
fn rounds(reports: &[&UnchangedReport]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<i64, usize> = HashMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let round = seen.entry(r.device_row).and_modify(|n| *n += 1).or_insert(0);
        if out.len() <= *round {
            out.push(Vec::new());
        }
        out[*round].push(i);
    }
    out
}

/// Records what it can of `reports` on `db` (the group's transaction, or the connection when
/// there is one round); one outcome per report, in order.
pub async fn write_rounds(db: &impl ConnectionTrait, reports: &[&UnchangedReport]) -> Result<Vec<FastOutcome>, DbErr> {
    let mut outcomes = vec![FastOutcome::NotApplied; reports.len()];
    for round in rounds(reports) {
        let members: Vec<&UnchangedReport> = round.iter().map(|&i| reports[i]).collect();
        let written = update_round(db, &members).await?;
        for i in round {
            let r = reports[i];
            if let Some(&(counter, version)) = written.get(&r.device_row)
                && counter == r.counter
            {
                outcomes[i] = FastOutcome::Recorded { director_targets_version: version };
            }
        }
    }
    Ok(outcomes)
}

/// [`write_rounds`] on its own: a group of one round is one statement, which commits by itself
/// (one round trip instead of three); more rounds share a transaction.
pub async fn write_batch(db: &DatabaseConnection, reports: &[&UnchangedReport]) -> Result<Vec<FastOutcome>, DbErr> {
    if rounds(reports).len() == 1 {
        return write_rounds(db, reports).await;
    }
    let txn = crate::db::begin_write(db).await?;
    let outcomes = write_rounds(&txn, reports).await?;
    txn.commit().await?;
    Ok(outcomes)
}

#[derive(Debug, FromQueryResult)]
struct Written {
    id: i64,
    last_counter: Option<i64>,
    director_targets_version: i64,
}

/// The conditions under which an unchanged report needs nothing but its counter and time
/// (`Plan::Current`), or that and a decision under the current plan (`Plan::Any`). `v` is the
/// round's rows; `IS NOT DISTINCT FROM` compares NULLs as equal (SQLite: `IS`).
fn conditions(backend: DbBackend, plan: Plan) -> String {
    let same = if backend == DbBackend::Postgres { "IS NOT DISTINCT FROM" } else { "IS" };
    let epoch = match plan {
        Plan::Current => "AND devices.plan_epoch = (SELECT epoch FROM cache_epochs WHERE name = 'plan') ",
        Plan::Any => "",
    };
    format!(
        "devices.id = v.id AND devices.status = 'active' \
         AND (devices.last_counter IS NULL OR devices.last_counter < v.counter) {epoch}\
         AND devices.director_targets_version > 0 AND devices.director_refresh_at > v.seen \
         AND devices.installed_name {same} v.iname AND devices.installed_sha256 {same} v.isha \
         AND devices.attempt_name {same} v.aname AND devices.attempt_state {same} v.astate \
         AND devices.attempt_detail {same} v.adetail"
    )
}

/// Which stored decisions a conditional update accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Only one made at the current `plan` epoch.
    Current,
    /// Any: the caller decides again.
    Any,
}

/// One row of a round, as the statement reads it from its one JSON parameter.
#[derive(serde::Serialize)]
struct Row<'a> {
    id: i64,
    counter: i64,
    seen: i64,
    iname: Option<&'a str>,
    isha: Option<&'a str>,
    aname: Option<&'a str>,
    astate: Option<&'a str>,
    adetail: Option<&'a str>,
}

/// The statement for one round, returning `returning` (columns of `devices`). Its text never
/// changes (the rows arrive as one JSON array parameter), so it is prepared once per
/// connection however many rows a round has.
fn round_sql(backend: DbBackend, plan: Plan, returning: &[&str]) -> String {
    match backend {
        DbBackend::Postgres => {
            let returning: Vec<String> = returning.iter().map(|c| format!("devices.{c}")).collect();
            format!(
                "UPDATE devices SET last_counter = v.counter, last_seen_at = v.seen \
                 FROM jsonb_to_recordset($1::jsonb) AS v(id bigint, counter bigint, seen bigint, iname text, isha text, \
                 aname text, astate text, adetail text) \
                 WHERE {} RETURNING {}",
                conditions(backend, plan),
                returning.join(", ")
            )
        }
        _ => {
            let field = |f: &str| format!("json_extract(value, '$.{f}') AS {f}");
            let fields: Vec<String> = ["id", "counter", "seen", "iname", "isha", "aname", "astate", "adetail"]
                .iter()
                .map(|f| field(f))
                .collect();
            format!(
                "WITH v AS (SELECT {} FROM json_each(?)) \
                 UPDATE devices SET last_counter = v.counter, last_seen_at = v.seen \
                 FROM v WHERE {} RETURNING {}",
                fields.join(", "),
                conditions(backend, plan),
                returning.join(", ")
            )
        }
    }
}

/// The statement of [`update_round`] or [`record_for_decision`], with its one parameter.
fn round_statement(
    backend: DbBackend,
    plan: Plan,
    returning: &[&str],
    members: &[&UnchangedReport],
) -> Result<Statement, DbErr> {
    let rows: Vec<Row<'_>> = members
        .iter()
        .map(|r| {
            let (aname, astate, adetail) = match &r.attempt {
                Some((n, s, d)) => (Some(n.as_str()), Some(s.as_str()), d.as_deref()),
                None => (None, None, None),
            };
            Row {
                id: r.device_row,
                counter: r.counter,
                seen: r.seen_at,
                iname: r.installed.as_ref().map(|(n, _)| n.as_str()),
                isha: r.installed.as_ref().map(|(_, s)| s.as_str()),
                aname,
                astate,
                adetail,
            }
        })
        .collect();
    let json = serde_json::to_string(&rows).map_err(|e| DbErr::Custom(format!("encoding a round: {e}")))?;
    Ok(Statement::from_sql_and_values(backend, round_sql(backend, plan, returning), [Value::from(json)]))
}

/// One conditional update for reports of distinct devices; returns the rows written.
async fn update_round(
    db: &impl ConnectionTrait,
    members: &[&UnchangedReport],
) -> Result<HashMap<i64, (i64, i64)>, DbErr> {
    let returning = ["id", "last_counter", "director_targets_version"];
    let stmt = round_statement(db.get_database_backend(), Plan::Current, &returning, members)?;
    let written = Written::find_by_statement(stmt).all(db).await?;
    Ok(written.into_iter().map(|w| (w.id, (w.last_counter.unwrap_or(0), w.director_targets_version))).collect())
}

/// Records the counter and time of reports (of distinct devices) that repeat what is stored,
/// whatever plan epoch their stored decision was made at, for the caller to decide again in
/// the same transaction. Returns the device rows written, as they are now.
pub async fn record_for_decision(
    db: &impl ConnectionTrait,
    members: &[&UnchangedReport],
) -> Result<Vec<device::Model>, DbErr> {
    let columns: Vec<&str> = device::Column::iter().map(|c| c.as_str()).collect();
    let stmt = round_statement(db.get_database_backend(), Plan::Any, &columns, members)?;
    device::Entity::find().from_raw_sql(stmt).all(db).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(device_row: i64, counter: i64) -> UnchangedReport {
        UnchangedReport { device_row, counter, seen_at: 0, installed: None, attempt: None }
    }

    #[test]
    fn a_device_twice_in_one_batch_goes_into_two_rounds_in_order() {
        let reports = [report(1, 5), report(2, 9), report(1, 5), report(1, 6), report(3, 1)];
        let refs: Vec<&UnchangedReport> = reports.iter().collect();
        assert_eq!(rounds(&refs), vec![vec![0, 1, 4], vec![2], vec![3]]);
    }
}
