//! Tracking a loop of one's own: a training loop written by hand in a notebook cell (plain
//! candle) archived like a [`fit`](crate::train::fit) run, as MLflow's `start_run`,
//! `log_metric` and `end_run` would, with recipe's identity.
//!
//! ```no_run
//! use recipe::prelude::*;
//! # fn main() -> recipe::Result<()> {
//! let data = Dataset::digits()?;
//! let config = serde_json::json!({"lr": 1e-3, "hidden": 64});
//! let mut run = track("my-loop", &config, &Seeds::all(1), &data)?;
//! run.show_progress(100);
//! for step in 0..100 {
//!     let loss = 2.3 / (step + 1) as f64; // one step of the loop, seeded from Seeds::all(1)
//!     run.log(step, &[("train_loss", loss)])?;
//! }
//! let record = run.finish()?;
//! assert_eq!(record.status, Status::Completed);
//! # Ok(()) }
//! ```
//!
//! What a tracked run gets:
//! 1. the identity a `fit` run gets ([`run_spec_of`]: config, seeds, data fingerprint, code
//!    with the cell running now, environment), archived before the first step; the same
//!    identity again is a replicate (attempt 2, 3...);
//! 2. every logged value, written through the archive's [`RunWriter`] in chunks;
//! 3. an end that says what happened: `completed` by [`Tracker::finish`]; `failed` by
//!    [`Tracker::fail`], by an error out of [`Tracker::run_loop`], or by the tracker being
//!    dropped unfinished (a `?` or a panic in the cell); `diverged` at the first NaN or
//!    infinite value; `interrupted` at the first [`Tracker::log`] after a stop request (the
//!    kernel's interrupt). Never `running` or `completed` by accident.
//!
//! What it is not: a trainer. It seeds, builds, steps and evaluates nothing; the seeds it
//! archives are the ones the loop says it uses, and a loop that ignores them archives runs
//! whose replicates will not reproduce. The trainer's divergence rule (a loss far above its
//! value at init) needs the loss at init, which only `fit` measures; here only non-finite
//! values end a run.

use crate::config::Seeds;
use crate::data::Dataset;
use crate::progress::Progress;
use crate::train::{run_spec_of, RunOptions, StopWatch};
use crate::{Error, Result};
use recipe_archive::{RunRecord, RunWriter, Status};
use serde::Serialize;

/// The key of a run's code component (`code.runtime`) that names the loop that trained it,
/// and its value for a tracked loop. A run of the built-in trainer has no such key.
pub const TRAINER_KEY: &str = "trainer";
pub const TRACKED: &str = "own loop (track)";

/// Whether an archived run was made by a tracked loop.
pub fn is_tracked(run: &RunRecord) -> bool {
    run.components[3]["runtime"][TRAINER_KEY] == TRACKED
}

/// Why a tracker dropped unfinished, outside a panic, ended its run as failed.
const DROPPED: &str = "dropped before finish(): the cell ended by an error, or the tracker \
                       went out of scope; call finish() to archive a run as completed";
/// Why a tracker dropped while its thread panicked ended its run as failed.
const PANICKED: &str =
    "panicked before finish(): the loop panicked (the panic's message is in the cell's output)";

/// Begin a tracked run named `name` in the default archive (`$RECIPE_ARCHIVE` or `./runs`).
///
/// `config` is anything serde serializes to JSON: a struct of one's own, a
/// `serde_json::json!` value, a [`TrainConfig`](crate::TrainConfig). `seeds` are the ones
/// the loop uses; `data` is fingerprinted into the identity. Log with [`Tracker::log`] and
/// end with [`Tracker::finish`]. Fails, archiving nothing, when the archive cannot be opened
/// or the config does not serialize.
pub fn track(
    name: &str,
    config: &impl Serialize,
    seeds: &Seeds,
    data: &Dataset,
) -> Result<Tracker> {
    Tracker::begin(config, seeds, data, &RunOptions::named(name)?)
}

/// Run `body` as a tracked run named `name` in the default archive: `completed` when it
/// returns `Ok`, `failed` with the error's text when it returns `Err` (the error is returned
/// as it was), `interrupted` or `diverged` when a [`Tracker::log`] inside it says so (its
/// error is returned), `failed` when it panics. Returns the archived run.
///
/// ```no_run
/// use recipe::prelude::*;
/// # fn main() -> recipe::Result<()> {
/// let data = Dataset::digits()?;
/// let run = track_loop("sgd", &serde_json::json!({"lr": 0.1}), &Seeds::all(1), &data, |run| {
///     for step in 0..10 {
///         run.log(step, &[("train_loss", 1.0 / (step + 1) as f64)])?;
///     }
///     Ok(())
/// })?;
/// assert_eq!(run.last_step, Some(9));
/// # Ok(()) }
/// ```
pub fn track_loop(
    name: &str,
    config: &impl Serialize,
    seeds: &Seeds,
    data: &Dataset,
    body: impl FnOnce(&mut Tracker) -> Result<()>,
) -> Result<RunRecord> {
    track(name, config, seeds, data)?.run_loop(body)
}

/// A run being tracked: log values into it, then [`Tracker::finish`] it.
///
/// Dropped unfinished, it ends the run as `failed` with the reason (a panic, or a cell that
/// ended by an error), so an archive never holds a tracked run that claims to be running or
/// completed when it is neither.
pub struct Tracker {
    /// The open run; `None` once it has ended.
    writer: Option<RunWriter>,
    /// `run_id@attempt`, and its short form for messages.
    key: String,
    short: String,
    /// How the run ended ("diverged: ..."), once it has.
    ended: Option<String>,
    stop: StopWatch,
    name: String,
    quiet: bool,
    progress: Option<Progress>,
}

impl Tracker {
    /// Begin a tracked run as `options` say: its name, archive (required: a tracked run
    /// exists to be archived), recipe step, parent, sweep, cell provenance and stop flag
    /// (`None` obeys [`request_stop`](crate::request_stop)). `RunOptions::quiet` turns
    /// [`Tracker::show_progress`] off.
    ///
    /// The identity is archived now, before the loop's first step; the same identity again
    /// is a replicate. Fails, archiving nothing, without an archive or when the config does
    /// not serialize to JSON.
    pub fn begin(
        config: &impl Serialize,
        seeds: &Seeds,
        data: &Dataset,
        options: &RunOptions,
    ) -> Result<Tracker> {
        let archive = options.archive.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "tracked run {:?} has no archive to go to; use RunOptions::named(name) (the default archive) or RunOptions::in_archive(archive, name)",
                options.name
            ))
        })?;
        let config = serde_json::to_value(config).map_err(|e| {
            Error::Invalid(format!(
                "the config of tracked run {:?} does not serialize to JSON: {e}; a struct deriving Serialize, a map with string keys or a serde_json::json! value does",
                options.name
            ))
        })?;
        let mut spec = run_spec_of(data, config, seeds, options)?;
        // The loop is the cell's code, not the built-in trainer: a tracked run of a
        // TrainConfig is another program than a fit of it (and is verified by replay).
        spec.identity
            .code
            .runtime
            .insert(TRAINER_KEY.into(), TRACKED.into());
        let writer = archive.begin_run(spec)?;
        let record = writer.record();
        Ok(Tracker {
            key: record.key(),
            short: record.short(),
            writer: Some(writer),
            ended: None,
            stop: StopWatch::new(&options.stop),
            name: options.name.clone(),
            quiet: options.quiet,
            progress: None,
        })
    }

    /// The archived run's key, `run_id@attempt`: what `Archive::find` and `recipe runs` take.
    pub fn run_id(&self) -> &str {
        &self.key
    }

    /// Show the run's progress towards `total_steps` steps: a line and a loss plot updated
    /// in place in a notebook, a `\r` line on stderr in a terminal. From now on each
    /// [`Tracker::log`] of `train_loss` or `val_loss` updates it, redrawn at most four
    /// times a second and always at step `total_steps - 1`. Does nothing when the run's
    /// options are quiet.
    pub fn show_progress(&mut self, total_steps: usize) {
        if !self.quiet {
            self.progress = Some(Progress::new(&self.name, total_steps));
        }
    }

    /// Log values of `step` (counted from 0), each `(metric name, value)`. A run's steps need
    /// not be consecutive; a metric's last value is its summary value when the run ends.
    ///
    /// Ends the run and returns an error, so that a `?` ends the cell:
    /// - a NaN or infinite value: the run is `diverged`, its reason naming the metric and
    ///   the step (the values of that step are archived first);
    /// - a stop requested since the run began (the kernel's interrupt): the run is
    ///   `interrupted` at this step, whose values are archived;
    /// - a value the archive refuses (an empty metric name) or cannot write: `failed` with
    ///   the archive's error;
    /// - a run that has already ended: nothing is logged.
    pub fn log(&mut self, step: usize, values: &[(&str, f64)]) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(self.already_ended());
        };
        if let Err(e) = writer.log_all(step as i64, values) {
            return Err(self.end_early(Status::Failed, e.to_string()));
        }
        if let Some((name, value)) = values.iter().find(|(_, v)| !v.is_finite()) {
            let reason = format!("{name} became {value} at step {step}");
            return Err(self.end_early(Status::Diverged, reason));
        }
        if self.stop.stop() {
            let reason = format!("interrupted at step {step}");
            return Err(self.end_early(Status::Interrupted, reason));
        }
        if let Some(p) = self.progress.as_mut() {
            for &(name, value) in values {
                match name {
                    "train_loss" => p.train_loss(step, value),
                    "val_loss" => p.val_loss(step, value),
                    _ => {}
                }
            }
            p.show_now_and_then(step + 1 >= p.steps());
        }
        Ok(())
    }

    /// End the run as `completed` and return its archived record (status, summary of each
    /// metric's last value, last step, and for a replicate whether it reproduced the first
    /// attempt bit for bit). Fails when the run has already ended (diverged or interrupted
    /// by a [`Tracker::log`]) or the archive cannot write its final row.
    pub fn finish(mut self) -> Result<RunRecord> {
        self.end(Status::Completed, None)
    }

    /// End the run as `failed` with `reason` (an error, or a sentence) and return its
    /// archived record. Fails when the run has already ended.
    pub fn fail(mut self, reason: impl std::fmt::Display) -> Result<RunRecord> {
        self.end(Status::Failed, Some(reason.to_string()))
    }

    /// Run `body` as this run's loop and end the run by its outcome; see [`track_loop`],
    /// which is this with the default archive.
    pub fn run_loop(mut self, body: impl FnOnce(&mut Tracker) -> Result<()>) -> Result<RunRecord> {
        match body(&mut self) {
            Ok(()) => self.finish(),
            // A log inside the loop ended the run (diverged, interrupted) and said so.
            Err(e) if self.writer.is_none() => Err(e),
            Err(e) => match self.end(Status::Failed, Some(e.to_string())) {
                Ok(_) => Err(e),
                Err(archive) => Err(Error::Invalid(format!(
                    "{e}; and run {} could not be archived as failed: {archive}",
                    self.short
                ))),
            },
        }
    }

    /// Finish the run with `status` and `reason`, once.
    fn end(&mut self, status: Status, reason: Option<String>) -> Result<RunRecord> {
        let Some(writer) = self.writer.take() else {
            return Err(self.already_ended());
        };
        self.ended = Some(match &reason {
            Some(reason) => format!("{status}: {reason}"),
            None => status.to_string(),
        });
        if let Some(p) = self.progress.as_mut() {
            p.show();
            p.finish();
        }
        Ok(writer.finish(status, reason)?)
    }

    /// End the run from inside [`Tracker::log`]; the error that `log` returns.
    fn end_early(&mut self, status: Status, reason: String) -> Error {
        match self.end(status, Some(reason.clone())) {
            // The archive may record another status than asked (a chunk it could not
            // write makes the run failed): the message says what was archived.
            Ok(record) => Error::Invalid(format!(
                "{reason}; run {} archived as {}",
                self.short, record.status
            )),
            Err(archive) => Error::Invalid(format!(
                "{reason}; and run {} could not be archived: {archive}",
                self.short
            )),
        }
    }

    fn already_ended(&self) -> Error {
        Error::Invalid(format!(
            "run {} has already ended ({}); begin a new run with track(..)",
            self.short,
            self.ended.as_deref().unwrap_or("ended")
        ))
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if self.writer.is_none() {
            return;
        }
        let reason = if std::thread::panicking() {
            PANICKED
        } else {
            DROPPED
        };
        if let Err(e) = self.end(Status::Failed, Some(reason.into())) {
            eprintln!(
                "warning: run {} could not be archived as failed: {e}",
                self.short
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::testing::{archived, small_mlp};
    use recipe_archive::{Archive, MetricPoint};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A config of one's own, as a notebook would write it.
    #[derive(Serialize)]
    struct Sgd {
        lr: f64,
        hidden: usize,
        optimizer: &'static str,
    }

    const SGD: Sgd = Sgd {
        lr: 0.05,
        hidden: 32,
        optimizer: "sgd",
    };

    fn data() -> Dataset {
        Dataset::digits().unwrap()
    }

    /// A tracked run in `dir`, begun with [`SGD`] and seeds 1.
    fn begin(dir: &std::path::Path, name: &str) -> Tracker {
        Tracker::begin(&SGD, &Seeds::all(1), &data(), &archived(dir, name)).unwrap()
    }

    /// The one run archived in `dir`, as a reader sees it.
    fn only_run(dir: &std::path::Path) -> RunRecord {
        let runs = Archive::open(dir).unwrap().runs().unwrap().value;
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs.into_iter().next().unwrap()
    }

    fn points(dir: &std::path::Path, run: &RunRecord, metric: &str) -> Vec<(i64, f64)> {
        let all: Vec<MetricPoint> = Archive::open(dir).unwrap().metrics(run).unwrap().value;
        all.iter()
            .filter(|p| p.name == metric)
            .map(|p| (p.step, p.value))
            .collect()
    }

    #[test]
    fn a_tracked_loop_archives_completed_with_its_metrics_and_its_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = begin(dir.path(), "own-loop");
        for step in 0..20 {
            let mut values = vec![("train_loss", 2.0 / (step + 1) as f64)];
            if step % 10 == 9 {
                values.push(("val_loss", 1.0 + step as f64 / 100.0));
            }
            run.log(step, &values).unwrap();
        }
        let key = run.run_id().to_string();
        let finished = run.finish().unwrap();
        assert_eq!(finished.key(), key);

        let read = only_run(dir.path());
        assert_eq!(read.status, Status::Completed);
        assert_eq!(read.error, None);
        assert_eq!(read.last_step, Some(19));
        assert_eq!(read.name, "own-loop");
        let train = points(dir.path(), &read, "train_loss");
        assert_eq!(train.len(), 20);
        assert_eq!(train[3], (3, 0.5));
        assert_eq!(
            points(dir.path(), &read, "val_loss"),
            vec![(9, 1.09), (19, 1.19)]
        );
        assert_eq!(read.summary["train_loss"], 0.1);
        assert_eq!(
            read.config(),
            &serde_json::json!({"hidden": 32, "lr": 0.05, "optimizer": "sgd"})
        );
        assert_eq!(read.components[1]["data_order"], 1);
    }

    #[test]
    fn a_tracked_train_config_has_fits_identity_but_for_the_loop_that_trained_it() {
        let dir = tempfile::tempdir().unwrap();
        let (data, config, seeds) = (data(), small_mlp(10, 5), Seeds::all(3));
        let options = archived(dir.path(), "by-hand");
        let run = Tracker::begin(&config, &seeds, &data, &options).unwrap();
        let record = run.finish().unwrap();
        let mut fit_spec = crate::train::run_spec(&data, &config, &seeds, &options).unwrap();
        assert_ne!(
            record.run_id,
            fit_spec.identity.hashes().unwrap().run_id.to_hex(),
            "a hand-written loop is not the built-in trainer"
        );
        assert!(is_tracked(&record));
        fit_spec
            .identity
            .code
            .runtime
            .insert(TRAINER_KEY.into(), TRACKED.into());
        assert_eq!(
            record.run_id,
            fit_spec.identity.hashes().unwrap().run_id.to_hex(),
            "everything else is fit's identity"
        );
        let serialized = serde_json::to_value(&config).unwrap();
        assert_eq!(
            record.config(),
            &recipe_archive::canonical::canonicalize(&serialized).unwrap(),
            "the config component is the serialized TrainConfig"
        );
        assert_eq!(record.config()["steps"], 10);
        let code = &record.components[3];
        assert_eq!(code["runtime"]["recipe"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn the_same_config_seeds_and_data_again_is_a_replicate_that_reproduces() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = Vec::new();
        for _ in 0..2 {
            let mut run = begin(dir.path(), "twice");
            for step in 0..5 {
                run.log(step, &[("train_loss", 1.0 / (step + 1) as f64)])
                    .unwrap();
            }
            records.push(run.finish().unwrap());
        }
        assert_eq!(records[0].run_id, records[1].run_id);
        assert_eq!((records[0].attempt, records[1].attempt), (1, 2));
        assert_eq!(records[1].reproduced, Some(true));

        let other_seeds = Tracker::begin(&SGD, &Seeds::all(2), &data(), &archived(dir.path(), "x"))
            .unwrap()
            .finish()
            .unwrap();
        assert_ne!(other_seeds.run_id, records[0].run_id);
        assert_eq!(other_seeds.attempt, 1);
    }

    #[test]
    fn a_tracker_dropped_before_finish_is_archived_failed_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut run = begin(dir.path(), "dropped");
            run.log(0, &[("train_loss", 1.0)]).unwrap();
            run.log(1, &[("train_loss", 0.9)]).unwrap();
        }
        let read = only_run(dir.path());
        assert_eq!(read.status, Status::Failed);
        assert_eq!(read.error.as_deref(), Some(DROPPED));
        assert_eq!(read.last_step, Some(1));
    }

    #[test]
    fn a_tracker_dropped_by_a_panic_is_archived_failed_as_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut run = begin(dir.path(), "panics");
            run.log(0, &[("train_loss", 1.0)]).unwrap();
            panic!("index out of bounds in the user's loop");
        }));
        assert!(panicked.is_err());
        let read = only_run(dir.path());
        assert_eq!(read.status, Status::Failed);
        assert_eq!(read.error.as_deref(), Some(PANICKED));
    }

    #[test]
    fn a_nan_ends_the_run_as_diverged_naming_the_metric_and_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = begin(dir.path(), "nan");
        for step in 0..5 {
            run.log(step, &[("train_loss", 1.0)]).unwrap();
        }
        let err = run
            .log(5, &[("train_loss", 0.5), ("grad_norm", f64::NAN)])
            .unwrap_err()
            .to_string();
        let short = only_run(dir.path()).short();
        assert_eq!(
            err,
            format!("grad_norm became NaN at step 5; run {short} archived as diverged")
        );
        let later = run.log(6, &[("train_loss", 0.4)]).unwrap_err().to_string();
        assert!(
            later.contains("has already ended (diverged: grad_norm became NaN at step 5)"),
            "{later}"
        );
        let finished = run.finish().unwrap_err().to_string();
        assert!(finished.contains("already ended"), "{finished}");

        let read = only_run(dir.path());
        assert_eq!(read.status, Status::Diverged);
        assert_eq!(
            read.error.as_deref(),
            Some("grad_norm became NaN at step 5")
        );
        assert_eq!(read.last_step, Some(5), "the step's values are archived");
        assert!(points(dir.path(), &read, "train_loss")
            .iter()
            .all(|(s, _)| *s <= 5));

        let inf = begin(dir.path(), "inf")
            .log(0, &[("val_loss", f64::INFINITY)])
            .unwrap_err()
            .to_string();
        assert!(inf.starts_with("val_loss became inf at step 0;"), "{inf}");
    }

    #[test]
    fn a_stop_request_makes_log_fail_and_the_run_interrupted_at_that_step() {
        let dir = tempfile::tempdir().unwrap();
        let token = Arc::new(AtomicBool::new(false));
        let options = RunOptions {
            stop: Some(token.clone()),
            ..archived(dir.path(), "stopped")
        };
        let mut run = Tracker::begin(&SGD, &Seeds::all(1), &data(), &options).unwrap();
        for step in 0..3 {
            run.log(step, &[("train_loss", 1.0)]).unwrap();
        }
        token.store(true, Ordering::SeqCst);
        let err = run.log(3, &[("train_loss", 0.9)]).unwrap_err().to_string();
        drop(run);

        let read = only_run(dir.path());
        assert_eq!(
            err,
            format!(
                "interrupted at step 3; run {} archived as interrupted",
                read.short()
            )
        );
        assert_eq!(read.status, Status::Interrupted, "not failed by the drop");
        assert_eq!(read.error.as_deref(), Some("interrupted at step 3"));
        assert_eq!(read.last_step, Some(3));
    }

    #[test]
    fn run_loop_fails_the_run_with_the_error_and_completes_it_on_ok() {
        let dir = tempfile::tempdir().unwrap();
        let failed = begin(dir.path(), "loader").run_loop(|run| {
            run.log(0, &[("train_loss", 1.0)])?;
            Err(Error::Data("the loader ran dry after 1 batch".into()))
        });
        assert!(
            matches!(&failed, Err(Error::Data(m)) if m == "the loader ran dry after 1 batch"),
            "the loop's own error comes back: {:?}",
            failed.map(|r| r.status)
        );
        let read = only_run(dir.path());
        assert_eq!(read.status, Status::Failed);
        assert_eq!(
            read.error.as_deref(),
            Some("the loader ran dry after 1 batch")
        );

        let dir = tempfile::tempdir().unwrap();
        let done = begin(dir.path(), "fine")
            .run_loop(|run| run.log(0, &[("train_loss", 1.0)]))
            .unwrap();
        assert_eq!(done.status, Status::Completed);
        assert_eq!(only_run(dir.path()).status, Status::Completed);
    }

    #[test]
    fn run_loop_stopped_by_a_request_is_interrupted_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let options = RunOptions {
            stop: Some(Arc::new(AtomicBool::new(true))),
            ..archived(dir.path(), "stopped-loop")
        };
        let result = Tracker::begin(&SGD, &Seeds::all(1), &data(), &options)
            .unwrap()
            .run_loop(|run| {
                for step in 0..100 {
                    run.log(step, &[("train_loss", 1.0)])?;
                }
                Ok(())
            });
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("interrupted at step 0;"), "{err}");
        let read = only_run(dir.path());
        assert_eq!(read.status, Status::Interrupted);
        assert_eq!(read.last_step, Some(0));
    }

    #[test]
    fn a_tracked_run_needs_an_archive_and_archives_nothing_without_one() {
        let refused = Tracker::begin(
            &SGD,
            &Seeds::all(1),
            &data(),
            &RunOptions::default().unarchived(),
        );
        let Err(Error::Invalid(message)) = refused else {
            panic!("a tracker without an archive began");
        };
        assert!(message.contains("RunOptions::named"), "{message}");
    }
}
