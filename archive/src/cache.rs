//! The runs cache: the rows of the `runs` files already read once, kept beside the table in
//! one uncompressed Arrow IPC file (`_cache/runs.arrow`), so that listing or querying runs
//! reads that one file and decodes only the Parquet files that are new since. The rows are
//! kept in the form a reader wants ([`cache_schema`]): each text of a few distinct values
//! (components, hashes) as a dictionary holding each value once, and each summary as its
//! names and values instead of JSON text, so no number is parsed again.
//!
//! It holds nothing the table does not. A file's cached rows are used only while the file is
//! unchanged (same path, size, modification time and inode: every file is written under a
//! temp name and renamed, so a rewritten one differs); a cache that cannot be read, or is of
//! another version, is ignored and written again; deleting it loses nothing. It is written
//! without fsync (a reader would wait for the disk), under the system's boot id: a cache
//! from before the system last started, which a crash may have left with missing blocks, is
//! not used. Where the boot id is unknown, the cache is fsynced instead.
//!
//! A finishing writer appends its run's row to the cache's recent part
//! (`_cache/runs-recent.jsonl`, one line of JSON per run, under the same stamp rule and boot
//! id), so the first listing after a run finds it cached instead of decoding its file; a
//! reader or compaction that writes the whole cache folds the recent part into it. So does
//! the second reader to use the recent part with no row added since the first: the first
//! appends a mark ([`READ_MARK`]) and writes nothing else, so the first listing after a run
//! stays cheap, and the listings after it parse no JSON.

use crate::records::{self, Check, RunRecord, Status};
use crate::schema::{self, Table, SCHEMA_VERSION};
use crate::text_hash::TextHashing;
use crate::written_json::{json_text, summary_members};
use crate::{files, Error, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float64Builder, Int32Array, ListBuilder,
    RecordBatch, StringArray, StringDictionaryBuilder,
};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, FieldRef, Int32Type, Schema, SchemaRef};
use arrow::ipc::convert::try_fb_to_schema;
use arrow::ipc::reader::{read_footer_length, FileDecoder};
use arrow::ipc::root_as_footer;
use arrow::ipc::writer::FileWriter;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Where the cache lives, relative to the archive's root.
pub const CACHE_FILE: &str = "_cache/runs.arrow";
/// The cache's recent part: the rows finishing writers added since the whole was written,
/// one JSON line each.
pub const RECENT_FILE: &str = "_cache/runs-recent.jsonl";
/// Held by whoever rewrites the recent part, so that two finishing writers do not each drop
/// the other's row.
const RECENT_LOCK: &str = "_cache/runs-recent.lock";
/// A line of the recent part that says a reader used it after its last row was added.
const READ_MARK: &str = "read";
/// Writers add no row to a recent part this large (some hundreds of rows): every reader
/// parses it, until one that writes the whole cache folds it in.
pub const RECENT_MAX_BYTES: u64 = 1 << 20;
/// Metadata key of the cached files, as JSON ([`Entry`] in row order).
const KEY_FILES: &str = "recipe.cache.files";
/// Metadata key of the cache's layout: the runs schema version, then the cache's own.
const KEY_LAYOUT: &str = "recipe.cache.layout";

fn layout() -> String {
    format!("runs-{SCHEMA_VERSION}.cache-3")
}

/// The cache's columns: the runs table as read ([`Table::read_schema`]), with the `summary`
/// text in its place replaced by `summary_names` (the names of a row's summary as a JSON
/// array, in order; a dictionary, so the runs of one trainer share one) and `summary_values`
/// (the values, in the same order; NaN and the infinities as themselves).
pub(crate) fn cache_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields: Vec<FieldRef> = Vec::new();
            for field in Table::Runs.read_schema().fields() {
                match field.name().as_str() {
                    "summary" => fields.extend([
                        Arc::new(Field::new(SUMMARY_NAMES, schema::dictionary(), false)),
                        Arc::new(Field::new(SUMMARY_VALUES, summary_values_type(), false)),
                    ]),
                    _ => fields.push(field.clone()),
                }
            }
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// Column of [`cache_schema`]: each row's summary names.
pub(crate) const SUMMARY_NAMES: &str = "summary_names";
/// Column of [`cache_schema`]: each row's summary values.
pub(crate) const SUMMARY_VALUES: &str = "summary_values";

fn summary_values_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, false)))
}

/// Rows of `runs` read with [`Table::read_schema`] in the cache's form ([`cache_schema`]).
/// Fails on a summary that does not read (such rows are not cached).
pub(crate) fn cached_form(batch: &RecordBatch) -> Result<RecordBatch> {
    let texts = batch
        .column_by_name("summary")
        .and_then(|column| column.as_string_opt::<i32>())
        .ok_or_else(|| Error::Format("column \"summary\" is missing".into()))?;
    let mut names = StringDictionaryBuilder::<Int32Type>::new();
    let mut values = ListBuilder::with_capacity(Float64Builder::new(), texts.len())
        .with_field(Arc::new(Field::new("item", DataType::Float64, false)));
    // The runs of one trainer have one list of names: it is written again only when a row's
    // differs from the row before.
    let (mut last_names, mut last_text) = (Vec::<String>::new(), json_text(&[(); 0]));
    for text in texts.iter() {
        let text =
            text.ok_or_else(|| Error::Format("column \"summary\": a row has none".into()))?;
        let members = summary_members(text)?;
        if !members
            .iter()
            .map(|(name, _)| &**name)
            .eq(last_names.iter().map(String::as_str))
        {
            last_names = members.iter().map(|(name, _)| name.to_string()).collect();
            last_text = json_text(&last_names);
        }
        names.append_value(&last_text);
        for (_, value) in &members {
            values.values().append_value(*value);
        }
        values.append(true);
    }
    let (names, values): (ArrayRef, ArrayRef) =
        (Arc::new(names.finish()), Arc::new(values.finish()));
    let mut columns = Vec::with_capacity(batch.num_columns() + 1);
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.name().as_str() {
            "summary" => columns.extend([names.clone(), values.clone()]),
            _ => columns.push(column.clone()),
        }
    }
    Ok(RecordBatch::try_new(cache_schema(), columns)?)
}

/// Metadata key of the boot of the system that wrote the cache without fsync.
const KEY_BOOT: &str = "recipe.cache.boot";

/// This boot of the system (Linux's random boot id), if it is known.
fn boot() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(id.trim().to_string()).filter(|id| !id.is_empty())
    })
    .as_deref()
}

/// A committed file as the file system describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    len: u64,
    modified_ns: i64,
    /// When the file's inode last changed (ctime): a write in place changes it even when the
    /// writer sets the modification time back, which no one can do to this one.
    changed_ns: i64,
    inode: u64,
}

impl Stamp {
    pub fn of(path: &Path) -> std::io::Result<Stamp> {
        let metadata = std::fs::metadata(path)?;
        let modified = metadata.modified()?;
        let modified_ns = match modified.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i64,
            Err(before) => -(before.duration().as_nanos() as i64),
        };
        #[cfg(unix)]
        let (inode, changed_ns) = {
            use std::os::unix::fs::MetadataExt;
            let seconds = metadata.ctime().saturating_mul(1_000_000_000);
            (
                metadata.ino(),
                seconds.saturating_add(metadata.ctime_nsec()),
            )
        };
        #[cfg(not(unix))]
        let (inode, changed_ns) = (0, 0);
        Ok(Stamp {
            len: metadata.len(),
            modified_ns,
            changed_ns,
            inode,
        })
    }
}

/// A file's name in the cache: its path relative to the archive's root, with `/`.
pub(crate) fn key(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .map_or_else(|_| path.to_string_lossy(), |p| p.to_string_lossy())
        .replace(std::path::MAIN_SEPARATOR, "/")
}

/// One file's rows in the cache: the next `rows` rows after the previous file's.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// Relative to the archive's root, with `/`.
    path: String,
    stamp: Stamp,
    rows: usize,
}

/// Where a file's cached rows are: a run of rows of the whole cache, or one row of its
/// recent part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    Rows(Range<usize>),
    Recent(usize),
}

/// The cached rows of each file, as read from `_cache/runs.arrow` and its recent part.
#[derive(Default)]
pub struct RunsCache {
    batch: Option<RecordBatch>,
    /// Path -> (stamp, rows of `batch`). Looked up, never iterated.
    files: HashMap<String, (Stamp, Range<usize>)>,
    /// The recent part as read: its runs are parsed only when they are used.
    recent_text: String,
    /// Where each run of the recent part is in `recent_text`, in the order they were added.
    recent: Vec<Range<usize>>,
    /// Path -> (stamp, row of `recent`). Looked up, never iterated.
    recent_files: HashMap<String, (Stamp, usize)>,
    /// Whether the recent part's last line is a [`READ_MARK`].
    recent_read: bool,
}

/// The whole cache as its file holds it: its rows and each file's entry.
struct Whole {
    batch: RecordBatch,
    entries: Vec<(String, Stamp, Range<usize>)>,
}

impl Whole {
    /// The cache in the file at `path`, if there is a usable one (not damaged, foreign, of
    /// another version, or from before the system last started).
    fn read(path: &Path) -> Option<Whole> {
        let bytes = std::fs::read(path).ok()?;
        // Offsets in a damaged file may point anywhere; the decoder's slicing panics then.
        std::panic::catch_unwind(|| decode(Buffer::from_vec(bytes)))
            .ok()
            .and_then(|whole| whole.ok())
    }
}

/// A line of the recent part begins with its file, then a tab, then the run's row as its
/// writer finished it ([`RecentRun`]).
#[derive(Serialize, Deserialize)]
struct RecentFile {
    /// Relative to the archive's root, with `/`.
    path: String,
    stamp: Stamp,
}

/// The first line of the recent part: the boot of the system that wrote it without fsync.
#[derive(Serialize, Deserialize)]
struct RecentHeader {
    layout: String,
    boot: String,
}

/// A [`RunRecord`] as a line of the recent part.
#[derive(Serialize, Deserialize)]
struct RecentRun {
    run_id: String,
    attempt: u32,
    name: String,
    recipe_step: Option<String>,
    parent_run: Option<String>,
    sweep: Option<String>,
    status: Status,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    last_step: Option<i64>,
    group_id: String,
    component_hashes: [String; 5],
    /// As JSON text: the runs of a sweep share most of them, which are parsed once.
    components: [String; 5],
    /// NaN and the infinities have no JSON form: a run with one is not added.
    summary: BTreeMap<String, f64>,
    checks: Vec<Check>,
    artifacts: BTreeMap<String, String>,
    error: Option<String>,
    reproduced: Option<bool>,
    diverged_step: Option<i64>,
    session_id: Option<String>,
    cell_execution: Option<i64>,
    cell_history_hash: Option<String>,
}

impl From<&RunRecord> for RecentRun {
    fn from(r: &RunRecord) -> RecentRun {
        RecentRun {
            run_id: r.run_id.clone(),
            attempt: r.attempt,
            name: r.name.clone(),
            recipe_step: r.recipe_step.clone(),
            parent_run: r.parent_run.clone(),
            sweep: r.sweep.clone(),
            status: r.status,
            started_at: r.started_at,
            ended_at: r.ended_at,
            updated_at: r.updated_at,
            last_step: r.last_step,
            group_id: r.group_id.to_string(),
            component_hashes: r.component_hashes.clone().map(|h| h.to_string()),
            components: r.components.clone().map(|c| json_text(&*c)),
            summary: (r.summary.iter())
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            checks: r.checks.clone(),
            artifacts: r.artifacts.clone(),
            error: r.error.clone(),
            reproduced: r.reproduced,
            diverged_step: r.diverged_step,
            session_id: r.session_id.clone(),
            cell_execution: r.cell_execution,
            cell_history_hash: r.cell_history_hash.clone(),
        }
    }
}

impl RecentRun {
    /// The record, its components parsed or taken from `parsed` (by component and hash).
    fn record(mut self, parsed: &mut HashMap<(usize, String), Arc<Value>>) -> Result<RunRecord> {
        let mut components: [Arc<Value>; 5] = Default::default();
        for (i, text) in std::mem::take(&mut self.components).into_iter().enumerate() {
            let key = (i, self.component_hashes[i].clone());
            components[i] = match parsed.get(&key) {
                Some(value) => value.clone(),
                None => {
                    let value: Arc<Value> = Arc::new(
                        serde_json::from_str(&text).map_err(|e| Error::Format(e.to_string()))?,
                    );
                    parsed.insert(key, value.clone());
                    value
                }
            };
        }
        let r = self;
        Ok(RunRecord {
            run_id: r.run_id,
            attempt: r.attempt,
            name: r.name,
            recipe_step: r.recipe_step,
            parent_run: r.parent_run,
            sweep: r.sweep,
            status: r.status,
            started_at: r.started_at,
            ended_at: r.ended_at,
            updated_at: r.updated_at,
            last_step: r.last_step,
            group_id: r.group_id.into(),
            component_hashes: r.component_hashes.map(Arc::from),
            components,
            summary: (r.summary.into_iter())
                .map(|(k, v)| (k.into(), v))
                .collect(),
            checks: r.checks,
            artifacts: r.artifacts,
            error: r.error,
            reproduced: r.reproduced,
            diverged_step: r.diverged_step,
            session_id: r.session_id,
            cell_execution: r.cell_execution,
            cell_history_hash: r.cell_history_hash,
        })
    }
}

fn to_json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Format(e.to_string()))
}

/// A run's row in the cache's form.
fn row_in_cached_form(run: &RunRecord) -> Result<RecordBatch> {
    let written = records::runs_to_batch(std::slice::from_ref(run))?;
    cached_form(&schema::cast_columns(&written, Table::Runs.read_schema())?)
}

impl RunsCache {
    /// The cache of the archive at `root`; empty when there is none or it cannot be used
    /// (damaged, foreign, another version).
    pub fn load(root: &Path) -> RunsCache {
        let mut cache = RunsCache::default();
        if let Some(whole) = Whole::read(&root.join(CACHE_FILE)) {
            cache.files = (whole.entries.into_iter())
                .map(|(path, stamp, rows)| (path, (stamp, rows)))
                .collect();
            cache.batch = Some(whole.batch);
        }
        cache.read_recent(&root.join(RECENT_FILE));
        cache
    }

    /// The recent part's files, each line's run left as text. A line whose file does not
    /// read back is left out (a line cut short by a writer's end also makes the next one
    /// unreadable); one whose run does not, fails [`RunsCache::recent_runs`]. A part written
    /// before the system last started is not used.
    fn read_recent(&mut self, path: &Path) {
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let mut lines = text.split_terminator('\n');
        let header = lines
            .next()
            .and_then(|h| serde_json::from_str::<RecentHeader>(h).ok());
        if !header.is_some_and(|h| h.layout == layout() && Some(h.boot.as_str()) == boot()) {
            return;
        }
        let mut at = text.find('\n').map_or(text.len(), |end| end + 1);
        for line in lines {
            let start = at;
            at += line.len() + 1;
            let Some((head, _)) = line.split_once('\t') else {
                continue;
            };
            let Ok(file) = serde_json::from_str::<RecentFile>(head) else {
                continue;
            };
            (self.recent_files).insert(file.path, (file.stamp, self.recent.len()));
            self.recent.push(start + head.len() + 1..start + line.len());
        }
        self.recent_read = text.ends_with(&format!("\n{READ_MARK}\n"));
        self.recent_text = text;
    }

    /// The runs of these rows of the recent part ([`Cached::Recent`]), parsed; fails when
    /// one does not read back (the caller then reads without the cache).
    pub fn recent_runs(&self, rows: &[usize]) -> Result<Vec<RunRecord>> {
        let mut parsed = HashMap::new();
        let mut runs = Vec::with_capacity(rows.len());
        for &row in rows {
            let range = self
                .recent
                .get(row)
                .ok_or_else(|| Error::Format("no such row".into()))?;
            let run: RecentRun = serde_json::from_str(&self.recent_text[range.clone()])
                .map_err(|e| Error::Format(format!("{RECENT_FILE}: {e}")))?;
            runs.push(run.record(&mut parsed)?);
        }
        Ok(runs)
    }

    /// How many files the cache holds rows of.
    pub fn len(&self) -> usize {
        let only_recent = (self.recent_files.keys())
            .filter(|path| !self.files.contains_key(*path))
            .count();
        self.files.len() + only_recent
    }

    /// Where the rows of the file at `path` (relative to the root) are, if they were cached
    /// while the file had this stamp.
    /// A file in both parts with this stamp is read from the whole: its runs of rows stay
    /// long.
    pub fn rows(&self, path: &str, stamp: &Stamp) -> Option<Cached> {
        if let Some((cached, rows)) = self.files.get(path) {
            if cached == stamp {
                return Some(Cached::Rows(rows.clone()));
            }
        }
        let (cached, row) = self.recent_files.get(path)?;
        (cached == stamp).then_some(Cached::Recent(*row))
    }

    /// The rows of the whole cache ([`Cached::Rows`] are rows of it).
    pub fn batch(&self) -> Option<&RecordBatch> {
        self.batch.as_ref()
    }

    /// The cached rows at `at`, in the cache's form.
    pub fn slice(&self, at: &Cached) -> Option<RecordBatch> {
        match at {
            Cached::Rows(rows) => Some(self.batch()?.slice(rows.start, rows.len())),
            Cached::Recent(row) => {
                let run = self.recent_runs(&[*row]).ok()?.pop()?;
                row_in_cached_form(&run).ok()
            }
        }
    }

    /// After a writer finished a run and wrote its row to `file`: the row appended to the
    /// cache's recent part (one line of JSON, unless the part is full), so that the first
    /// listing after the run does not decode the file. Best effort for the writer: the run
    /// is archived, and a reader caches what is missing.
    pub fn add_recent(root: &Path, file: &Path, run: &RunRecord) -> Result<()> {
        use std::io::Write;
        // Without the boot id, lines not synced could come back damaged after a crash.
        let Some(boot) = boot() else {
            return Ok(());
        };
        // NaN and the infinities have no JSON form.
        if run.summary.values().any(|value| !value.is_finite()) {
            return Ok(());
        }
        let file = RecentFile {
            path: key(root, file),
            stamp: Stamp::of(file).map_err(|e| Error::io(file, e))?,
        };
        let lock = crate::archive::open_lock_file(&root.join(RECENT_LOCK))?;
        crate::archive::lock_blocking(&lock)?;
        let path = root.join(RECENT_FILE);
        let mut part = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let held = part.metadata().map_err(|e| Error::io(&path, e))?.len();
        if held > RECENT_MAX_BYTES {
            return Ok(());
        }
        let mut text = String::new();
        if held == 0 {
            let header = RecentHeader {
                layout: layout(),
                boot: boot.to_string(),
            };
            text += &to_json(&header)?;
            text.push('\n');
        }
        text += &to_json(&file)?;
        text.push('\t');
        text += &to_json(&RecentRun::from(run))?;
        text.push('\n');
        // One write: a line is cut short only by a writer's end in the middle of it.
        part.write_all(text.as_bytes())
            .map_err(|e| Error::io(&path, e))
    }

    /// Whether a reader used the recent part after its last row was added: one that uses it
    /// now folds it into the whole, since the archive is being read more than written.
    pub fn recent_was_read(&self) -> bool {
        self.recent_read
    }

    /// After a reader used rows of the recent part without writing the whole cache: a
    /// [`READ_MARK`] appended to it. Best effort: a part removed meanwhile is not made again,
    /// and without a mark the next reader only parses the rows again. One append of a whole
    /// line, which the system does not interleave with a writer's.
    pub fn mark_recent_read(root: &Path) {
        use std::io::Write;
        let part = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join(RECENT_FILE));
        if let Ok(mut part) = part {
            let _ = part.write_all(format!("{READ_MARK}\n").as_bytes());
        }
    }

    /// After a compaction merged the `runs` files `sources` into `dest`: the cache with
    /// `dest`'s rows (read back from it) in place of the sources'. The first listing after
    /// a sweep then finds the merged rows cached instead of decoding them; a cache that
    /// cannot be brought up to date is left for the next reader to rewrite.
    pub fn replace_merged(root: &Path, sources: &[PathBuf], dest: &Path) -> Result<()> {
        let batches = files::read_parquet(dest, Table::Runs)?;
        let merged_rows = match batches.len() {
            1 => batches[0].clone(),
            _ => arrow::compute::concat_batches(&Table::Runs.read_schema(), &batches)?,
        };
        let merged = (
            key(root, dest),
            Stamp::of(dest).map_err(|e| Error::io(dest, e))?,
        );
        let gone: Vec<String> = sources.iter().map(|source| key(root, source)).collect();
        let cache = RunsCache::load(root);
        let kept = |path: &String| !gone.contains(path) && *path != merged.0;
        // In the order of their rows, as they were stored: the maps are looked up, not
        // iterated into the file.
        let mut whole: Vec<(&String, &(Stamp, Range<usize>))> =
            cache.files.iter().filter(|(path, _)| kept(path)).collect();
        whole.sort_by_key(|(_, (_, rows))| rows.start);
        let mut recent: Vec<(&String, &(Stamp, usize))> = (cache.recent_files.iter())
            .filter(|(path, _)| kept(path))
            .collect();
        recent.sort_by_key(|(_, (_, row))| *row);
        let mut next: Vec<(String, Stamp, RecordBatch)> = Vec::new();
        for (path, (stamp, rows)) in whole {
            // A file rewritten since: its recent row replaces this one.
            if cache.rows(path, stamp) != Some(Cached::Rows(rows.clone())) {
                continue;
            }
            if let Some(batch) = cache.batch() {
                next.push((
                    path.clone(),
                    stamp.clone(),
                    batch.slice(rows.start, rows.len()),
                ));
            }
        }
        let rows: Vec<usize> = recent.iter().map(|(_, (_, row))| *row).collect();
        for ((path, (stamp, _)), run) in recent.iter().zip(cache.recent_runs(&rows)?) {
            next.push(((*path).clone(), stamp.clone(), row_in_cached_form(&run)?));
        }
        next.push((merged.0, merged.1, cached_form(&merged_rows)?));
        RunsCache::store(root, &next)
    }

    /// Replace the cache with these files' rows (path relative to the root, stamp, rows in
    /// the cache's form, [`cached_form`]), in this order; its recent part, folded in, goes.
    pub fn store(root: &Path, files: &[(String, Stamp, RecordBatch)]) -> Result<()> {
        write_whole_cache(&root.join(CACHE_FILE), files)?;
        // A writer adding to the recent part now keeps it: its rows are cached either way.
        let lock = crate::archive::open_lock_file(&root.join(RECENT_LOCK))?;
        if crate::archive::try_lock(&lock, libc::LOCK_EX) {
            let recent = root.join(RECENT_FILE);
            match std::fs::remove_file(&recent) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&recent, e))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Write the whole cache: these files' rows, in this order.
fn write_whole_cache(path: &Path, files: &[(String, Stamp, RecordBatch)]) -> Result<()> {
    let entries: Vec<Entry> = files
        .iter()
        .map(|(path, stamp, batch)| Entry {
            path: path.clone(),
            stamp: stamp.clone(),
            rows: batch.num_rows(),
        })
        .collect();
    let mut metadata = HashMap::from([
        (KEY_LAYOUT.to_string(), layout()),
        (
            KEY_FILES.to_string(),
            serde_json::to_string(&entries).map_err(|e| Error::Format(e.to_string()))?,
        ),
    ]);
    if let Some(boot) = boot() {
        metadata.insert(KEY_BOOT.to_string(), boot.to_string());
    }
    let form = cache_schema();
    let schema = Arc::new(Schema::new(form.fields().clone()).with_metadata(metadata));
    let batch = arrow::compute::concat_batches(&form, files.iter().map(|f| &f.2))?;
    let columns = batch.columns().iter().map(one_value_once).collect();
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let write = |file: &mut std::fs::File| {
        let mut writer = FileWriter::try_new_buffered(file, &schema)?;
        writer.write(&batch)?;
        writer.finish()?;
        writer.flush()?;
        Ok(())
    };
    match boot() {
        Some(_) => files::write_derived(path, write),
        None => files::write_atomic(path, write),
    }
}

/// A dictionary column with each of its values once. Rows of many files come with a
/// dictionary each, concatenated, and a reader decides about (and parses) a component once
/// per dictionary value: a sweep's environment, stored once per file, was parsed once per
/// file on every read.
fn one_value_once(column: &ArrayRef) -> ArrayRef {
    let Some(dictionary) = column.as_dictionary_opt::<Int32Type>() else {
        return column.clone();
    };
    let Some(values) = dictionary.values().as_string_opt::<i32>() else {
        return column.clone();
    };
    if values.null_count() > 0 {
        return column.clone();
    }
    let mut first: HashMap<&str, i32, TextHashing> =
        HashMap::with_capacity_and_hasher(values.len(), TextHashing::default());
    let mut kept: Vec<&str> = Vec::new();
    let moved: Vec<i32> = (values.iter().flatten())
        .map(|value| {
            *first.entry(value).or_insert_with(|| {
                kept.push(value);
                kept.len() as i32 - 1
            })
        })
        .collect();
    let keys = dictionary.keys();
    let keys: Int32Array = match keys.null_count() {
        // Keys past the dictionary are a damaged column, which `try_new` below refuses.
        0 => (keys.values().iter())
            .map(|&k| moved.get(k as usize).copied().unwrap_or(-1))
            .collect::<Vec<i32>>()
            .into(),
        _ => (keys.iter())
            .map(|key| key.and_then(|k| moved.get(k as usize).copied()))
            .collect(),
    };
    match DictionaryArray::try_new(keys, Arc::new(StringArray::from(kept))) {
        Ok(merged) => Arc::new(merged),
        Err(_) => column.clone(),
    }
}

/// A part of the cache from the bytes of its file; every offset is checked by the decoder.
fn decode(buffer: Buffer) -> Result<Whole> {
    let bad = |reason: &str| Error::Format(format!("{CACHE_FILE}: {reason}"));
    let trailer = buffer
        .len()
        .checked_sub(10)
        .ok_or_else(|| bad("too short"))?;
    let footer_len = read_footer_length(buffer[trailer..].try_into().map_err(|_| bad("trailer"))?)
        .map_err(|e| bad(&e.to_string()))?;
    let footer_start = trailer
        .checked_sub(footer_len)
        .ok_or_else(|| bad("footer"))?;
    let footer = root_as_footer(&buffer[footer_start..trailer]).map_err(|e| bad(&e.to_string()))?;
    let schema = try_fb_to_schema(footer.schema().ok_or_else(|| bad("no schema"))?)
        .map_err(|e| bad(&e.to_string()))?;
    if schema.metadata().get(KEY_LAYOUT) != Some(&layout()) {
        return Err(bad("another layout"));
    }
    if let Some(written) = schema.metadata().get(KEY_BOOT) {
        if Some(written.as_str()) != boot() {
            return Err(bad("written without fsync before the system last started"));
        }
    }
    if schema.fields() != cache_schema().fields() {
        return Err(bad("other columns"));
    }
    let entries: Vec<Entry> = serde_json::from_str(
        schema
            .metadata()
            .get(KEY_FILES)
            .ok_or_else(|| bad("no file list"))?,
    )
    .map_err(|e| bad(&e.to_string()))?;
    let mut decoder = FileDecoder::new(Arc::new(schema), footer.version());
    let block_data = |block: &arrow::ipc::Block| {
        let len = block.bodyLength() as usize + block.metaDataLength() as usize;
        buffer.slice_with_length(block.offset() as usize, len)
    };
    for block in footer.dictionaries().iter().flatten() {
        decoder
            .read_dictionary(block, &block_data(block))
            .map_err(|e| bad(&e.to_string()))?;
    }
    let blocks = footer.recordBatches().ok_or_else(|| bad("no rows"))?;
    if blocks.len() != 1 {
        return Err(bad("not one batch"));
    }
    let block = blocks.get(0);
    let batch = decoder
        .read_record_batch(block, &block_data(block))
        .map_err(|e| bad(&e.to_string()))?
        .ok_or_else(|| bad("no rows"))?;
    let mut files = Vec::with_capacity(entries.len());
    let mut first: usize = 0;
    for entry in entries {
        let end = first
            .checked_add(entry.rows)
            .ok_or_else(|| bad("its file list does not add up to its rows"))?;
        files.push((entry.path, entry.stamp, first..end));
        first = end;
    }
    if first != batch.num_rows() {
        return Err(bad("its file list does not add up to its rows"));
    }
    Ok(Whole {
        batch,
        entries: files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::archive_tests::{spec, train};
    use crate::{Archive, Loaded, RunRecord, Status};
    use std::fs;

    /// `runs()` through the cache, checked against `runs()` from the Parquet files alone.
    fn runs_both_ways(archive: &Archive) -> Loaded<Vec<RunRecord>> {
        let cached = archive.runs().unwrap();
        for part in [CACHE_FILE, RECENT_FILE] {
            match fs::remove_file(archive.root().join(part)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
                _ => {}
            }
        }
        let fresh = archive.runs().unwrap();
        assert_eq!(cached.value, fresh.value);
        let names = |loaded: &Loaded<Vec<RunRecord>>| -> Vec<String> {
            loaded.damaged.iter().map(|e| e.to_string()).collect()
        };
        assert_eq!(names(&cached), names(&fresh));
        assert!(
            RunsCache::load(archive.root()).len() > 0,
            "the fresh read writes it again"
        );
        cached
    }

    #[test]
    fn a_read_through_the_cache_is_a_read_of_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        for seed in 0..3 {
            train(&archive, seed, 0.0);
        }
        assert_eq!(runs_both_ways(&archive).value.len(), 3);
        // A new file, then the same file rewritten in place (a run's row at finish).
        let mut live = archive.begin_run(spec("live", 10)).unwrap();
        live.log(0, "loss", 1.0).unwrap();
        live.flush().unwrap();
        let runs = runs_both_ways(&archive).value;
        assert_eq!(
            runs.iter().filter(|r| r.status == Status::Running).count(),
            1
        );
        live.finish(Status::Completed, None).unwrap();
        let runs = runs_both_ways(&archive).value;
        assert!(
            runs.iter().all(|r| r.status == Status::Completed),
            "{runs:?}"
        );
        // Files merged and removed by compaction.
        let plan = crate::compact::plan(&archive).unwrap();
        crate::compact::execute(&archive, &plan).unwrap();
        assert_eq!(runs_both_ways(&archive).value.len(), 4);
        // A damaged file is never cached: every read names it.
        let day =
            crate::files::day_dir(archive.root(), Table::Runs, runs[0].started_at.date_naive());
        fs::write(day.join("zz-damaged-a1.parquet"), b"PAR1 not really").unwrap();
        for _ in 0..2 {
            let loaded = runs_both_ways(&archive);
            assert_eq!(loaded.value.len(), 4);
            assert_eq!(loaded.damaged.len(), 1);
        }
    }

    fn root_has(archive: &Archive, file: &str) -> bool {
        archive.root().join(file).exists()
    }

    /// The file that holds `run`'s row as its writer finished it.
    fn row_file(archive: &Archive, run: &RunRecord) -> PathBuf {
        crate::writer::row_path(archive, run.started_at.date_naive(), run)
    }

    /// Where the cache, as loaded now, has the row of `run`'s file as it is now.
    fn cached_at(archive: &Archive, run: &RunRecord) -> Option<Cached> {
        let path = row_file(archive, run);
        RunsCache::load(archive.root())
            .rows(&key(archive.root(), &path), &Stamp::of(&path).unwrap())
    }

    #[test]
    fn a_finishing_writer_caches_its_row_and_a_whole_rewrite_folds_it_in() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let first = train(&archive, 0, 0.0);
        // Before any read, the finished row is cached under its file's name and stamp.
        let at = |run: &RunRecord| cached_at(&archive, run);
        assert_eq!(at(&first), Some(Cached::Recent(0)));
        assert!(!root_has(&archive, CACHE_FILE));
        // A reader with nothing new to cache writes nothing but its mark.
        assert_eq!(archive.runs().unwrap().value, vec![first.clone()]);
        assert!(!root_has(&archive, CACHE_FILE) && root_has(&archive, RECENT_FILE));
        assert!(RunsCache::load(archive.root()).recent_was_read());
        // Read without the cache: the whole is written, the recent part folded into it.
        assert_eq!(runs_both_ways(&archive).value, vec![first.clone()]);
        assert!(!root_has(&archive, RECENT_FILE));
        assert_eq!(at(&first), Some(Cached::Rows(0..1)));
        // A live run's row cached whole, then its final row added by its writer: the recent
        // part wins over the whole for that file.
        let mut live = archive.begin_run(spec("live", 10)).unwrap();
        live.log(0, "loss", 1.0).unwrap();
        live.flush().unwrap();
        assert_eq!(archive.runs().unwrap().value.len(), 2);
        assert!(!root_has(&archive, RECENT_FILE));
        let second = live.finish(Status::Completed, None).unwrap();
        assert_eq!(at(&second), Some(Cached::Recent(0)));
        let runs = archive.runs().unwrap().value;
        assert_eq!(runs, vec![first.clone(), second.clone()]);
        assert!(
            root_has(&archive, RECENT_FILE),
            "nothing new: nothing folded"
        );
        assert_eq!(runs_both_ways(&archive).value, runs);
        // A line cut short (its writer killed in the middle of it): the line appended after
        // it is lost with it, and the run it holds does not read back, so the archive is
        // read without the cache once, and the whole written again.
        let third = train(&archive, 2, 0.0);
        let recent = archive.root().join(RECENT_FILE);
        let mut text = fs::read_to_string(&recent).unwrap();
        text.truncate(text.len() - 20);
        fs::write(&recent, &text).unwrap();
        let fourth = train(&archive, 3, 0.0);
        assert!(at(&third).is_some());
        assert_eq!(at(&fourth), None);
        let mut expected = runs;
        expected.extend([third.clone(), fourth]);
        assert_eq!(archive.runs().unwrap().value, expected);
        assert!(!root_has(&archive, RECENT_FILE));
        assert!(matches!(at(&third), Some(Cached::Rows(_))));
        assert_eq!(runs_both_ways(&archive).value, expected);
    }

    #[test]
    fn a_recent_part_read_again_with_nothing_added_is_folded_into_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let at = |run: &RunRecord| cached_at(&archive, run);
        let was_read = || RunsCache::load(archive.root()).recent_was_read();
        let first = train(&archive, 0, 0.0);
        assert!(!was_read());
        assert_eq!(archive.runs().unwrap().value, vec![first.clone()]);
        assert!(was_read() && !root_has(&archive, CACHE_FILE));
        // A run finished after the mark: the next reader marks the part again, and only
        // the one after it folds.
        let second = train(&archive, 1, 0.0);
        assert!(!was_read());
        assert_eq!(archive.runs().unwrap().value.len(), 2);
        assert!(was_read() && !root_has(&archive, CACHE_FILE));
        assert_eq!(at(&second), Some(Cached::Recent(1)));
        // Folded by a query that keeps only one of them: the whole holds both.
        let only_first = [crate::query::Condition::parse("seeds.init=0").unwrap()];
        let found = archive.runs_where(&only_first).unwrap().value;
        assert_eq!(found, vec![first.clone()]);
        assert!(root_has(&archive, CACHE_FILE) && !root_has(&archive, RECENT_FILE));
        for run in [&first, &second] {
            assert!(matches!(at(run), Some(Cached::Rows(_))));
        }
        // With no recent part, readers write nothing.
        let stamp = || Stamp::of(&archive.root().join(CACHE_FILE)).unwrap();
        let before = stamp();
        assert_eq!(archive.runs_where(&only_first).unwrap().value, found);
        assert!(stamp() == before && !root_has(&archive, RECENT_FILE));
        assert_eq!(runs_both_ways(&archive).value, vec![first, second]);
    }

    #[test]
    fn a_run_whose_summary_has_no_json_form_is_not_added_to_the_recent_part() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let mut run = train(&archive, 0, 0.0);
        let recent = archive.root().join(RECENT_FILE);
        let before = fs::read(&recent).unwrap();
        let file = row_file(&archive, &run);
        run.summary.insert("loss".into(), f64::NAN);
        RunsCache::add_recent(archive.root(), &file, &run).unwrap();
        assert_eq!(fs::read(&recent).unwrap(), before);
        run.summary.insert("loss".into(), 0.5);
        RunsCache::add_recent(archive.root(), &file, &run).unwrap();
        assert!(fs::read(&recent).unwrap().len() > before.len());
    }

    #[test]
    fn a_compaction_leaves_the_merged_rows_cached() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let runs: Vec<RunRecord> = (0..3).map(|seed| train(&archive, seed, 0.0)).collect();
        // Two files read (and cached whole), one cached by its writer in the recent part.
        archive.runs().unwrap();
        let late = train(&archive, 3, 0.0);
        assert!(root_has(&archive, RECENT_FILE));
        crate::compact::execute(&archive, &crate::compact::plan(&archive).unwrap()).unwrap();
        let day = crate::files::day_dir(archive.root(), Table::Runs, late.started_at.date_naive());
        let merged: Vec<PathBuf> = fs::read_dir(&day)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| files::is_merged(path))
            .collect();
        assert_eq!(merged.len(), 1, "{merged:?}");
        // Cached before any read, under the merged file's name and stamp, and nothing else.
        let cache = RunsCache::load(archive.root());
        assert_eq!(cache.len(), 1);
        let rows = cache.rows(
            &key(archive.root(), &merged[0]),
            &Stamp::of(&merged[0]).unwrap(),
        );
        assert_eq!(rows, Some(Cached::Rows(0..4)));
        assert!(!root_has(&archive, RECENT_FILE), "folded into the whole");
        let mut expected = runs;
        expected.push(late);
        assert_eq!(runs_both_ways(&archive).value, expected);
    }

    #[test]
    fn the_cache_serves_the_files_it_has_read_while_they_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let run = train(&archive, 1, 0.0);
        assert_eq!(archive.runs().unwrap().value, vec![run.clone()]);
        // The file's bytes replaced in place, with its size, inode and modification time
        // kept: its inode's change time moved, so it is read again (and found damaged).
        let path = row_file(&archive, &run);
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        let len = fs::metadata(&path).unwrap().len() as usize;
        // Unchanged since it was read: the cache serves it.
        let relative = path.strip_prefix(archive.root()).unwrap().to_str().unwrap();
        let cache = RunsCache::load(archive.root());
        assert!(cache.rows(relative, &Stamp::of(&path).unwrap()).is_some());
        fs::write(&path, vec![b'x'; len]).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(modified).unwrap();
        drop(file);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), modified);
        let loaded = archive.runs().unwrap();
        assert!(loaded.value.is_empty());
        assert_eq!(loaded.damaged.len(), 1);
        // The same file unchanged since: still read each time (a damaged file is never
        // cached), and named each time.
        assert_eq!(archive.runs().unwrap().damaged.len(), 1);
    }

    /// `bytes` with every `from` replaced by `to` (of the same length); at least one.
    fn replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let mut out = bytes.to_vec();
        let mut found = 0;
        for at in 0..=out.len() - from.len() {
            if &out[at..at + from.len()] == from {
                out[at..at + from.len()].copy_from_slice(to);
                found += 1;
            }
        }
        assert!(
            found > 0,
            "{:?} is not in the cache",
            String::from_utf8_lossy(from)
        );
        out
    }

    #[test]
    fn a_cache_that_cannot_be_used_is_ignored_and_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        for seed in 0..3 {
            train(&archive, seed, 0.0);
        }
        // The writers' rows in the recent part, then all of them in the whole.
        let recent = archive.root().join(RECENT_FILE);
        let good_recent = fs::read(&recent).unwrap();
        fs::remove_file(&recent).unwrap();
        let expected = archive.runs().unwrap().value;
        let cache = archive.root().join(CACHE_FILE);
        let good = fs::read(&cache).unwrap();
        assert_eq!(RunsCache::load(archive.root()).len(), 3);
        let mut bad: Vec<Vec<u8>> = (1..16)
            .map(|i| good[..good.len() * i / 16].to_vec())
            .collect();
        bad.push(b"not a cache at all".to_vec());
        bad.push(Vec::new());
        // Its footer (the layout of its columns) damaged.
        let mut flipped = good.clone();
        let end = flipped.len() - 10;
        for byte in &mut flipped[end - 64..end] {
            *byte ^= 0x55;
        }
        bad.push(flipped);
        // Another layout: the same file with its layout's name changed.
        let other_layout = layout().replace("cache-", "cache_");
        bad.push(replaced(
            &good,
            layout().as_bytes(),
            other_layout.as_bytes(),
        ));
        // Written without fsync before the system last started.
        if let Some(boot) = boot() {
            let other_boot: String = boot.chars().rev().collect();
            bad.push(replaced(&good, boot.as_bytes(), other_boot.as_bytes()));
        }
        // Either part of the cache, the other one gone.
        for (part, other) in [(&cache, &recent), (&recent, &cache)] {
            for bytes in &bad {
                let _ = fs::remove_file(other);
                fs::write(part, bytes).unwrap();
                assert_eq!(RunsCache::load(archive.root()).len(), 0, "not used");
                assert_eq!(archive.runs().unwrap().value, expected);
                assert_eq!(RunsCache::load(archive.root()).len(), 3, "written again");
                assert!(!recent.exists(), "folded into the whole");
            }
        }
        // Rows that do not read back (summary names that are not JSON) in a file that does.
        fs::write(&cache, replaced(&good, br#""loss"]"#, br#""loss"}"#)).unwrap();
        assert_eq!(RunsCache::load(archive.root()).len(), 3);
        assert_eq!(archive.runs().unwrap().value, expected);
        assert!(fs::read(&cache).unwrap() == good, "written again");
        // The recent part as the writers left it, beside the whole: the same rows.
        fs::write(&recent, &good_recent).unwrap();
        assert_eq!(archive.runs().unwrap().value, expected);
        assert!(recent.exists(), "nothing new: nothing written");
    }

    #[test]
    fn stored_rows_come_back_under_their_file_and_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let runs: Vec<RunRecord> = (0..3).map(|seed| train(&archive, seed, 0.0)).collect();
        let batch = |rows: &[RunRecord]| {
            let path = dir.path().join("rows.parquet");
            files::write_parquet(
                &path,
                Table::Runs,
                &crate::records::runs_to_batch(rows).unwrap(),
            )
            .unwrap();
            cached_form(&files::read_parquet(&path, Table::Runs).unwrap().remove(0)).unwrap()
        };
        let stamp = |len: u64| Stamp {
            len,
            modified_ns: 1,
            changed_ns: 3,
            inode: 2,
        };
        let files = [
            ("runs/a.parquet".to_string(), stamp(1), batch(&runs[..2])),
            ("runs/b.parquet".to_string(), stamp(2), batch(&runs[2..])),
        ];
        RunsCache::store(dir.path(), &files).unwrap();
        let cache = RunsCache::load(dir.path());
        assert_eq!(cache.len(), 2);
        let read = |path: &str, len: u64| {
            let at = cache.rows(path, &stamp(len))?;
            Some(crate::records::runs_from_batch(&cache.slice(&at).unwrap()).unwrap())
        };
        assert_eq!(read("runs/a.parquet", 1).unwrap(), runs[..2]);
        assert_eq!(read("runs/b.parquet", 2).unwrap(), runs[2..]);
        assert_eq!(read("runs/a.parquet", 2), None, "another stamp");
        assert_eq!(read("runs/c.parquet", 1), None, "another file");
        // The two files' dictionaries became one, each value once: the three runs share
        // their environment, and differ in their seeds.
        let distinct = |column: &str| {
            let batch = cache.batch().unwrap();
            let column = batch.column_by_name(column).unwrap();
            column.as_dictionary::<Int32Type>().values().len()
        };
        assert_eq!(distinct("env"), 1);
        assert_eq!(distinct("seeds"), 3);
    }

    #[test]
    fn summaries_are_kept_as_names_and_values_that_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let run = train(&archive, 1, 0.0);
        let path = row_file(&archive, &run);
        let stored = files::read_parquet(&path, Table::Runs).unwrap().remove(0);
        let cached = cached_form(&stored).unwrap();
        assert!(cached.column_by_name("summary").is_none());
        let names = cached
            .column_by_name(SUMMARY_NAMES)
            .unwrap()
            .as_dictionary::<Int32Type>();
        let names = names.values().as_string::<i32>().value(0);
        assert_eq!(names, r#"["acc","loss"]"#);
        let back = crate::records::runs_from_batch(&cached).unwrap();
        assert_eq!(back, crate::records::runs_from_batch(&stored).unwrap());
        assert_eq!(back[0].summary, run.summary);
        // Names and values that do not pair up are an error, not a shorter summary.
        let one_name: DictionaryArray<Int32Type> = [r#"["acc"]"#].into_iter().collect();
        let mut columns = cached.columns().to_vec();
        columns[cached.schema().index_of(SUMMARY_NAMES).unwrap()] = Arc::new(one_name);
        let mismatched = RecordBatch::try_new(cache_schema(), columns).unwrap();
        let err = crate::records::runs_from_batch(&mismatched).unwrap_err();
        assert!(err.to_string().contains("not one value per name"), "{err}");
    }
}
