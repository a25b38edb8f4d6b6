//! Writing one run: begin -> log metrics -> finish with a status.
//!
//! Metrics are buffered and committed as small chunk files (every [`FlushPolicy::points`]
//! points or [`FlushPolicy::interval`], whichever comes first), each written atomically, so a
//! `kill -9` loses at most the points logged since the last chunk. While the writer lives it
//! holds a lock on its claim (see `claims.rs`); when the process dies the kernel drops the
//! lock and readers see the run as interrupted at its last flushed step.
//!
//! The run's `running` row is committed like a chunk: with the first chunk, or by a timer
//! thread once [`FlushPolicy::interval`] has passed since the start (a trainer setting up
//! logs nothing for a while), whichever comes first. A run that finishes sooner writes only
//! its final row: one file, two fsyncs and a deleted file fewer per run, which is most of a
//! sweep of small runs' logging. Like the points of its last second, a run killed in its
//! first second leaves no row (its claim stays, and a kill between its last chunk and
//! its final row leaves that chunk, which readers ignore).

use crate::archive::{open_lock_file, Archive};
use crate::cache::RunsCache;
use crate::canonical::Hash;
use crate::claims::Claim;
use crate::files::{self, day_dir, ChunkName};
use crate::identity::Identity;
use crate::records::{self, Check, MetricPoint, RunRecord, Status};
use crate::schema::Table;
use crate::{Error, Result};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// When buffered metrics are committed to disk.
#[derive(Clone, Copy, Debug)]
pub struct FlushPolicy {
    /// Commit a chunk once this many points are buffered (4,096: a chunk file of ~40 KB).
    pub points: usize,
    /// Commit a chunk once this much time has passed since the last one (1 s: what a
    /// `kill -9` can cost at most). The policy a run begins with also says when its
    /// `running` row is committed if no chunk came first: this long after the start.
    pub interval: Duration,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            points: 4096,
            interval: Duration::from_secs(1),
        }
    }
}

/// Everything about a run that is known before its first step.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub name: String,
    pub identity: Identity,
    /// The uncommitted diff (a patch) behind `identity.code.diff_hash`, kept as a blob.
    pub uncommitted_diff: Vec<u8>,
    pub recipe_step: Option<String>,
    pub parent_run: Option<String>,
    pub sweep: Option<String>,
    pub session_id: Option<String>,
    pub cell_execution: Option<i64>,
    pub cell_history_hash: Option<String>,
}

impl RunSpec {
    /// A spec whose code and environment are this process's: the git state of the current
    /// directory (its uncommitted diff kept as a blob) and this machine.
    pub fn capture(
        name: impl Into<String>,
        config: serde_json::Value,
        seeds: BTreeMap<String, u64>,
        data: crate::DataFingerprint,
    ) -> Result<RunSpec> {
        let (code, patch) = crate::CodeState::capture(std::path::Path::new("."))?;
        let identity = Identity {
            config: crate::canonical::canonicalize(&config)?,
            seeds,
            data,
            code,
            env: crate::Environment::capture(),
        };
        Ok(RunSpec {
            uncommitted_diff: patch,
            ..RunSpec::new(name, identity)
        })
    }

    pub fn new(name: impl Into<String>, identity: Identity) -> RunSpec {
        RunSpec {
            name: name.into(),
            identity,
            uncommitted_diff: Vec::new(),
            recipe_step: None,
            parent_run: None,
            sweep: None,
            session_id: None,
            cell_execution: None,
            cell_history_hash: None,
        }
    }
}

/// An open run. Finish it with [`RunWriter::finish`]; dropping it unfinished archives it as
/// interrupted.
pub struct RunWriter {
    archive: Archive,
    record: RunRecord,
    day: NaiveDate,
    buffer: Buffer,
    next_chunk: u32,
    /// When the last chunk was committed (or the run began), in wall-clock microseconds: the
    /// clock every point is stamped with anyway, so a point costs one reading of it.
    last_flush_micros: i64,
    metrics: Metrics,
    policy: FlushPolicy,
    /// The attempt's claim, held for the run's life; dropping it says the run is over.
    claim: Option<Claim>,
    /// The `running` row until it is committed, shared with the timer thread.
    running: Arc<Mutex<RunningRow>>,
    /// Why a chunk could not be committed (a full disk, say), once one could not: the reason
    /// the run's final row records, with status `failed`.
    failure: Option<String>,
}

/// Points logged since the last chunk, column by column; a point's metric is an index into
/// [`Metrics::names`], so logging a point allocates nothing.
#[derive(Default)]
struct Buffer {
    steps: Vec<i64>,
    metrics: Vec<u32>,
    values: Vec<f64>,
    wall_micros: Vec<i64>,
}

/// The metrics a run has logged: each name once, with its last step and value.
#[derive(Default)]
struct Metrics {
    index: BTreeMap<String, u32>,
    names: Vec<String>,
    last: Vec<(i64, f64)>,
}

impl Buffer {
    fn clear(&mut self) {
        self.steps.clear();
        self.metrics.clear();
        self.values.clear();
        self.wall_micros.clear();
    }
}

impl Metrics {
    /// The index of `name`, which is then known from this point on.
    fn index_of(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.index.insert(name.to_string(), i);
        self.names.push(name.to_string());
        self.last.push((0, 0.0));
        i
    }
}

/// A run's `running` row: pending until the first chunk or the timer commits it, or the final
/// row makes it moot.
struct RunningRow {
    path: PathBuf,
    record: RunRecord,
    state: RowState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowState {
    Pending,
    Written,
    Finished,
}

impl RunningRow {
    /// Commit the row if it is still pending.
    fn commit(&mut self) -> Result<()> {
        if self.state == RowState::Pending {
            write_run_row(&self.path, &self.record)?;
            self.state = RowState::Written;
        }
        Ok(())
    }
}

/// Lock a running row; a panic elsewhere while it was locked left nothing half-done in it.
fn hold(row: &Mutex<RunningRow>) -> std::sync::MutexGuard<'_, RunningRow> {
    row.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Have the process's timer thread commit `row` at `due` unless it is written or finished by
/// then. False when no thread could be started (the caller commits it itself).
fn commit_at(due: Instant, row: &Arc<Mutex<RunningRow>>) -> bool {
    type Due = (Instant, std::sync::Weak<Mutex<RunningRow>>);
    static TIMER: OnceLock<Option<Mutex<mpsc::Sender<Due>>>> = OnceLock::new();
    let timer = TIMER.get_or_init(|| {
        let (send, receive) = mpsc::channel::<Due>();
        let thread = std::thread::Builder::new()
            .name("recipe-archive-rows".into())
            .spawn(move || {
                // The rows of runs still going, waiting for their time: a run that finished
                // (its writer dropped) leaves the list at the next wake.
                let mut waiting: Vec<Due> = Vec::new();
                loop {
                    let now = Instant::now();
                    waiting.retain(|(due, row)| {
                        let Some(row) = row.upgrade() else {
                            return false;
                        };
                        if *due > now {
                            return true;
                        }
                        let committed =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                hold(&row).commit()
                            }));
                        if let Ok(Err(e)) = committed {
                            // The run's next chunk tries again (and fails with the error); its
                            // final row is written either way.
                            eprintln!("warning: the running row of a run: {e}");
                        }
                        false
                    });
                    let next = waiting.iter().map(|(due, _)| *due).min();
                    let received = match next {
                        Some(due) => {
                            receive.recv_timeout(due.saturating_duration_since(Instant::now()))
                        }
                        None => receive
                            .recv()
                            .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    };
                    match received {
                        Ok(due) => waiting.push(due),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            });
        thread.ok().map(|_| Mutex::new(send))
    });
    match timer {
        Some(send) => send
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send((due, Arc::downgrade(row)))
            .is_ok(),
        None => false,
    }
}

impl Archive {
    /// Start a run; its identity is archived with its `running` row, within
    /// [`FlushPolicy::interval`] of now (see the module's notes). A run whose identity is
    /// already archived becomes a replicate (attempt 2, 3...).
    pub fn begin_run(&self, spec: RunSpec) -> Result<RunWriter> {
        self.begin_run_with(spec, FlushPolicy::default())
    }

    /// [`Archive::begin_run`] with a flush policy of its own from the start.
    pub fn begin_run_with(&self, spec: RunSpec, policy: FlushPolicy) -> Result<RunWriter> {
        let hashes = spec.identity.hashes()?;
        // The components live in the runs row itself (canonical JSON columns); only the
        // uncommitted diff, which can be large, is a blob.
        let components = spec.identity.component_values()?;
        if !spec.uncommitted_diff.is_empty() {
            self.put_blob(&spec.uncommitted_diff)?;
        }
        let run_id = hashes.run_id.to_hex();
        let (attempt, claim) = self.claim_attempt(&run_id)?;
        let now = records::now();
        let record = RunRecord {
            run_id,
            attempt,
            name: spec.name,
            recipe_step: spec.recipe_step,
            parent_run: spec.parent_run,
            sweep: spec.sweep,
            status: Status::Running,
            started_at: now,
            ended_at: None,
            updated_at: now,
            last_step: None,
            group_id: hashes.group_id.to_hex().as_str().into(),
            component_hashes: hashes.components.map(|h| h.to_hex().as_str().into()),
            components: components.map(std::sync::Arc::new),
            summary: BTreeMap::new(),
            checks: Vec::new(),
            artifacts: BTreeMap::new(),
            error: None,
            reproduced: None,
            diverged_step: None,
            session_id: spec.session_id,
            cell_execution: spec.cell_execution,
            cell_history_hash: spec.cell_history_hash,
        };
        let day = now.date_naive();
        let running = Arc::new(Mutex::new(RunningRow {
            path: row_path(self, day, &record),
            record: record.clone(),
            state: RowState::Pending,
        }));
        let started = Instant::now();
        // The folder now, so an archive that cannot be written fails the run's start.
        let folder = day_dir(self.root(), Table::Runs, day);
        fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        // An interval too long to count (flush by points only) commits with the first chunk.
        let scheduled = started
            .checked_add(policy.interval)
            .is_none_or(|due| commit_at(due, &running));
        if !scheduled {
            hold(&running).commit()?;
        }
        Ok(RunWriter {
            archive: self.clone(),
            day,
            record,
            buffer: Buffer::default(),
            next_chunk: 1,
            last_flush_micros: records::micros(now),
            metrics: Metrics::default(),
            policy,
            claim: Some(claim),
            running,
            failure: None,
        })
    }
}

impl RunWriter {
    /// The row as it stands.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    pub fn run_id(&self) -> &str {
        &self.record.run_id
    }

    /// Change when chunks are committed (tests use tiny chunks). When the `running` row is
    /// committed, if no chunk comes first, was set by the policy the run began with
    /// ([`Archive::begin_run_with`]).
    pub fn set_flush_policy(&mut self, policy: FlushPolicy) {
        self.policy = policy;
    }

    /// Log one metric value at a step. NaN and infinities are kept as they are.
    pub fn log(&mut self, step: i64, name: &str, value: f64) -> Result<()> {
        self.log_all(step, &[(name, value)])
    }

    /// Log several metrics at one step (one wall-clock reading for all of them).
    pub fn log_all(&mut self, step: i64, values: &[(&str, f64)]) -> Result<()> {
        if let Some((name, _)) = values.iter().find(|(name, _)| name.is_empty()) {
            return Err(Error::Invalid(format!(
                "a metric needs a name (got {name:?})"
            )));
        }
        let wall_time = records::now_micros();
        for &(name, value) in values {
            let metric = self.metrics.index_of(name);
            self.metrics.last[metric as usize] = (step, value);
            self.buffer.steps.push(step);
            self.buffer.metrics.push(metric);
            self.buffer.values.push(value);
            self.buffer.wall_micros.push(wall_time);
        }
        if self.buffer.steps.len() >= self.policy.points
            // Either way: a clock set back flushes early, which only costs a chunk.
            || u128::from(wall_time.abs_diff(self.last_flush_micros))
                >= self.policy.interval.as_micros()
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Commit the buffered points as one chunk file now (after the `running` row, if that
    /// is still pending: a reader that finds a chunk finds its run).
    pub fn flush(&mut self) -> Result<()> {
        self.last_flush_micros = records::now_micros();
        if self.buffer.steps.is_empty() {
            return Ok(());
        }
        let committed = self.commit_chunk();
        if let Err(e) = &committed {
            self.failure.get_or_insert_with(|| {
                let lost = match self.record.last_step {
                    Some(step) => format!("the points logged after step {step} are not archived"),
                    None => "none of its points are archived".into(),
                };
                match is_disk_full(e) {
                    true => format!("the disk was full: {e}; {lost}"),
                    false => format!("the archive could not be written: {e}; {lost}"),
                }
            });
        }
        committed
    }

    /// Commit the buffered points as the next chunk file.
    fn commit_chunk(&mut self) -> Result<()> {
        hold(&self.running).commit()?;
        let name = ChunkName {
            run_id: self.record.run_id.clone(),
            attempt: self.record.attempt,
            first: self.next_chunk,
            last: self.next_chunk,
        };
        let path = day_dir(self.archive.root(), Table::Metrics, self.day).join(name.file_name());
        let buffered = &self.buffer;
        let names = &self.metrics.names;
        let columns = records::MetricColumns {
            steps: &buffered.steps,
            names: (buffered.metrics.iter())
                .map(|&m| names[m as usize].as_str())
                .collect(),
            values: &buffered.values,
            wall_micros: &buffered.wall_micros,
        };
        let batch =
            records::metric_columns_to_batch(&self.record.run_id, self.record.attempt, &columns)?;
        files::write_parquet(&path, Table::Metrics, &batch)?;
        let last_step = buffered.steps.iter().copied().max();
        self.record.last_step = last_step.into_iter().chain(self.record.last_step).max();
        self.buffer.clear();
        self.next_chunk += 1;
        Ok(())
    }

    /// Add or replace a summary value (the final value of each logged metric is added at
    /// finish without asking).
    pub fn set_summary(&mut self, name: &str, value: f64) {
        self.record.summary.insert(name.into(), value);
    }

    /// Record a recipe check on the run.
    pub fn add_check(&mut self, check: Check) {
        self.record.checks.push(check);
    }

    /// Store bytes (a checkpoint, a prediction snapshot) as a blob named `name` on the run;
    /// a later blob of the same name replaces the pointer (the older blob stays).
    pub fn put_artifact(&mut self, name: &str, bytes: &[u8]) -> Result<Hash> {
        let hash = self.archive.put_blob(bytes)?;
        self.record
            .artifacts
            .insert(name.to_string(), hash.to_hex());
        Ok(hash)
    }

    /// Store bytes (a checkpoint, a prediction snapshot) as a blob and return its hash.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Hash> {
        self.archive.put_blob(bytes)
    }

    /// Finish the run: commit the last chunk, compare with the first attempt when this is a
    /// replicate, and write the final row.
    pub fn finish(mut self, status: Status, error: Option<String>) -> Result<RunRecord> {
        self.finish_in_place(status, error)
    }

    fn finish_in_place(&mut self, status: Status, error: Option<String>) -> Result<RunRecord> {
        // A pending running row is not needed any more, so the last chunk goes without it and
        // the final row follows. (A kill between the two, in a run's first second, leaves
        // that chunk without a run.)
        {
            let mut running = hold(&self.running);
            if running.state == RowState::Pending {
                running.state = RowState::Finished;
            }
        }
        // A chunk that cannot be committed (now, or earlier) still leaves a final row that
        // says why: the run failed, and its reason names the file and the cause.
        let unflushed = self.flush().err();
        let (status, error) = match self.failure.clone() {
            Some(failure) => (
                Status::Failed,
                Some(match error {
                    Some(error) if status != Status::Interrupted => format!("{failure}; {error}"),
                    _ => failure,
                }),
            ),
            None => (status, error),
        };
        for (name, (_, value)) in self.metrics.names.iter().zip(&self.metrics.last) {
            self.record
                .summary
                .entry(name.as_str().into())
                .or_insert(*value);
        }
        self.record.status = status;
        self.record.error = error;
        let now = records::now();
        self.record.ended_at = Some(now);
        self.record.updated_at = now;
        let replicated = self.record.attempt > 1 || self.archive.is_claimed(&self.record.run_id, 2);
        if status == Status::Completed && replicated {
            // Attempts finishing at once take turns, so the later one always sees the
            // earlier one's final row and compares with it.
            let turn = open_lock_file(
                &self
                    .archive
                    .path("_claims")
                    .join(format!("{}.finish.lock", self.record.run_id)),
            )?;
            crate::archive::lock_blocking(&turn)?;
            self.compare_with_reference()?;
            self.write_row()?;
        } else {
            self.write_row()?;
        }
        // The final row goes into the runs cache now, while it is at hand, so the first
        // listing after this run does not decode its file. Best effort: it is archived.
        let path = row_path(&self.archive, self.day, &self.record);
        let _ = RunsCache::add_recent(self.archive.root(), &path, &self.record);
        // The run is no longer live.
        self.claim.take();
        if let Some(e) = unflushed {
            return Err(e);
        }
        crate::compact::auto(&self.archive, self.day)?;
        Ok(self.record.clone())
    }

    /// Compare every metric bit for bit with the first attempt of the same identity that
    /// completed before this one (attempts may run at once, so "first" is by finish time),
    /// and record whether it reproduced and where it first diverged.
    fn compare_with_reference(&mut self) -> Result<()> {
        let runs = self.archive.raw_runs()?.value;
        let Some(reference) = runs
            .iter()
            .filter(|r| r.run_id == self.record.run_id && r.attempt != self.record.attempt)
            .filter(|r| r.status == Status::Completed)
            .min_by_key(|r| (r.ended_at, r.attempt))
        else {
            return Ok(());
        };
        let theirs = self.archive.metrics(reference)?.value;
        let mine = self.archive.metrics(&self.record)?.value;
        let diverged = first_divergence(&theirs, &mine);
        self.record.reproduced = Some(diverged.is_none());
        self.record.diverged_step = diverged;
        Ok(())
    }

    fn write_row(&self) -> Result<()> {
        write_run_row(
            &row_path(&self.archive, self.day, &self.record),
            &self.record,
        )
    }

    /// When the run started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.record.started_at
    }
}

impl Drop for RunWriter {
    fn drop(&mut self) {
        if self.claim.is_some() {
            let _ = self.finish_in_place(
                Status::Interrupted,
                Some("the run was dropped before finish(): archived as interrupted".into()),
            );
        }
    }
}

/// Whether an archive error is a full disk (or a full quota).
fn is_disk_full(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if source.raw_os_error().is_some_and(|code| code == libc::ENOSPC || code == libc::EDQUOT))
}

/// Where a run attempt's row file lives: its start day's folder of `runs`.
pub(crate) fn row_path(archive: &Archive, day: NaiveDate, record: &RunRecord) -> PathBuf {
    day_dir(archive.root(), Table::Runs, day)
        .join(format!("{}-a{}.parquet", record.run_id, record.attempt))
}

fn write_run_row(path: &std::path::Path, record: &RunRecord) -> Result<()> {
    files::write_parquet(
        path,
        Table::Runs,
        &records::runs_to_batch(std::slice::from_ref(record))?,
    )?;
    crate::compact::remember_written(path, record);
    Ok(())
}

/// The first step at which two curves differ in any metric (bit for bit, so a NaN equals
/// the same NaN), or `None` when they are identical.
pub fn first_divergence(a: &[MetricPoint], b: &[MetricPoint]) -> Option<i64> {
    fn by_step(points: &[MetricPoint]) -> BTreeMap<i64, BTreeMap<&str, u64>> {
        let mut steps: BTreeMap<i64, BTreeMap<&str, u64>> = BTreeMap::new();
        for p in points {
            steps
                .entry(p.step)
                .or_default()
                .insert(&p.name, p.value.to_bits());
        }
        steps
    }
    let (a, b) = (by_step(a), by_step(b));
    a.keys()
        .chain(b.keys())
        .copied()
        .collect::<std::collections::BTreeSet<i64>>()
        .into_iter()
        .find(|step| a.get(step) != b.get(step))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(step: i64, name: &str, value: f64) -> MetricPoint {
        MetricPoint {
            step,
            name: name.into(),
            value,
            wall_time: Utc::now(),
        }
    }

    #[test]
    fn divergence_is_the_first_differing_step() {
        let a = vec![
            point(0, "loss", 2.0),
            point(1, "loss", 1.0),
            point(2, "loss", 0.5),
        ];
        let mut b = a.clone();
        assert_eq!(first_divergence(&a, &b), None);
        b[2].value = 0.5000001;
        assert_eq!(first_divergence(&a, &b), Some(2));
        b.pop();
        assert_eq!(first_divergence(&a, &b), Some(2));
        let nan = vec![point(0, "loss", f64::NAN)];
        assert_eq!(first_divergence(&nan, &nan.clone()), None);
    }
}

#[cfg(test)]
pub(crate) mod archive_tests {
    use super::*;
    use crate::{CodeState, DataFingerprint, Environment};
    use serde_json::json;

    pub(crate) fn spec(name: &str, seed: u64) -> RunSpec {
        let identity = Identity {
            config: json!({"lr": 0.001, "hidden": 32}),
            seeds: [("init".to_string(), seed)].into(),
            data: DataFingerprint {
                name: "toy".into(),
                hash: "00".into(),
                details: json!(null),
            },
            code: CodeState::outside_git(),
            env: Environment::capture(),
        };
        RunSpec::new(name, identity)
    }

    pub(crate) fn train(archive: &Archive, seed: u64, wobble: f64) -> RunRecord {
        let mut run = archive.begin_run(spec("toy", seed)).unwrap();
        for step in 0..10 {
            let loss = 1.0 / (step as f64 + 1.0) + if step >= 7 { wobble } else { 0.0 };
            run.log_all(step, &[("loss", loss), ("acc", 1.0 - loss)])
                .unwrap();
        }
        run.finish(Status::Completed, None).unwrap()
    }

    #[test]
    fn several_runs_curves_come_back_each_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let (a, b) = (train(&archive, 1, 0.0), train(&archive, 2, 0.5));
        let replicate = train(&archive, 1, 0.25); // a@2: same run id as a
        let loaded = archive.metrics_of_runs(&[&b, &a, &replicate, &b]).unwrap();
        assert!(loaded.damaged.is_empty());
        let points = loaded.value;
        assert_eq!(points.len(), 4);
        for (run, got) in [&b, &a, &replicate, &b].iter().zip(&points) {
            assert_eq!(got, &archive.metrics(run).unwrap().value);
            assert_eq!(got.len(), 20);
        }
        assert_ne!(points[1], points[2]);
    }

    #[test]
    fn begin_log_finish_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let done = train(&archive, 1, 0.0);
        let runs = archive.runs().unwrap();
        assert!(runs.damaged.is_empty());
        assert_eq!(runs.value, vec![done.clone()]);
        assert_eq!(done.summary["loss"], 0.1);
        assert_eq!(done.last_step, Some(9));
        let points = archive.metrics(&done).unwrap().value;
        assert_eq!(points.len(), 20);
        assert!(!archive.is_live(&done.run_id, 1));
    }

    #[test]
    fn replicates_are_attempts_and_nondeterminism_is_marked_on_both() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let first = train(&archive, 1, 0.0);
        let same = train(&archive, 1, 0.0);
        assert_eq!(
            (same.run_id.clone(), same.attempt, same.reproduced),
            (first.run_id.clone(), 2, Some(true))
        );
        let odd = train(&archive, 1, 1e-9);
        assert_eq!(
            (odd.attempt, odd.reproduced, odd.diverged_step),
            (3, Some(false), Some(7))
        );
        let runs = archive.runs().unwrap().value;
        let first_read = runs.iter().find(|r| r.attempt == 1).unwrap();
        assert_eq!(
            (first_read.reproduced, first_read.diverged_step),
            (Some(false), Some(7))
        );
        let other_seed = train(&archive, 2, 0.0);
        assert_ne!(other_seed.run_id, first.run_id);
        assert_eq!(other_seed.group_id, first.group_id);
    }

    #[test]
    fn runs_where_is_runs_then_filter() {
        use crate::query::{filter_runs, Condition};
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        train(&archive, 1, 0.0);
        train(&archive, 1, 1e-9); // a replicate that diverges: both attempts are marked
        train(&archive, 2, 0.0);
        train(&archive, 3, 0.5);
        let mut live = archive.begin_run(spec("live", 4)).unwrap();
        live.log(0, "loss", 1.0).unwrap();
        live.flush().unwrap();
        let all = archive.runs().unwrap().value;
        for conditions in [
            vec!["seeds.init=1"],
            vec!["seeds.init=1", "reproduced=false"],
            vec!["seeds.init!=1", "summary.loss<0.2"],
            vec!["config.lr=0.001", "status=running"],
            vec!["config.hidden>32"],
            vec!["env.nothing.here!=1", "name=toy"],
            vec![],
        ] {
            let parsed: Vec<Condition> = conditions
                .iter()
                .map(|c| Condition::parse(c).unwrap())
                .collect();
            // Rows read from the runs cache, and from the Parquet files alone.
            let found = archive.runs_where(&parsed).unwrap().value;
            assert_eq!(found, filter_runs(all.clone(), &parsed), "{conditions:?}");
            fs::remove_file(archive.root().join(crate::cache::CACHE_FILE)).unwrap();
            let found = archive.runs_where(&parsed).unwrap().value;
            assert_eq!(found, filter_runs(all.clone(), &parsed), "{conditions:?}");
        }
        // The conditions select what they say (the comparison above is not vacuous).
        let one = |c: &str| archive.runs_where(&[Condition::parse(c).unwrap()]).unwrap();
        assert_eq!(one("seeds.init=1").value.len(), 2);
        assert_eq!(one("status=running").value.len(), 1);
        assert_eq!(one("config.hidden>32").value.len(), 0);
        live.finish(Status::Completed, None).unwrap();
    }

    #[test]
    fn finishing_writers_merge_the_days_row_files_but_not_a_live_runs_row() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let mut live = archive.begin_run(spec("live", 999)).unwrap();
        live.log(0, "loss", 1.0).unwrap();
        live.flush().unwrap();
        let names = || -> Vec<String> {
            crate::files::list_table(archive.root(), crate::schema::Table::Runs)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let merged =
            |names: &[String]| names.iter().filter(|n| n.starts_with("compacted-")).count();
        let (fresh, merges) = (
            crate::compact::AUTO_COMPACT_ROWS as u64,
            crate::compact::AUTO_COMPACT_MERGED as u64,
        );
        let mut finished: Vec<RunRecord> = (0..2 * fresh)
            .map(|seed| train(&archive, seed, 0.0))
            .collect();
        // The second merge took the rows written since the first, not the first's file.
        let two = names();
        assert_eq!(merged(&two), 2, "{two:?}");
        // Once there are enough merged files, the next finish merges them into one.
        finished.extend((2 * fresh..fresh * merges + 1).map(|seed| train(&archive, seed, 0.0)));
        let names = names();
        assert_eq!(merged(&names), 1, "{names:?}");
        assert!(names.len() < crate::compact::AUTO_COMPACT_ROWS, "{names:?}");
        let live_file = format!("{}-a1.parquet", live.run_id());
        assert!(names.contains(&live_file), "{names:?}");
        let runs = archive.runs().unwrap().value;
        assert_eq!(runs.len(), finished.len() + 1);
        assert!(runs.iter().any(|r| r.status == Status::Running));
        // The merged files hold exactly what was written (rows taken from memory or read).
        let key = |r: &RunRecord| (r.run_id.clone(), r.attempt);
        let mut kept: Vec<RunRecord> = runs.into_iter().filter(|r| r.name != "live").collect();
        kept.sort_by_key(key);
        finished.sort_by_key(key);
        assert_eq!(kept, finished);
        drop(live);
    }

    #[test]
    fn issue_24_finishing_writers_merge_by_level_so_a_row_is_merged_again_once_per_level() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let (fresh, merges) = (
            crate::compact::AUTO_COMPACT_ROWS as u64,
            crate::compact::AUTO_COMPACT_MERGED as u64,
        );
        // 32 rows make a level-1 file, 4 of those one of level 2, 4 of those one of level 3;
        // each merge happens at the finish after the one that completed its sources.
        let runs = fresh * merges * merges + 2;
        for seed in 0..runs {
            train(&archive, seed, 0.0);
        }
        let names: Vec<String> =
            crate::files::list_table(archive.root(), crate::schema::Table::Runs)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
        // One file of level 3 and the two rows written since.
        let merged: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with("compacted-"))
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(merged.len(), 1, "{names:?}");
        assert!(merged[0].starts_with("compacted-L3-"), "{names:?}");
        assert_eq!(archive.runs().unwrap().value.len(), runs as usize);
    }

    #[test]
    fn a_compaction_lock_that_cannot_be_opened_never_fails_a_finish() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        // A folder where the lock file should be: opening it fails, as it would for a lock
        // file another user owns.
        fs::create_dir(archive.root().join("_compact.lock")).unwrap();
        let runs = crate::compact::AUTO_COMPACT_ROWS as u64 + 1;
        for seed in 0..runs {
            train(&archive, seed, 0.0);
        }
        assert_eq!(archive.runs().unwrap().value.len(), runs as usize);
    }

    #[test]
    fn a_run_that_ends_within_its_interval_writes_only_its_final_row() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let hour = FlushPolicy {
            interval: Duration::from_secs(3600),
            ..FlushPolicy::default()
        };
        let mut run = archive.begin_run_with(spec("short", 1), hour).unwrap();
        run.log(0, "loss", 1.0).unwrap();
        assert!(archive.runs().unwrap().value.is_empty());
        let done = run.finish(Status::Completed, None).unwrap();
        let files = crate::files::list_table(archive.root(), Table::Runs).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(archive.runs().unwrap().value, vec![done.clone()]);
        assert_eq!(archive.metrics(&done).unwrap().value.len(), 1);
    }

    #[test]
    fn a_run_that_logs_nothing_is_listed_as_running_after_its_interval() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let soon = FlushPolicy {
            interval: Duration::from_millis(50),
            ..FlushPolicy::default()
        };
        let run = archive.begin_run_with(spec("setting up", 1), soon).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listed = loop {
            let runs = archive.runs().unwrap().value;
            if !runs.is_empty() || Instant::now() > deadline {
                break runs;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(listed.len(), 1, "the timer never committed the running row");
        assert_eq!(listed[0].status, Status::Running);
        drop(run);
        assert_eq!(archive.runs().unwrap().value[0].status, Status::Interrupted);

        // Flushing by points only: the running row goes with the first chunk.
        let never = FlushPolicy {
            points: 1,
            interval: Duration::MAX,
        };
        let mut run = archive
            .begin_run_with(spec("points only", 2), never)
            .unwrap();
        run.log(0, "loss", 1.0).unwrap();
        let runs = archive.runs().unwrap().value;
        let by_points = runs.iter().find(|r| r.name == "points only").unwrap();
        assert_eq!(by_points.status, Status::Running);
    }

    #[test]
    fn dropped_writer_is_interrupted_and_keeps_its_points() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        {
            let mut run = archive.begin_run(spec("dropped", 1)).unwrap();
            run.log(0, "loss", 2.0).unwrap();
            run.log(1, "loss", f64::NAN).unwrap();
        }
        let run = &archive.runs().unwrap().value[0];
        assert_eq!((run.status, run.last_step), (Status::Interrupted, Some(1)));
        assert!(archive.metrics(run).unwrap().value[1].value.is_nan());
    }

    /// A live run "chunks" that logged `steps` losses in chunks of `points`.
    fn logged_in_chunks(archive: &Archive, points: usize, steps: i64) -> RunWriter {
        let mut run = archive.begin_run(spec("chunks", 1)).unwrap();
        run.set_flush_policy(FlushPolicy {
            points,
            interval: Duration::from_secs(60),
        });
        for step in 0..steps {
            run.log(step, "loss", step as f64).unwrap();
        }
        run
    }

    #[test]
    fn small_chunks_and_compaction_keep_every_point_once() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let run = logged_in_chunks(&archive, 3, 10);
        let live = archive.runs().unwrap().value;
        assert_eq!(live[0].status, Status::Running);
        // Live runs are not compacted.
        let plan = crate::compact::plan(&archive).unwrap();
        assert!(plan
            .iter()
            .all(|a| !matches!(a, crate::compact::Action::MergeMetrics { .. })));
        let done = run.finish(Status::Completed, None).unwrap();
        train(&archive, 2, 0.0);
        let report =
            crate::compact::execute(&archive, &crate::compact::plan(&archive).unwrap()).unwrap();
        assert!(report.files_after < report.files_before, "{report:?}");
        let points = archive.metrics(&done).unwrap().value;
        assert_eq!(
            points.iter().map(|p| p.step).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(archive.runs().unwrap().value.len(), 2);
        // Compacting again is a no-op.
        assert!(crate::compact::plan(&archive).unwrap().is_empty());
    }

    #[test]
    fn a_long_sweep_is_compacted_as_it_finishes_and_damage_stays_put() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let first = train(&archive, 0, 0.0);
        let day = crate::files::day_dir(archive.root(), Table::Runs, first.started_at.date_naive());
        fs::write(day.join("broken.parquet"), b"PAR1 torn").unwrap();
        for seed in 1..40 {
            train(&archive, seed, 0.0);
        }
        let files = crate::files::list_table(archive.root(), Table::Runs).unwrap();
        assert!(files.len() < 20, "{} row files after 40 runs", files.len());
        assert!(
            files.iter().any(|f| f.ends_with("broken.parquet")),
            "a damaged file is never merged away"
        );
        let runs = archive.runs().unwrap();
        assert_eq!(runs.value.len(), 40);
        assert_eq!(runs.damaged.len(), 1);
    }

    #[test]
    fn damaged_and_foreign_files_are_named_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let good = train(&archive, 1, 0.0);
        let day = crate::files::day_dir(archive.root(), Table::Runs, good.started_at.date_naive());
        let bad = day.join("zz-truncated-a1.parquet");
        let bytes = fs::read(day.join(format!("{}-a1.parquet", good.run_id))).unwrap();
        fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
        let runs = archive.runs().unwrap();
        assert_eq!(runs.value.len(), 1);
        assert_eq!(runs.damaged.len(), 1);
        assert!(runs.damaged[0]
            .to_string()
            .contains("zz-truncated-a1.parquet"));
    }

    #[test]
    fn a_file_whose_columns_are_renamed_is_damaged() {
        use parquet::file::metadata::KeyValue;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("renamed.parquet");
        let batch = records::metrics_to_batch("ab", 1, &[]).unwrap();
        let fields: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "step" => f.as_ref().clone().with_name("epoch"),
                _ => f.as_ref().clone(),
            })
            .collect();
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
        let batch =
            arrow::array::RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                crate::schema::KEY_VERSION.into(),
                crate::schema::SCHEMA_VERSION.to_string(),
            )]))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            schema,
            Some(props),
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let err = crate::files::read_parquet(&path, Table::Metrics).unwrap_err();
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("epoch"), "{err}");
    }

    #[test]
    fn a_run_with_a_foreign_chunk_is_not_merged_and_the_chunk_stays_named() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let run = logged_in_chunks(&archive, 2, 6)
            .finish(Status::Completed, None)
            .unwrap();
        // Its second chunk replaced by one holding another run's points.
        let day =
            crate::files::day_dir(archive.root(), Table::Metrics, run.started_at.date_naive());
        let second = day.join(format!("{}-a1-c000002.parquet", run.run_id));
        let points = vec![MetricPoint {
            step: 9,
            name: "loss".into(),
            value: 0.0,
            wall_time: Utc::now(),
        }];
        crate::files::write_parquet(
            &second,
            Table::Metrics,
            &records::metrics_to_batch("ffff", 1, &points).unwrap(),
        )
        .unwrap();
        crate::compact::execute(&archive, &crate::compact::plan(&archive).unwrap()).unwrap();
        let loaded = archive.metrics(&run).unwrap();
        assert_eq!(loaded.damaged.len(), 1, "{:?}", loaded.damaged);
        assert!(loaded.damaged[0].to_string().contains("c000002"));
        assert_eq!(loaded.value.len(), 4);
    }

    #[test]
    fn other_schema_versions_say_what_to_do() {
        use parquet::file::metadata::KeyValue;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.parquet");
        let batch = records::metrics_to_batch("ab", 1, &[]).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                crate::schema::KEY_VERSION.into(),
                "99".to_string(),
            )]))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            Some(props),
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let err = crate::files::read_parquet(&path, Table::Metrics)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("schema version \"99\"") && err.contains("HINT"),
            "{err}"
        );
    }
}
