//! Group commit for the device path: one writer, many waiters (docs/design.md §5).
//!
//! Request handlers queue their write and wait. The writer takes what is queued and opens one
//! transaction (none when the group holds only unchanged reports of distinct devices: their one
//! statement commits by itself). In it, it records all unchanged reports of the group with one
//! conditional statement per round (`unchanged_reports`); decides again, with a few statements
//! for all of them, for those whose stored decision predates the current plan (`redecide`);
//! stores the group's first enrollments together (`enrollment::enroll_batch`); runs every other
//! unit of work (a changed report, an enrollment that could not go with the others) in a
//! savepoint of its own; commits once, and only then answers each waiter with its own result.
//! Nothing answered is ever lost, and the database pays one commit (one fsync) per group
//! instead of per request. A unit that fails rolls back its own savepoint and nothing else (a
//! set-wise step that fails sends its requests one by one); a commit that fails answers
//! everyone with the error (nothing of the group was written).
//!
//! SQLite has one writer at a time anyway, and two writers would only meet in its busy handler
//! (which sleeps whole milliseconds), so it gets one writer task; PostgreSQL gets several
//! ([`writers_for`]), overlapping their round trips, and one more for enrollments alone.
//!
//! A full queue is back-pressure: callers wait, nothing is dropped.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::enrollment::{ENROLL, Enrollment, enroll_batch, enroll_in};
use super::redecide::redecide_reports;
use super::unchanged_reports::{FastOutcome, MAX_UNCHANGED, UnchangedReport, write_batch, write_rounds};
use super::{ServiceError, Services};

/// The most units of full work one transaction carries: enough to amortise the commit, few
/// enough that the last caller in a group does not wait long behind the first.
const MAX_UNITS: usize = 256;
/// Requests waiting before callers wait too.
const QUEUE: usize = 16 * 1024;

/// A unit of work with its answer channel, type-erased for the queue.
type Unit = Box<dyn for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Deliver> + Send>;
/// Answers the caller once the group's fate is known (`Ok` = committed).
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;
/// Where an unchanged report's outcome goes.
type FastAnswer = oneshot::Sender<Result<FastOutcome, String>>;

/// An unchanged report, with what deciding again needs (the handles of the services).
struct Unchanged {
    report: UnchangedReport,
    svc: Services,
    answer: FastAnswer,
}

/// An enrollment, with the handles of the services.
struct Enroll {
    enrollment: Enrollment,
    svc: Services,
    answer: oneshot::Sender<Result<(i64, &'static str), ServiceError>>,
}

/// What a request queues.
enum Item {
    Unchanged(Box<Unchanged>),
    Enroll(Box<Enroll>),
    Unit(Unit),
}

/// What the writer takes in one go.
#[derive(Default)]
struct Group {
    unchanged: Vec<Unchanged>,
    enrolls: Vec<Enroll>,
    units: Vec<Unit>,
}

impl Group {
    fn len(&self) -> usize {
        self.unchanged.len() + self.enrolls.len() + self.units.len()
    }
}

/// The handle services use; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Item>,
    /// Where enrollments go: the same queue on SQLite; on PostgreSQL a queue of their own with
    /// one writer.
    enroll_tx: mpsc::Sender<Item>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// How many groups may be open at once: one on SQLite, three on PostgreSQL. Three overlap
/// their round trips well enough; more only split the same load into smaller groups, each
/// paying its own statements and commit: with six, PostgreSQL spent about a quarter more CPU
/// on 10 000 first reports after a stage opened (3.5 s against 2.8 s) and the server answered
/// fewer of them a second (README, "Benchmarks").
fn writers_for(backend: DbBackend) -> usize {
    if backend == DbBackend::Postgres { 3 } else { 1 }
}

impl GroupCommit {
    /// Starts the writer tasks on the current runtime.
    pub fn start(db: DatabaseConnection) -> Self {
        let (tx, rx) = mpsc::channel::<Item>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let backend = db.get_database_backend();
        for _ in 0..writers_for(backend) {
            tokio::spawn(run(db.clone(), rx.clone()));
        }
        // Enrollments with one token all update that token's row, which each writer holds
        // locked until its commit: spread over several writers they would wait on each other in
        // small groups. One writer of their own gathers all that arrive during a commit into the
        // next group instead. (SQLite has one writer anyway.)
        let enroll_tx = if backend == DbBackend::Postgres {
            let (enroll_tx, enroll_rx) = mpsc::channel::<Item>(QUEUE);
            tokio::spawn(run(db, Arc::new(Mutex::new(enroll_rx))));
            enroll_tx
        } else {
            tx.clone()
        };
        Self { tx, enroll_tx }
    }

    /// Records an unchanged report in the next group, deciding again if its stored decision
    /// predates the current plan; returns once that group committed.
    pub async fn record_unchanged(&self, svc: &Services, report: UnchangedReport) -> Result<FastOutcome, ServiceError> {
        let (done, answer) = oneshot::channel();
        let item = Unchanged { report, svc: svc.clone(), answer: done };
        self.tx.send(Item::Unchanged(Box::new(item))).await.map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!("recording a group of reports: {e}")))
    }

    /// Stores `enrollment` in the next group (with the group's other first enrollments, see
    /// `enrollment::enroll_batch`); returns the device row and the audit action once the group
    /// committed.
    pub async fn enroll(&self, svc: &Services, enrollment: Enrollment) -> Result<(i64, &'static str), ServiceError> {
        let (done, answer) = oneshot::channel();
        let item = Enroll { enrollment, svc: svc.clone(), answer: done };
        self.enroll_tx.send(Item::Enroll(Box::new(item))).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `work` inside the next group's transaction; returns its result once the group
    /// committed (or its error at once, with nothing of it written).
    pub async fn run<T, F>(&self, work: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T, ServiceError>> + Send + 'static,
    {
        let (done, answer) = oneshot::channel::<Result<T, ServiceError>>();
        let unit: Unit = Box::new(move |txn: &DatabaseTransaction| {
            Box::pin(async move {
                let result = in_savepoint(txn, work).await;
                let deliver: Deliver = Box::new(move |committed: Result<(), String>| {
                    let answer = match (result, committed) {
                        (Err(e), _) => Err(e),
                        (Ok(value), Ok(())) => Ok(value),
                        (Ok(_), Err(e)) => Err(ServiceError::Internal(anyhow::anyhow!("committing the group: {e}"))),
                    };
                    let _ = done.send(answer);
                });
                deliver
            })
        });
        self.tx.send(Item::Unit(unit)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> ServiceError {
    ServiceError::Internal(anyhow::anyhow!("the group-commit writer could not run the work"))
}

async fn in_savepoint<T, F>(txn: &DatabaseTransaction, work: F) -> Result<T, ServiceError>
where
    F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<T, ServiceError>>,
{
    let savepoint = txn.begin().await?;
    let result = work(&savepoint).await;
    close_savepoint(savepoint, result).await
}

/// Keeps what `savepoint` (or a transaction) wrote if `result` is a success, rolls it back
/// otherwise.
async fn close_savepoint<T, E: From<sea_orm::DbErr>>(
    savepoint: DatabaseTransaction,
    result: Result<T, E>,
) -> Result<T, E> {
    match result {
        Ok(value) => {
            savepoint.commit().await?;
            Ok(value)
        }
        Err(e) => {
            savepoint.rollback().await?;
            Err(e)
        }
    }
}

/// Takes what is queued: at most [`MAX_UNCHANGED`] unchanged reports and [`MAX_UNITS`] other
/// units of work.
async fn next_group(rx: &Mutex<mpsc::Receiver<Item>>) -> Option<Group> {
    let mut rx = rx.lock().await;
    let mut group = Group::default();
    let mut next = rx.recv().await;
    while let Some(item) = next.take() {
        match item {
            Item::Unchanged(u) => group.unchanged.push(*u),
            Item::Enroll(e) => group.enrolls.push(*e),
            Item::Unit(unit) => group.units.push(unit),
        }
        if group.unchanged.len() < MAX_UNCHANGED && group.enrolls.len() + group.units.len() < MAX_UNITS {
            next = rx.try_recv().ok();
        }
    }
    (group.len() > 0).then_some(group)
}

async fn run(db: DatabaseConnection, rx: Arc<Mutex<mpsc::Receiver<Item>>>) {
    while let Some(group) = next_group(&rx).await {
        metrics::histogram!("patchgate_group_commit_size").record(group.len() as f64);
        let started = std::time::Instant::now();
        let Group { unchanged, enrolls, units } = group;
        if units.is_empty() && enrolls.is_empty() {
            // The usual group under load: polls only, usually one statement committing itself.
            let reports: Vec<&UnchangedReport> = unchanged.iter().map(|u| &u.report).collect();
            let fast = write_batch(&db, &reports).await.map_err(|e| {
                tracing::error!(error = %e, reports = reports.len(), "recording a group of unchanged reports failed");
                e.to_string()
            });
            let unchanged = answer_recorded(unchanged, fast);
            if !unchanged.is_empty() {
                // Polls under a plan changed since their decision: one transaction decides them all.
                let outcomes = redecide_alone(&db, &unchanged).await;
                answer_unchanged(unchanged, &Ok(outcomes));
            }
            metrics::histogram!("patchgate_group_commit_seconds").record(started.elapsed().as_secs_f64());
            continue;
        }
        let txn = match crate::db::begin_write(&db).await {
            Ok(txn) => txn,
            Err(e) => {
                tracing::error!(error = %e, "group commit: cannot begin a transaction");
                answer_unchanged(unchanged, &Err(e.to_string()));
                for enroll in enrolls {
                    let _ = enroll.answer.send(Err(ServiceError::Internal(anyhow::anyhow!("group commit: {e}"))));
                }
                for unit in units {
                    run_alone(unit, &db, &e.to_string()).await;
                }
                continue;
            }
        };
        let reports: Vec<&UnchangedReport> = unchanged.iter().map(|u| &u.report).collect();
        let fast = record_unchanged_group(&txn, &reports).await;
        let fast = match fast {
            Ok(fast) => Ok(redecide_in(&txn, &unchanged, fast).await),
            Err(e) => Err(e),
        };
        let enrolled = enroll_in_group(&txn, &enrolls).await;
        let mut deliveries = Vec::with_capacity(units.len());
        for unit in units {
            deliveries.push(unit(&txn).await);
        }
        let committed = txn.commit().await.map_err(|e| e.to_string());
        if let Err(e) = &committed {
            tracing::error!(error = %e, reports = unchanged.len(), enrollments = enrolls.len(), units = deliveries.len(),
                "group commit: the commit failed; nothing of the group was written");
        }
        metrics::histogram!("patchgate_group_commit_seconds").record(started.elapsed().as_secs_f64());
        answer_unchanged(unchanged, &committed.clone().and(fast));
        for (enroll, result) in enrolls.into_iter().zip(enrolled) {
            let answer = match (result, &committed) {
                (Err(e), _) => Err(e),
                (Ok(done), Ok(())) => Ok(done),
                (Ok(_), Err(e)) => Err(ServiceError::Internal(anyhow::anyhow!("committing the group: {e}"))),
            };
            let _ = enroll.answer.send(answer);
        }
        for deliver in deliveries {
            deliver(committed.clone());
        }
    }
}

/// One enrollment in a savepoint of its own.
async fn enroll_alone(txn: &DatabaseTransaction, enroll: &Enroll) -> Result<(i64, &'static str), ServiceError> {
    let savepoint = txn.begin().await?;
    let result = enroll_in(&savepoint, &enroll.svc, &enroll.enrollment).await;
    close_savepoint(savepoint, result).await
}

/// The group's enrollments: together where they can (`enroll_batch`, in a savepoint), the
/// others each in a savepoint of its own. One result per enrollment, in order.
async fn enroll_in_group(
    txn: &DatabaseTransaction,
    enrolls: &[Enroll],
) -> Vec<Result<(i64, &'static str), ServiceError>> {
    let Some(first) = enrolls.first() else {
        return Vec::new();
    };
    let units: Vec<&Enrollment> = enrolls.iter().map(|e| &e.enrollment).collect();
    let batch = async {
        let savepoint = txn.begin().await?;
        let result = enroll_batch(&savepoint, &first.svc, &units).await;
        close_savepoint(savepoint, result).await
    }
    .await;
    let rows = batch.unwrap_or_else(|e: ServiceError| {
        tracing::warn!(error = %e, enrollments = units.len(), "enrolling a group together failed; each enrolls alone");
        vec![None; units.len()]
    });
    let mut results = Vec::with_capacity(units.len());
    for (enroll, row) in enrolls.iter().zip(rows) {
        results.push(match row {
            Some(row) => Ok((row, ENROLL)),
            None => enroll_alone(txn, enroll).await,
        });
    }
    results
}

/// Tells each unchanged report's waiter its outcome (one per report, in order) or the error.
fn answer_unchanged(unchanged: Vec<Unchanged>, outcomes: &Result<Vec<FastOutcome>, String>) {
    for (i, u) in unchanged.into_iter().enumerate() {
        let _ = u.answer.send(outcomes.as_ref().map(|o| o[i]).map_err(Clone::clone));
    }
}

/// Answers the reports `fast` recorded (or all, with the error); returns the others, for
/// deciding again.
fn answer_recorded(unchanged: Vec<Unchanged>, fast: Result<Vec<FastOutcome>, String>) -> Vec<Unchanged> {
    let outcomes = match fast {
        Ok(outcomes) => outcomes,
        Err(e) => {
            answer_unchanged(unchanged, &Err(e));
            return Vec::new();
        }
    };
    let mut rest = Vec::new();
    for (u, outcome) in unchanged.into_iter().zip(outcomes) {
        if outcome == FastOutcome::NotApplied {
            rest.push(u);
        } else {
            let _ = u.answer.send(Ok(outcome));
        }
    }
    rest
}

/// The reports of `unchanged` that `fast` did not record, decided again in a savepoint of
/// `txn`; on failure nothing of it stays and they go the full path.
async fn redecide_in(txn: &DatabaseTransaction, unchanged: &[Unchanged], fast: Vec<FastOutcome>) -> Vec<FastOutcome> {
    let pending: Vec<usize> = (0..fast.len()).filter(|&i| fast[i] == FastOutcome::NotApplied).collect();
    let Some(first) = pending.first() else {
        return fast;
    };
    let reports: Vec<&UnchangedReport> = pending.iter().map(|&i| &unchanged[i].report).collect();
    let decided = decide_again(txn.begin().await, &unchanged[*first].svc, &reports).await;
    let mut fast = fast;
    for (&i, o) in pending.iter().zip(decided) {
        fast[i] = o;
    }
    fast
}

/// [`redecide_in`] for a group with no transaction of its own: one just for the decisions.
async fn redecide_alone(db: &DatabaseConnection, unchanged: &[Unchanged]) -> Vec<FastOutcome> {
    let Some(first) = unchanged.first() else {
        return Vec::new();
    };
    let reports: Vec<&UnchangedReport> = unchanged.iter().map(|u| &u.report).collect();
    decide_again(crate::db::begin_write(db).await, &first.svc, &reports).await
}

/// Decides `reports` again in `txn` (a savepoint of the group's transaction, or a transaction
/// of their own) and commits it; on any failure nothing of it stays and every report gets
/// [`FastOutcome::NotApplied`], for the full path.
async fn decide_again(
    txn: Result<DatabaseTransaction, sea_orm::DbErr>,
    svc: &Services,
    reports: &[&UnchangedReport],
) -> Vec<FastOutcome> {
    let decided = async {
        let txn = txn?;
        let result = redecide_reports(&txn, svc, reports).await;
        close_savepoint(txn, result).await
    }
    .await;
    decided.unwrap_or_else(|e: ServiceError| {
        redecide_failed(&e, reports.len());
        vec![FastOutcome::NotApplied; reports.len()]
    })
}

fn redecide_failed(e: &ServiceError, reports: usize) {
    tracing::warn!(error = %e, reports, "deciding a group of reports again failed; each takes the full path");
}

/// The group's unchanged reports, in a savepoint so that a failure there spares the units.
async fn record_unchanged_group(
    txn: &DatabaseTransaction,
    reports: &[&UnchangedReport],
) -> Result<Vec<FastOutcome>, String> {
    if reports.is_empty() {
        return Ok(Vec::new());
    }
    let result = async {
        let savepoint = txn.begin().await?;
        let result = write_rounds(&savepoint, reports).await;
        close_savepoint(savepoint, result).await
    }
    .await;
    result.map_err(|e: sea_orm::DbErr| {
        tracing::error!(error = %e, reports = reports.len(), "recording a group of unchanged reports failed");
        e.to_string()
    })
}

/// A unit whose group could not open a transaction gets one more try in a transaction of its
/// own; if that cannot open either, the unit is dropped and its caller told the writer failed.
async fn run_alone(unit: Unit, db: &DatabaseConnection, error: &str) {
    match crate::db::begin_write(db).await {
        Ok(txn) => {
            let deliver = unit(&txn).await;
            let committed = txn.commit().await.map_err(|e| e.to_string());
            deliver(committed);
        }
        Err(_) => {
            tracing::error!(error, "group commit: a unit could not run");
            drop(unit);
        }
    }
}
