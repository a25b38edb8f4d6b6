//! The rows of the archive's tables as Rust values, and their conversion to and from Arrow
//! record batches (one batch per chunk of rows, never per row).

use crate::cache::{SUMMARY_NAMES, SUMMARY_VALUES};
use crate::schema::Table;
use crate::written_json::{component_json, json_text, parse_json, summary_from_json, summary_json};
use crate::{Error, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array,
    ListArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow::datatypes::{Float64Type, Int32Type};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started, with a live writer.
    Running,
    Completed,
    /// Stopped by an error in the user's code or the trainer.
    Failed,
    /// Stopped by the user, or its process died (read back from a `running` row whose writer
    /// is gone).
    Interrupted,
    /// Stopped because the loss became NaN or infinite.
    Diverged,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Interrupted,
        Status::Diverged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
            Status::Diverged => "diverged",
        }
    }

    pub fn parse(s: &str) -> Result<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown status {s:?}; expected one of running, completed, failed, interrupted, diverged"
            ))
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recipe check as recorded on a run: what was measured against what was expected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub measured: Value,
    pub expected: Value,
    #[serde(default)]
    pub note: String,
}

/// One row of the `runs` table.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    /// 1 for the first run of an identity, 2, 3... for replicates.
    pub attempt: u32,
    pub name: String,
    /// Which step of the recipe the run belongs to ("overfit", "regularize"...).
    pub recipe_step: Option<String>,
    /// The run this one changed one thing from (`run_id` or `run_id@attempt`).
    pub parent_run: Option<String>,
    pub sweep: Option<String>,
    pub status: Status,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub last_step: Option<i64>,
    /// Shared between the records that have the same one, like the component hashes.
    pub group_id: Arc<str>,
    /// Component hashes in the order of [`crate::identity::COMPONENTS`], shared between the
    /// runs that have the same one (as the components are).
    pub component_hashes: [Arc<str>; 5],
    /// Component values (canonical JSON) in the same order, shared between the runs that
    /// have the same one (a sweep's data, code and environment are one value in memory).
    pub components: [Arc<Value>; 5],
    /// Final value of each metric, plus any summary value the writer added. The names are
    /// shared between the records read together (`run.summary["loss"]` as with `String`s).
    pub summary: BTreeMap<Arc<str>, f64>,
    pub checks: Vec<Check>,
    /// Named blobs (checkpoints, snapshots): name -> blake3 hex.
    pub artifacts: BTreeMap<String, String>,
    pub error: Option<String>,
    pub reproduced: Option<bool>,
    pub diverged_step: Option<i64>,
    pub session_id: Option<String>,
    pub cell_execution: Option<i64>,
    pub cell_history_hash: Option<String>,
}

impl RunRecord {
    /// `run_id@attempt`, the unambiguous name of one attempt.
    pub fn key(&self) -> String {
        format!("{}@{}", self.run_id, self.attempt)
    }

    /// The first 12 hex digits of the run id, and `@n` for replicates: what tables show.
    pub fn short(&self) -> String {
        if self.attempt == 1 {
            self.run_id[..12.min(self.run_id.len())].to_string()
        } else {
            format!(
                "{}@{}",
                &self.run_id[..12.min(self.run_id.len())],
                self.attempt
            )
        }
    }

    /// Which of two versions of one attempt's row to keep: a finished row beats a running
    /// one, and among equals the later update wins.
    pub fn is_newer_than(&self, other: &RunRecord) -> bool {
        let rank = |r: &RunRecord| (r.status != Status::Running, r.updated_at);
        rank(self) > rank(other)
    }

    /// The config component: every hyperparameter, as canonical JSON.
    pub fn config(&self) -> &Value {
        &self.components[0]
    }

    /// The seeds component: one seed per source of randomness (`init`, `data_order`, ...).
    pub fn seeds(&self) -> &Value {
        &self.components[1]
    }

    /// The data component: the spec that reloads the data, its sizes and split hashes.
    pub fn data(&self) -> &Value {
        &self.components[2]
    }

    /// The data fingerprint: blake3 of the data component (content, labels, splits).
    pub fn data_fingerprint(&self) -> &str {
        &self.component_hashes[2]
    }

    /// The code component: git commit and uncommitted diff hash, the cell, the runtime.
    pub fn code(&self) -> &Value {
        &self.components[3]
    }

    /// The environment component: CPU, thread count, device, rustc and crate versions.
    pub fn env(&self) -> &Value {
        &self.components[4]
    }

    /// Seconds from start to end; `None` while the run has not ended.
    pub fn seconds(&self) -> Option<f64> {
        let ended = self.ended_at?;
        Some((ended - self.started_at).num_microseconds()? as f64 / 1e6)
    }
}

/// One metric value of one run at one step.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPoint {
    pub step: i64,
    pub name: String,
    pub value: f64,
    pub wall_time: DateTime<Utc>,
}

/// One row of the `cells` table: a cell the kernel executed.
#[derive(Clone, Debug, PartialEq)]
pub struct CellRecord {
    pub session_id: String,
    pub execution_count: i64,
    pub code: String,
    pub code_hash: String,
    /// blake3 over the hashes of the session's cells before this one.
    pub history_hash: String,
    /// `ok`, `failed` (the reason in `error`) or `aborted` (not run: an earlier cell failed
    /// or the user interrupted).
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub error: Option<String>,
}

/// The current time at the archive's resolution (microseconds), so what is written is what
/// reads back.
pub fn now() -> DateTime<Utc> {
    from_micros(Utc::now().timestamp_micros())
}

/// A completed run of group "g" named "m" with one summary metric `acc`, for tests.
#[cfg(test)]
pub(crate) fn test_run(id: &str, attempt: u32, reproduced: Option<bool>, acc: f64) -> RunRecord {
    RunRecord {
        run_id: id.into(),
        attempt,
        name: "m".into(),
        recipe_step: None,
        parent_run: None,
        sweep: None,
        status: Status::Completed,
        started_at: chrono::Utc::now(),
        ended_at: None,
        updated_at: chrono::Utc::now(),
        last_step: None,
        group_id: "g".into(),
        component_hashes: Default::default(),
        components: Default::default(),
        summary: [("acc".into(), acc)].into(),
        checks: vec![],
        artifacts: Default::default(),
        error: None,
        reproduced,
        diverged_step: None,
        session_id: None,
        cell_execution: None,
        cell_history_hash: None,
    }
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// `micros(Utc::now())`, without building a date on the way (a point is stamped with it).
pub(crate) fn now_micros() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => after.as_micros() as i64,
        Err(before) => -(before.duration().as_micros() as i64),
    }
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn utc_array(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(values).with_timezone("UTC"))
}

/// Rows of `runs` as one batch.
pub fn runs_to_batch(rows: &[RunRecord]) -> Result<RecordBatch> {
    let strs = |f: &dyn Fn(&RunRecord) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(rows.iter().map(f)))
    };
    let component = |i: usize| strs(&move |r: &RunRecord| Some(json_text(&*r.components[i])));
    let hash = |i: usize| strs(&move |r: &RunRecord| Some(r.component_hashes[i].to_string()));
    let columns: Vec<ArrayRef> = vec![
        strs(&|r| Some(r.run_id.clone())),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.attempt),
        )),
        strs(&|r| Some(r.name.clone())),
        strs(&|r| r.recipe_step.clone()),
        strs(&|r| r.parent_run.clone()),
        strs(&|r| r.sweep.clone()),
        strs(&|r| Some(r.status.as_str().to_string())),
        utc_array(rows.iter().map(|r| Some(micros(r.started_at)))),
        utc_array(rows.iter().map(|r| r.ended_at.map(micros))),
        utc_array(rows.iter().map(|r| Some(micros(r.updated_at)))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.last_step))),
        strs(&|r| Some(r.group_id.to_string())),
        hash(0),
        hash(1),
        hash(2),
        hash(3),
        hash(4),
        component(0),
        component(1),
        component(2),
        component(3),
        component(4),
        strs(&|r| Some(summary_json(&r.summary))),
        strs(&|r| Some(json_text(&r.checks))),
        strs(&|r| Some(json_text(&r.artifacts))),
        strs(&|r| r.error.clone()),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.reproduced))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.diverged_step))),
        strs(&|r| r.session_id.clone()),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.cell_execution))),
        strs(&|r| r.cell_history_hash.clone()),
    ];
    Ok(RecordBatch::try_new(Table::Runs.schema(), columns)?)
}

/// Points of one run attempt as one `metrics` batch.
pub fn metrics_to_batch(run_id: &str, attempt: u32, points: &[MetricPoint]) -> Result<RecordBatch> {
    let steps: Vec<i64> = points.iter().map(|p| p.step).collect();
    let values: Vec<f64> = points.iter().map(|p| p.value).collect();
    let wall_micros: Vec<i64> = points.iter().map(|p| micros(p.wall_time)).collect();
    let columns = MetricColumns {
        steps: &steps,
        names: points.iter().map(|p| p.name.as_str()).collect(),
        values: &values,
        wall_micros: &wall_micros,
    };
    metric_columns_to_batch(run_id, attempt, &columns)
}

/// Points of one run attempt column by column: the `i`-th point is `steps[i]`, `names[i]`...
pub struct MetricColumns<'a> {
    pub steps: &'a [i64],
    pub names: Vec<&'a str>,
    pub values: &'a [f64],
    pub wall_micros: &'a [i64],
}

/// [`metrics_to_batch`] from points held column by column.
pub fn metric_columns_to_batch(
    run_id: &str,
    attempt: u32,
    points: &MetricColumns,
) -> Result<RecordBatch> {
    let n = points.steps.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            run_id, n,
        ))),
        Arc::new(UInt32Array::from_iter_values(std::iter::repeat_n(
            attempt, n,
        ))),
        Arc::new(Int64Array::from(points.steps.to_vec())),
        Arc::new(StringArray::from_iter_values(points.names.iter())),
        Arc::new(Float64Array::from(points.values.to_vec())),
        utc_array(points.wall_micros.iter().map(|&t| Some(t))),
    ];
    Ok(RecordBatch::try_new(Table::Metrics.schema(), columns)?)
}

/// Rows of `cells` as one batch.
pub fn cells_to_batch(rows: &[CellRecord]) -> Result<RecordBatch> {
    let strs = |f: &dyn Fn(&CellRecord) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        strs(&|c| Some(c.session_id.clone())),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|c| c.execution_count),
        )),
        strs(&|c| Some(c.code.clone())),
        strs(&|c| Some(c.code_hash.clone())),
        strs(&|c| Some(c.history_hash.clone())),
        strs(&|c| Some(c.status.clone())),
        utc_array(rows.iter().map(|c| Some(micros(c.started_at)))),
        utc_array(rows.iter().map(|c| Some(micros(c.ended_at)))),
        strs(&|c| c.error.clone()),
    ];
    Ok(RecordBatch::try_new(Table::Cells.schema(), columns)?)
}

/// Typed access to a batch's columns by name, with errors that name the column.
struct Columns<'a>(&'a RecordBatch);

impl<'a> Columns<'a> {
    fn get<T: Array + 'static>(&self, name: &str) -> Result<&'a T> {
        self.0
            .column_by_name(name)
            .ok_or_else(|| Error::Format(format!("column {name:?} is missing")))?
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| Error::Format(format!("column {name:?} has an unexpected type")))
    }
    fn text(&self, name: &str) -> Result<&'a StringArray> {
        self.get(name)
    }
    fn dictionary(&self, name: &str) -> Result<Dictionary<'a>> {
        let column: &'a DictionaryArray<Int32Type> = self.get(name)?;
        let texts = column
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Format(format!("column {name:?} is not text")))?;
        // A damaged file can carry keys past its dictionary (the reader does not check them
        // when the dictionary is empty).
        let keys = column.keys();
        // As unsigned, a negative key is past any dictionary.
        let past = |k: i32| k as u32 as usize >= texts.len();
        let damaged = match keys.null_count() {
            // The largest key, found without a branch per key (the loop runs on vectors).
            0 => (keys.values().iter().map(|&k| k as u32).max()).is_some_and(|k| past(k as i32)),
            _ => keys.iter().flatten().any(past),
        };
        if damaged {
            return Err(Error::Format(format!(
                "column {name:?} points past its dictionary"
            )));
        }
        Ok(Dictionary { keys, texts })
    }
    fn int(&self, name: &str) -> Result<&'a Int64Array> {
        self.get(name)
    }
    fn time(&self, name: &str) -> Result<&'a TimestampMicrosecondArray> {
        self.get(name)
    }
}

fn opt_text(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

fn opt_int(a: &Int64Array, i: usize) -> Option<i64> {
    a.is_valid(i).then(|| a.value(i))
}

/// A text column read as a dictionary: its distinct values, and each row's key into them.
struct Dictionary<'a> {
    keys: &'a Int32Array,
    texts: &'a StringArray,
}

impl<'a> Dictionary<'a> {
    fn value(&self, row: usize) -> &'a str {
        self.texts.value(self.keys.value(row) as usize)
    }
}

/// A text column read as a dictionary (see [`Table::read_schema`]) whose distinct values are
/// each made into a `T` once and shared between the records: the runs of a sweep share
/// their data, code and environment (parsed JSON) and the hashes of them (strings).
struct Shared<'a, T> {
    name: &'static str,
    column: Dictionary<'a>,
    made: Vec<Option<T>>,
    /// Whether each distinct value passed the test of [`Shared::passes`].
    verdicts: Vec<Option<bool>>,
    make: fn(&str, &'static str) -> Result<T>,
}

impl<'a, T: Clone> Shared<'a, T> {
    fn new(
        batch: &'a RecordBatch,
        name: &'static str,
        make: fn(&str, &'static str) -> Result<T>,
    ) -> Result<Shared<'a, T>> {
        let column = Columns(batch).dictionary(name)?;
        let distinct = column.texts.len();
        Ok(Shared {
            name,
            made: std::iter::repeat_with(|| None).take(distinct).collect(),
            verdicts: vec![None; distinct],
            column,
            make,
        })
    }

    fn get(&mut self, row: usize) -> Result<T> {
        let key = self.column.keys.value(row) as usize;
        let slot = self
            .made
            .get_mut(key)
            .ok_or_else(|| Error::Format(format!("column {:?}: bad dictionary key", self.name)))?;
        if let Some(value) = slot {
            return Ok(value.clone());
        }
        let value = (self.make)(self.column.texts.value(key), self.name)?;
        *slot = Some(value.clone());
        Ok(value)
    }

    /// Whether a row's value passes `test`, which sees each distinct value once.
    fn passes(&mut self, row: usize, test: impl Fn(&T) -> bool) -> Result<bool> {
        let key = self.column.keys.value(row) as usize;
        if let Some(Some(verdict)) = self.verdicts.get(key) {
            return Ok(*verdict);
        }
        let verdict = test(&self.get(row)?);
        self.verdicts[key] = Some(verdict);
        Ok(verdict)
    }
}

/// The summaries of a `runs` batch: JSON texts as stored in Parquet, or names and values as
/// the runs cache keeps them ([`crate::cache::cache_schema`]).
enum Summaries<'a> {
    Texts(&'a StringArray),
    Columns {
        /// Each row's names, made once per distinct list.
        names: Shared<'a, Arc<[Arc<str>]>>,
        offsets: &'a [i32],
        values: &'a [f64],
    },
}

impl<'a> Summaries<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Summaries<'a>> {
        if batch.column_by_name(SUMMARY_NAMES).is_none() {
            return Ok(Summaries::Texts(Columns(batch).text("summary")?));
        }
        let lists: &ListArray = Columns(batch).get(SUMMARY_VALUES)?;
        let values = lists
            .values()
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| Error::Format(format!("column {SUMMARY_VALUES:?} is not numbers")))?;
        Ok(Summaries::Columns {
            names: Shared::new(batch, SUMMARY_NAMES, |text, column| {
                let names: Vec<String> = parse_json(text, column)?;
                Ok(names.iter().map(|name| Arc::from(name.as_str())).collect())
            })?,
            offsets: lists.value_offsets(),
            values: values.values(),
        })
    }

    fn get(&mut self, row: usize) -> Result<BTreeMap<Arc<str>, f64>> {
        let (names, offsets, values) = match self {
            Summaries::Texts(texts) => return summary_from_json(texts.value(row)),
            Summaries::Columns {
                names,
                offsets,
                values,
            } => (names.get(row)?, offsets, values),
        };
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        match values.get(start..end) {
            Some(values) if values.len() == names.len() => {
                // Inserted one by one: `collect` would first gather and sort them in a Vec.
                let mut summary = BTreeMap::new();
                for (name, value) in names.iter().zip(values) {
                    summary.insert(name.clone(), *value);
                }
                Ok(summary)
            }
            _ => Err(Error::Format(format!(
                "column {SUMMARY_VALUES:?}: row {row} has not one value per name"
            ))),
        }
    }
}

fn shared_json(text: &str, column: &'static str) -> Result<Arc<Value>> {
    Ok(Arc::new(component_json(text, column)?))
}

fn shared_text(text: &str, _column: &'static str) -> Result<Arc<str>> {
    Ok(Arc::from(text))
}

/// Rows of `runs` back from a batch read with [`Table::read_schema`].
pub fn runs_from_batch(batch: &RecordBatch) -> Result<Vec<RunRecord>> {
    runs_from_batch_where(batch, 0..batch.num_rows(), &RowFilter::ALL)
}

/// Which rows of a `runs` batch become records: those whose identity components pass.
#[derive(Clone, Copy)]
pub(crate) struct RowFilter<'a> {
    /// Whether a value of a component passes (its index in [`crate::identity::COMPONENTS`],
    /// the value); asked once per distinct value, and only about the components `tested`
    /// names.
    pub passes: &'a (dyn Fn(usize, &Value) -> bool + Sync),
    pub tested: [bool; 5],
    /// Whether the rows left out are still read through, so that a damaged row damages its
    /// file whatever the conditions (as in a listing of everything). Rows that were read
    /// through once already (the runs cache's) need not be.
    pub check_left_out: bool,
}

impl RowFilter<'_> {
    /// Whether a run already made into a record passes.
    pub(crate) fn keeps(&self, run: &RunRecord) -> bool {
        (0..self.tested.len()).all(|c| !self.tested[c] || (self.passes)(c, &run.components[c]))
    }
}

impl RowFilter<'static> {
    /// Every row.
    pub const ALL: RowFilter<'static> = RowFilter {
        passes: &|_, _| true,
        tested: [false; 5],
        check_left_out: true,
    };
}

/// The rows of a batch in `rows` that `filter` keeps.
pub(crate) fn runs_from_batch_where(
    batch: &RecordBatch,
    rows: std::ops::Range<usize>,
    filter: &RowFilter,
) -> Result<Vec<RunRecord>> {
    let c = Columns(batch);
    let (run_id, attempt, name) = (
        c.text("run_id")?,
        c.get::<UInt32Array>("attempt")?,
        c.text("name")?,
    );
    let (step, parent, sweep, status) = (
        c.text("recipe_step")?,
        c.text("parent_run")?,
        c.text("sweep")?,
        c.text("status")?,
    );
    let (started, ended, updated) = (
        c.time("started_at")?,
        c.time("ended_at")?,
        c.time("updated_at")?,
    );
    let (last_step, mut group) = (
        c.int("last_step")?,
        Shared::new(batch, "group_id", shared_text)?,
    );
    let mut hash_cols = [
        Shared::new(batch, "config_hash", shared_text)?,
        Shared::new(batch, "seeds_hash", shared_text)?,
        Shared::new(batch, "data_hash", shared_text)?,
        Shared::new(batch, "code_hash", shared_text)?,
        Shared::new(batch, "env_hash", shared_text)?,
    ];
    let mut value_cols = [
        Shared::new(batch, "config", shared_json)?,
        Shared::new(batch, "seeds", shared_json)?,
        Shared::new(batch, "data", shared_json)?,
        Shared::new(batch, "code", shared_json)?,
        Shared::new(batch, "env", shared_json)?,
    ];
    let mut summaries = Summaries::of(batch)?;
    let (checks, error) = (c.text("checks")?, c.text("error")?);
    let artifacts = c.text("artifacts")?;
    let (reproduced, diverged) = (
        c.get::<BooleanArray>("reproduced")?,
        c.int("diverged_step")?,
    );
    let (session, cell_exec, history) = (
        c.text("session_id")?,
        c.int("cell_execution")?,
        c.text("cell_history_hash")?,
    );
    let rows = rows.start..rows.end.min(batch.num_rows());
    let mut passes = |i: usize| -> Result<bool> {
        for (c, column) in value_cols.iter_mut().enumerate() {
            if filter.tested[c] && !column.passes(i, |value| (filter.passes)(c, value))? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let mut kept_rows = Vec::with_capacity(rows.len());
    for i in rows.clone() {
        kept_rows.push(passes(i)?);
    }
    let mut runs = Vec::with_capacity(kept_rows.iter().filter(|k| **k).count());
    for (i, kept) in rows.zip(kept_rows) {
        if !kept && !filter.check_left_out {
            continue;
        }
        let components = [
            value_cols[0].get(i)?,
            value_cols[1].get(i)?,
            value_cols[2].get(i)?,
            value_cols[3].get(i)?,
            value_cols[4].get(i)?,
        ];
        if !kept {
            Status::parse(status.value(i))?;
            summaries.get(i)?;
            parse_json::<Vec<Check>>(checks.value(i), "checks")?;
            parse_json::<BTreeMap<String, String>>(artifacts.value(i), "artifacts")?;
            continue;
        }
        runs.push(RunRecord {
            run_id: run_id.value(i).to_string(),
            attempt: attempt.value(i),
            name: name.value(i).to_string(),
            recipe_step: opt_text(step, i),
            parent_run: opt_text(parent, i),
            sweep: opt_text(sweep, i),
            status: Status::parse(status.value(i))?,
            started_at: from_micros(started.value(i)),
            ended_at: ended.is_valid(i).then(|| from_micros(ended.value(i))),
            updated_at: from_micros(updated.value(i)),
            last_step: opt_int(last_step, i),
            group_id: group.get(i)?,
            component_hashes: [
                hash_cols[0].get(i)?,
                hash_cols[1].get(i)?,
                hash_cols[2].get(i)?,
                hash_cols[3].get(i)?,
                hash_cols[4].get(i)?,
            ],
            components,
            summary: summaries.get(i)?,
            checks: match checks.value(i) {
                "[]" => Vec::new(),
                text => parse_json(text, "checks")?,
            },
            artifacts: match artifacts.value(i) {
                "{}" => BTreeMap::new(),
                text => parse_json(text, "artifacts")?,
            },
            error: opt_text(error, i),
            reproduced: reproduced.is_valid(i).then(|| reproduced.value(i)),
            diverged_step: opt_int(diverged, i),
            session_id: opt_text(session, i),
            cell_execution: opt_int(cell_exec, i),
            cell_history_hash: opt_text(history, i),
        });
    }
    Ok(runs)
}

/// Points of a `metrics` batch read with [`Table::read_schema`], all of which belong to
/// attempt `attempt` of `run_id` (a chunk holds one run's points); a point of another run is
/// an error.
pub fn metrics_from_batch(
    batch: &RecordBatch,
    run_id: &str,
    attempt: u32,
) -> Result<Vec<MetricPoint>> {
    let c = Columns(batch);
    let (runs, attempts) = (c.dictionary("run_id")?, c.get::<UInt32Array>("attempt")?);
    let (step, names, value, wall) = (
        c.int("step")?,
        c.dictionary("name")?,
        c.get::<Float64Array>("value")?,
        c.time("wall_time")?,
    );
    let other_run =
        (0..batch.num_rows()).find(|&i| runs.value(i) != run_id || attempts.value(i) != attempt);
    if let Some(i) = other_run {
        return Err(Error::Format(format!(
            "a chunk of {run_id}@{attempt} holds a point of {}@{}",
            runs.value(i),
            attempts.value(i)
        )));
    }
    Ok((0..batch.num_rows())
        .map(|i| MetricPoint {
            step: step.value(i),
            name: names.value(i).to_string(),
            value: value.value(i),
            wall_time: from_micros(wall.value(i)),
        })
        .collect())
}

/// Rows of `cells` back from a batch.
pub fn cells_from_batch(batch: &RecordBatch) -> Result<Vec<CellRecord>> {
    let c = Columns(batch);
    let (session, count, code, code_hash) = (
        c.text("session_id")?,
        c.int("execution_count")?,
        c.text("code")?,
        c.text("code_hash")?,
    );
    let (history, status, started, ended, error) = (
        c.text("history_hash")?,
        c.text("status")?,
        c.time("started_at")?,
        c.time("ended_at")?,
        c.text("error")?,
    );
    Ok((0..batch.num_rows())
        .map(|i| CellRecord {
            session_id: session.value(i).to_string(),
            execution_count: count.value(i),
            code: code.value(i).to_string(),
            code_hash: code_hash.value(i).to_string(),
            history_hash: history.value(i).to_string(),
            status: status.value(i).to_string(),
            started_at: from_micros(started.value(i)),
            ended_at: from_micros(ended.value(i)),
            error: opt_text(error, i),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{read_parquet, write_parquet};
    use proptest::prelude::*;
    use serde_json::json;

    fn time(us: i64) -> DateTime<Utc> {
        from_micros(us)
    }

    fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..4_000_000_000_000_000).prop_map(time)
    }

    fn arb_text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_\\- é✓]{0,12}"
    }

    fn arb_run() -> impl Strategy<Value = RunRecord> {
        (
            (
                "[0-9a-f]{64}",
                1u32..5,
                arb_text(),
                proptest::option::of(arb_text()),
                arb_time(),
            ),
            (
                proptest::option::of(arb_time()),
                proptest::option::of(any::<i64>()),
                0usize..5,
            ),
            (
                proptest::collection::btree_map(
                    arb_text(),
                    prop_oneof![
                        any::<f64>().prop_filter("not NaN", |f| !f.is_nan()),
                        Just(f64::INFINITY),
                        Just(f64::NEG_INFINITY)
                    ],
                    0..4,
                ),
                proptest::option::of(any::<bool>()),
                proptest::option::of(arb_text()),
            ),
        )
            .prop_map(
                |(
                    (run_id, attempt, name, step, started),
                    (ended, last_step, status),
                    (summary, reproduced, error),
                )| RunRecord {
                    run_id: run_id.clone(),
                    attempt,
                    name,
                    recipe_step: step,
                    parent_run: None,
                    sweep: Some("s".into()),
                    status: Status::ALL[status],
                    started_at: started,
                    ended_at: ended,
                    updated_at: started,
                    last_step,
                    group_id: run_id.chars().rev().collect::<String>().into(),
                    component_hashes: ["a", "b", "c", "d", "e"].map(Arc::from),
                    components: [
                        json!({"lr": 0.001}),
                        json!({"init": 1}),
                        json!({"name": "digits"}),
                        json!(null),
                        json!({"threads": 2}),
                    ]
                    .map(Arc::new),
                    summary: summary
                        .into_iter()
                        .map(|(k, v)| (Arc::from(k), v))
                        .collect(),
                    checks: vec![Check {
                        name: "loss_at_init".into(),
                        passed: true,
                        measured: json!(2.3),
                        expected: json!(std::f64::consts::LN_10),
                        note: String::new(),
                    }],
                    artifacts: [("checkpoint".to_string(), "ab".to_string())].into(),
                    error,
                    reproduced,
                    diverged_step: None,
                    session_id: Some("sess".into()),
                    cell_execution: Some(3),
                    cell_history_hash: None,
                },
            )
    }

    #[test]
    fn components_read_back_shared_or_distinct_past_the_dictionary_limit() {
        // 300 distinct 5 KB configs overflow a column chunk's dictionary page (1 MB), so the
        // writer falls back to plain pages; every row's config and the one shared
        // environment must still read back, the environment parsed once.
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let template = arb_run().new_tree(&mut runner).unwrap().current();
        let rows: Vec<RunRecord> = (0..300)
            .map(|i| {
                let mut run = template.clone();
                run.attempt = i + 1;
                run.components[0] = Arc::new(json!({"i": i, "pad": "x".repeat(5000)}));
                run
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.parquet");
        write_parquet(&path, Table::Runs, &runs_to_batch(&rows).unwrap()).unwrap();
        let back: Vec<RunRecord> = read_parquet(&path, Table::Runs)
            .unwrap()
            .iter()
            .flat_map(|b| runs_from_batch(b).unwrap())
            .collect();
        assert_eq!(back.len(), rows.len());
        for (b, r) in back.iter().zip(&rows) {
            assert_eq!(b.components, r.components);
        }
        assert!(Arc::ptr_eq(&back[0].components[4], &back[1].components[4]));
    }

    #[test]
    fn a_damaged_row_is_an_error_whether_or_not_it_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.parquet");
        let rows = [test_run("a", 1, None, 0.5), test_run("b", 1, None, 0.5)];
        write_parquet(&path, Table::Runs, &runs_to_batch(&rows).unwrap()).unwrap();
        let batch = read_parquet(&path, Table::Runs).unwrap().remove(0);
        // The second row's summary is not JSON (as a flipped byte would leave it).
        let (schema, mut columns) = (batch.schema(), batch.columns().to_vec());
        let summary = schema.index_of("summary").unwrap();
        columns[summary] = Arc::new(StringArray::from(vec![r#"{"acc":0.5}"#, r#"{"acc":0.5"#]));
        let damaged = RecordBatch::try_new(schema, columns).unwrap();
        assert!(runs_from_batch(&damaged).is_err());
        let mut none = RowFilter {
            passes: &|_, _| false,
            tested: [true, false, false, false, false],
            check_left_out: true,
        };
        assert!(runs_from_batch_where(&damaged, 0..2, &none).is_err());
        assert!(runs_from_batch_where(&batch, 0..2, &none)
            .unwrap()
            .is_empty());
        // Rows read through before (the runs cache's) are trusted when left out.
        none.check_left_out = false;
        assert!(runs_from_batch_where(&damaged, 0..2, &none)
            .unwrap()
            .is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn runs_round_trip(rows in proptest::collection::vec(arb_run(), 1..4)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.parquet");
            write_parquet(&path, Table::Runs, &runs_to_batch(&rows).unwrap()).unwrap();
            let back: Vec<RunRecord> = read_parquet(&path, Table::Runs).unwrap().iter()
                .flat_map(|b| runs_from_batch(b).unwrap()).collect();
            prop_assert_eq!(back, rows);
        }

        #[test]
        fn metrics_round_trip(points in proptest::collection::vec(
            (any::<i64>(), "[a-z_]{1,8}", any::<f64>(), arb_time())
                .prop_map(|(step, name, value, wall_time)| MetricPoint { step, name, value, wall_time }), 0..50)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.parquet");
            write_parquet(&path, Table::Metrics, &metrics_to_batch("ab", 2, &points).unwrap()).unwrap();
            let batches = read_parquet(&path, Table::Metrics).unwrap();
            let back: Vec<MetricPoint> = batches.iter()
                .flat_map(|b| metrics_from_batch(b, "ab", 2).unwrap()).collect();
            prop_assert_eq!(back.len(), points.len());
            if !points.is_empty() {
                prop_assert!(metrics_from_batch(&batches[0], "ab", 1).is_err());
                prop_assert!(metrics_from_batch(&batches[0], "ac", 2).is_err());
            }
            for (p, q) in back.iter().zip(&points) {
                // Bit for bit, NaN payloads included.
                prop_assert_eq!(p.value.to_bits(), q.value.to_bits());
                prop_assert_eq!((&p.name, p.step, p.wall_time), (&q.name, q.step, q.wall_time));
            }
        }

        #[test]
        fn cells_round_trip(cells in proptest::collection::vec(
            (arb_text(), any::<i64>(), ".{0,40}", arb_time(), proptest::option::of(arb_text()))
                .prop_map(|(session_id, execution_count, code, started_at, error)| CellRecord {
                    session_id, execution_count, code_hash: "h".into(), history_hash: "g".into(), code,
                    status: "ok".into(), started_at, ended_at: started_at, error }), 1..5)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.parquet");
            write_parquet(&path, Table::Cells, &cells_to_batch(&cells).unwrap()).unwrap();
            let back: Vec<CellRecord> = read_parquet(&path, Table::Cells).unwrap().iter()
                .flat_map(|b| cells_from_batch(b).unwrap()).collect();
            prop_assert_eq!(back, cells);
        }
    }
}
