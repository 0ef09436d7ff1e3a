//! Group commit for the device path: one writer, many waiters (DESIGN.md §5).
//!
//! Request handlers queue their write and wait. The writer takes what is queued, opens one
//! transaction (none when the group holds only unchanged reports of distinct devices: their one
//! statement commits by itself), records all unchanged reports of the group with one
//! conditional statement per round (`unchanged_reports`), runs every other unit of work (a changed report, an enrollment)
//! in a savepoint of its own, commits once, and only then answers each waiter with its own
//! result. Nothing answered is ever lost, and the database pays one commit (one fsync) per
//! group instead of per request. A unit that fails rolls back its own savepoint and nothing
//! else; a commit that fails answers everyone with the error (nothing of the group was written).
//!
//! SQLite has one writer at a time anyway, and two writers would only meet in its busy handler
//! (which sleeps whole milliseconds), so it gets one writer task; PostgreSQL gets several
//! ([`writers_for`]), overlapping their round trips.
//!
//! A full queue is back-pressure: callers wait, nothing is dropped.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::ServiceError;
use super::unchanged_reports::{FastOutcome, MAX_UNCHANGED, UnchangedReport, write_batch, write_rounds};

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

/// What a request queues.
enum Item {
    Unchanged(UnchangedReport, FastAnswer),
    Unit(Unit),
}

/// The handle services use; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Item>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// How many groups may be open at once: one on SQLite, several on PostgreSQL.
fn writers_for(backend: DbBackend) -> usize {
    if backend == DbBackend::Postgres { 6 } else { 1 }
}

impl GroupCommit {
    /// Starts the writer tasks on the current runtime.
    pub fn start(db: DatabaseConnection) -> Self {
        let (tx, rx) = mpsc::channel::<Item>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers_for(db.get_database_backend()) {
            tokio::spawn(run(db.clone(), rx.clone()));
        }
        Self { tx }
    }

    /// Records an unchanged report in the next group; returns once that group committed.
    pub async fn record_unchanged(&self, report: UnchangedReport) -> Result<FastOutcome, ServiceError> {
        let (done, answer) = oneshot::channel();
        self.tx.send(Item::Unchanged(report, done)).await.map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!("recording a group of reports: {e}")))
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
    match work(&savepoint).await {
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

/// Takes what is queued: at most [`MAX_UNCHANGED`] unchanged reports and [`MAX_UNITS`] units.
async fn next_group(rx: &Mutex<mpsc::Receiver<Item>>) -> Option<(Vec<(UnchangedReport, FastAnswer)>, Vec<Unit>)> {
    let mut rx = rx.lock().await;
    let mut unchanged = Vec::new();
    let mut units = Vec::new();
    let mut next = rx.recv().await;
    while let Some(item) = next.take() {
        match item {
            Item::Unchanged(report, answer) => unchanged.push((report, answer)),
            Item::Unit(unit) => units.push(unit),
        }
        if unchanged.len() < MAX_UNCHANGED && units.len() < MAX_UNITS {
            next = rx.try_recv().ok();
        }
    }
    if unchanged.is_empty() && units.is_empty() {
        return None;
    }
    Some((unchanged, units))
}

async fn run(db: DatabaseConnection, rx: Arc<Mutex<mpsc::Receiver<Item>>>) {
    while let Some((unchanged, units)) = next_group(&rx).await {
        metrics::histogram!("patchgate_group_commit_size").record((unchanged.len() + units.len()) as f64);
        let started = std::time::Instant::now();
        if units.is_empty() {
            // The usual group under load: polls only, usually one statement committing itself.
            let reports: Vec<&UnchangedReport> = unchanged.iter().map(|(r, _)| r).collect();
            let fast = write_batch(&db, &reports).await.map_err(|e| {
                tracing::error!(error = %e, reports = reports.len(), "recording a group of unchanged reports failed");
                e.to_string()
            });
            metrics::histogram!("patchgate_group_commit_seconds").record(started.elapsed().as_secs_f64());
            answer_unchanged(unchanged, &fast);
            continue;
        }
        let txn = match crate::db::begin_write(&db).await {
            Ok(txn) => txn,
            Err(e) => {
                tracing::error!(error = %e, "group commit: cannot begin a transaction");
                answer_unchanged(unchanged, &Err(e.to_string()));
                for unit in units {
                    run_alone(unit, &db, &e.to_string()).await;
                }
                continue;
            }
        };
        let reports: Vec<&UnchangedReport> = unchanged.iter().map(|(r, _)| r).collect();
        let fast = record_unchanged_group(&txn, &reports).await;
        let mut deliveries = Vec::with_capacity(units.len());
        for unit in units {
            deliveries.push(unit(&txn).await);
        }
        let committed = txn.commit().await.map_err(|e| e.to_string());
        if let Err(e) = &committed {
            tracing::error!(error = %e, reports = unchanged.len(), units = deliveries.len(),
                "group commit: the commit failed; nothing of the group was written");
        }
        metrics::histogram!("patchgate_group_commit_seconds").record(started.elapsed().as_secs_f64());
        answer_unchanged(unchanged, &committed.clone().and(fast));
        for deliver in deliveries {
            deliver(committed.clone());
        }
    }
}

/// Tells each unchanged report's waiter its outcome (one per report, in order) or the error.
fn answer_unchanged(unchanged: Vec<(UnchangedReport, FastAnswer)>, outcomes: &Result<Vec<FastOutcome>, String>) {
    for (i, (_, answer)) in unchanged.into_iter().enumerate() {
        let _ = answer.send(outcomes.as_ref().map(|o| o[i]).map_err(Clone::clone));
    }
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
        match write_rounds(&savepoint, reports).await {
            Ok(o) => {
                savepoint.commit().await?;
                Ok(o)
            }
            Err(e) => {
                savepoint.rollback().await?;
                Err(e)
            }
        }
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
