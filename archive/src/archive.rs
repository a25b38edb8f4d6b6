//! An archive directory: opening it, blobs, cells, and reading runs and their curves back
//! with every status derived (a `running` row whose writer died reads as `interrupted`).

use crate::cache::{self, Cached, RunsCache, Stamp};
use crate::canonical::Hash;
use crate::files::{self, read_parquet, ChunkName};
use crate::query::Condition;
use crate::records::{self, CellRecord, MetricPoint, RowFilter, RunRecord, Status};
use crate::schema::Table;
use crate::{Error, Result};
use arrow::array::RecordBatch;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A run archive rooted at a directory.
#[derive(Clone, Debug)]
pub struct Archive {
    root: PathBuf,
}

/// A value read from the archive, with the files that could not be read on the way.
#[derive(Debug)]
pub struct Loaded<T> {
    pub value: T,
    /// One error per damaged or foreign file, each naming its path.
    pub damaged: Vec<Error>,
}

impl<T> Loaded<T> {
    /// The value, with each damaged file named on stderr: what a person reading the archive
    /// from a shell or a notebook wants.
    pub fn warn_damaged(self) -> T {
        for damaged in &self.damaged {
            eprintln!("warning: {damaged}");
        }
        self.value
    }
}

/// The environment variable that names the default archive.
pub const ARCHIVE_ENV: &str = "RECIPE_ARCHIVE";

impl Archive {
    /// Open (creating if needed) the archive at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Archive> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        // An archive inside a git work tree must not count as an uncommitted change: every run
        // would then change the code identity of the next.
        let ignore = root.join(".gitignore");
        if !ignore.exists() {
            fs::write(&ignore, "# recipe's run archive: not source code\n*\n")
                .map_err(|e| Error::io(&ignore, e))?;
        }
        // A merge that a crash interrupted is finished before anything is read or written.
        crate::replace::recover(&root)?;
        Ok(Archive { root })
    }

    /// Open an existing archive for reading; a missing folder is an error that says how one
    /// is made.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Archive> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::NotFound(format!(
                "no archive at {}: runs are archived there when a notebook or `recipe exec` trains; \
                 pass --archive PATH or set {ARCHIVE_ENV} to use another one",
                root.display()
            )));
        }
        // Where the archive can be written: see `open`.
        crate::replace::recover(&root)?;
        Ok(Archive { root })
    }

    /// `$RECIPE_ARCHIVE`, else `./runs`.
    pub fn default_root() -> PathBuf {
        std::env::var_os(ARCHIVE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("runs"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Store bytes under their blake3 hash; storing the same bytes twice is free.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Hash> {
        let hash = Hash::of_bytes(bytes);
        let path = self.blob_path(&hash);
        if !path.exists() {
            files::write_atomic(&path, |f| {
                std::io::Write::write_all(f, bytes).map_err(|e| Error::io(&path, e))
            })?;
        }
        Ok(hash)
    }

    /// The bytes stored under `hash`, checked against it.
    pub fn blob(&self, hash: &Hash) -> Result<Vec<u8>> {
        let path = self.blob_path(hash);
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if Hash::of_bytes(&bytes) != *hash {
            return Err(Error::Damaged {
                path,
                reason: "content does not match its blake3 name".into(),
            });
        }
        Ok(bytes)
    }

    fn blob_path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.path("blobs").join(&hex[..2]).join(hex)
    }

    /// Record one executed notebook cell.
    pub fn record_cell(&self, cell: &CellRecord) -> Result<()> {
        let dir = files::day_dir(&self.root, Table::Cells, cell.started_at.date_naive());
        let nanos = cell.started_at.timestamp_nanos_opt().unwrap_or_default();
        let safe_session: String = cell
            .session_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let path = dir.join(format!(
            "{safe_session}-{:06}-{nanos}.parquet",
            cell.execution_count
        ));
        files::write_parquet(
            &path,
            Table::Cells,
            &records::cells_to_batch(std::slice::from_ref(cell))?,
        )
    }

    /// Every recorded cell, in session and execution order.
    pub fn cells(&self) -> Result<Loaded<Vec<CellRecord>>> {
        let loaded = self.read_rows(Table::Cells, &|_| true, &|_, b| {
            records::cells_from_batch(b)
        })?;
        let mut unique = BTreeMap::new();
        for cell in loaded.value {
            unique.insert(
                (
                    cell.session_id.clone(),
                    cell.started_at,
                    cell.execution_count,
                ),
                cell,
            );
        }
        Ok(Loaded {
            value: unique.into_values().collect(),
            damaged: loaded.damaged,
        })
    }

    /// Every run attempt, oldest first, with statuses derived: a `running` row without a live
    /// writer is `interrupted` at its last flushed step, and the first attempt of an identity
    /// carries whether its replicates reproduced it.
    pub fn runs(&self) -> Result<Loaded<Vec<RunRecord>>> {
        self.runs_where(&[])
    }

    /// The runs that satisfy every condition: [`Archive::runs`] then
    /// [`crate::query::filter_runs`], except that rows failing a condition on an identity
    /// component (`config.lr=0.01`) are never turned into records (all attempts of a run
    /// share their components, so replicates are still judged together).
    pub fn runs_where(&self, conditions: &[Condition]) -> Result<Loaded<Vec<RunRecord>>> {
        let (on_identity, others): (Vec<&Condition>, Vec<&Condition>) =
            conditions.iter().partition(|c| c.component().is_some());
        let passes = |component: usize, value: &serde_json::Value| {
            on_identity
                .iter()
                .filter(|c| c.component() == Some(component))
                .all(|c| c.matches_component(value))
        };
        let mut tested = [false; 5];
        for c in &on_identity {
            tested[c.component().unwrap_or_default()] = true;
        }
        let loaded = self.raw_runs_where(&RowFilter {
            passes: &passes,
            tested,
            check_left_out: true,
        })?;
        let mut damaged = loaded.damaged;
        let mut runs = loaded.value;
        for run in runs.iter_mut() {
            damaged.extend(self.settle_dead_writer(run)?);
        }
        mark_replicates(&mut runs);
        runs.retain(|run| others.iter().all(|c| c.matches(run)));
        Ok(Loaded {
            value: runs,
            damaged,
        })
    }

    /// A `running` row whose writer is gone becomes `interrupted` at its last flushed step,
    /// with the last flushed value of each metric in its summary (as `finish` would have
    /// put it). Returns the damaged files met while finding that step.
    pub(crate) fn settle_dead_writer(&self, run: &mut RunRecord) -> Result<Vec<Error>> {
        if run.status != Status::Running || self.is_live(&run.run_id, run.attempt) {
            return Ok(Vec::new());
        }
        run.status = Status::Interrupted;
        let points = self.metrics_of(&run.run_id, run.attempt)?;
        run.last_step = points.value.iter().map(|p| p.step).max();
        // Points are sorted by (name, step): each name's last point is its last value.
        for pair in points.value.windows(2) {
            if pair[0].name != pair[1].name {
                run.summary
                    .entry(pair[0].name.as_str().into())
                    .or_insert(pair[0].value);
            }
        }
        if let Some(last) = points.value.last() {
            run.summary
                .entry(last.name.as_str().into())
                .or_insert(last.value);
        }
        run.error.get_or_insert_with(|| {
            "the writing process ended without finishing the run (killed or crashed); \
             every flushed chunk is kept"
                .into()
        });
        Ok(points.damaged)
    }

    /// The rows of `runs` as stored, one per attempt (the newest version of each).
    pub(crate) fn raw_runs(&self) -> Result<Loaded<Vec<RunRecord>>> {
        self.raw_runs_where(&RowFilter::ALL)
    }

    /// [`Archive::raw_runs`] of the rows `filter` keeps.
    fn raw_runs_where(&self, filter: &RowFilter) -> Result<Loaded<Vec<RunRecord>>> {
        let cache = RunsCache::load(&self.root);
        let loaded = match self.runs_rows(&cache, filter) {
            // Cached rows that do not read back: the cache is ignored and written again.
            Err(_) if cache.len() > 0 => self.runs_rows(&RunsCache::default(), filter)?,
            read => read?,
        };
        let rows = loaded.value;
        // Sort positions, not the records (large structs, moved at every swap). The sort is
        // stable: among versions that are equally new, the first read wins. Rows come in
        // the order of their files' names, which start with the run id: almost sorted.
        let attempt_of = |i: usize| (&rows[i].run_id, rows[i].attempt);
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| attempt_of(a).cmp(&attempt_of(b)));
        let mut newest: Vec<usize> = Vec::with_capacity(order.len());
        for i in order {
            match newest.last_mut() {
                Some(kept) if attempt_of(*kept) == attempt_of(i) => {
                    if rows[i].is_newer_than(&rows[*kept]) {
                        *kept = i;
                    }
                }
                _ => newest.push(i),
            }
        }
        // Listed by start, then id: the start as one number decides almost every comparison
        // (rows in run id order are in random order of start). Keys are unique, so an
        // unstable sort gives one order.
        let listed = |i: usize| (rows[i].started_at, &rows[i].run_id, rows[i].attempt);
        let mut by_start: Vec<(i64, usize)> = (newest.iter())
            .map(|&i| (rows[i].started_at.timestamp_micros(), i))
            .collect();
        by_start.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| listed(a.1).cmp(&listed(b.1))));
        let mut slots: Vec<Option<RunRecord>> = rows.into_iter().map(Some).collect();
        let mut runs = Vec::with_capacity(newest.len());
        runs.extend(by_start.into_iter().filter_map(|(_, i)| slots[i].take()));
        Ok(Loaded {
            value: runs,
            damaged: loaded.damaged,
        })
    }

    /// One run attempt's metric points, sorted by (name, step).
    pub fn metrics(&self, run: &RunRecord) -> Result<Loaded<Vec<MetricPoint>>> {
        self.metrics_of(&run.run_id, run.attempt)
    }

    /// Several run attempts' metric points, each sorted by (name, step), in the order of
    /// `runs`: one listing of the table, and the files of all of them read on every core
    /// (what a diff or an overlay of curves reads).
    pub fn metrics_of_runs(&self, runs: &[&RunRecord]) -> Result<Loaded<Vec<Vec<MetricPoint>>>> {
        let attempts: Vec<(&str, u32)> = runs
            .iter()
            .map(|r| (r.run_id.as_str(), r.attempt))
            .collect();
        self.metrics_of_attempts(&attempts)
    }

    pub(crate) fn metrics_of(
        &self,
        run_id: &str,
        attempt: u32,
    ) -> Result<Loaded<Vec<MetricPoint>>> {
        let loaded = self.metrics_of_attempts(&[(run_id, attempt)])?;
        Ok(Loaded {
            value: loaded.value.into_iter().next().unwrap_or_default(),
            damaged: loaded.damaged,
        })
    }

    fn metrics_of_attempts(
        &self,
        attempts: &[(&str, u32)],
    ) -> Result<Loaded<Vec<Vec<MetricPoint>>>> {
        // A chunk file is named `RUN-aN-c...`: the "-c" keeps attempt 1 from matching 12.
        let prefixes: Vec<String> = attempts
            .iter()
            .map(|(run_id, attempt)| format!("{run_id}-a{attempt}-c"))
            .collect();
        let owner = |name: &str| prefixes.iter().position(|p| name.starts_with(p.as_str()));
        let keep = |name: &str| owner(name).is_some();
        let decode = |path: &Path, batch: &arrow::array::RecordBatch| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let i = owner(name).ok_or_else(|| Error::Format("not a chunk of these runs".into()))?;
            let (run_id, attempt) = attempts[i];
            let points = records::metrics_from_batch(batch, run_id, attempt)?;
            Ok(points.into_iter().map(|p| (i, p)).collect())
        };
        let loaded = self.read_rows(Table::Metrics, &keep, &decode)?;
        let mut per_attempt: Vec<Vec<MetricPoint>> = vec![Vec::new(); attempts.len()];
        for (i, point) in loaded.value {
            per_attempt[i].push(point);
        }
        for (j, prefix) in prefixes.iter().enumerate() {
            // An attempt asked for twice gets its points twice.
            let first = prefixes.iter().position(|p| p == prefix).unwrap_or(j);
            if first != j {
                per_attempt[j] = per_attempt[first].clone();
            }
        }
        for points in &mut per_attempt {
            points.sort_by(|a, b| (&a.name, a.step).cmp(&(&b.name, b.step)));
        }
        Ok(Loaded {
            value: per_attempt,
            damaged: loaded.damaged,
        })
    }

    /// Find one run attempt by reference: a run-id prefix (its first attempt),
    /// `prefix@attempt`, or a run name (the most recent run of that name).
    pub fn find(&self, reference: &str) -> Result<RunRecord> {
        let runs = self.runs()?.value;
        find_in(&runs, reference).cloned()
    }

    /// The rows of every `runs` file that `filter` keeps, about in the order of the files'
    /// paths (the whole cache's rows come in runs, the recent part's last): a file unchanged
    /// since it was cached is read from the runs cache, the others are decoded from Parquet,
    /// all on every core; then the cache is brought up to date.
    fn runs_rows(&self, cache: &RunsCache, filter: &RowFilter) -> Result<Loaded<Vec<RunRecord>>> {
        enum Part {
            Cached(Range<usize>),
            Stored(PathBuf),
        }
        // Cached rows were read through when their file was first decoded.
        let trusted = RowFilter {
            check_left_out: false,
            ..*filter
        };
        retrying(Table::Runs, || {
            let paths = files::list_table(&self.root, Table::Runs)?;
            let (mut listed, mut parts) = (Vec::with_capacity(paths.len()), Vec::new());
            // The last run of the whole cache's rows in `parts`, and the recent part's rows.
            let (mut last_cached, mut recent) = (None, Vec::new());
            for path in paths {
                let stamp = match Stamp::of(&path) {
                    Ok(stamp) => stamp,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io(&path, e)),
                };
                let key = cache::key(&self.root, &path);
                let cached = cache.rows(&key, &stamp);
                match &cached {
                    Some(Cached::Rows(rows)) => {
                        // Files cached one after the other are read as one run of rows, even
                        // with a new file or one of the recent part listed between them.
                        let last = last_cached.and_then(|i| match &mut parts[i] {
                            (_, Part::Cached(last)) if last.end == rows.start => Some(last),
                            _ => None,
                        });
                        match last {
                            Some(last) => last.end = rows.end,
                            None => {
                                last_cached = Some(parts.len());
                                parts.push((listed.len(), Part::Cached(rows.clone())));
                            }
                        }
                    }
                    Some(Cached::Recent(row)) => recent.push(*row),
                    None => parts.push((listed.len(), Part::Stored(path))),
                }
                listed.push((key, stamp, cached));
            }
            // A few rows of JSON, parsed here: a thread of their own would cost more to start.
            // Rows that do not read back fail the read, which is then made without the cache.
            let used_recent = !recent.is_empty();
            let mut recent = cache.recent_runs(&recent)?;
            recent.retain(|run| filter.keeps(run));
            let large = |(_, part): &(usize, Part)| match part {
                Part::Cached(_) => true,
                Part::Stored(path) => files::is_merged(path),
            };
            let results = in_parallel(&parts, large, |(_, part)| match part {
                Part::Cached(rows) => {
                    let batch = cache.batch().expect("rows of a cached file");
                    let runs = records::runs_from_batch_where(batch, rows.clone(), &trusted)?;
                    Ok((None, runs))
                }
                Part::Stored(path) => {
                    let batches = read_parquet(path, Table::Runs)?;
                    let whole = match batches.len() {
                        1 => batches[0].clone(),
                        _ => arrow::compute::concat_batches(&Table::Runs.read_schema(), &batches)?,
                    };
                    // Summaries are parsed once, into the cache's form, which the records
                    // are then made from.
                    let whole = cache::cached_form(&whole)?;
                    let all = 0..whole.num_rows();
                    let runs = records::runs_from_batch_where(&whole, all, filter)?;
                    Ok((Some(whole), runs))
                }
            });
            let (mut runs, mut damaged) = (Vec::new(), Vec::new());
            let mut fresh: Vec<Option<RecordBatch>> = vec![None; listed.len()];
            for ((file, part), result) in parts.iter().zip(results) {
                match (part, result) {
                    (_, Ok((whole, rows))) => {
                        match runs.is_empty() {
                            true => runs = rows, // the common case: one part, not moved again
                            false => runs.extend(rows),
                        }
                        fresh[*file] = whole;
                    }
                    // Cached rows that do not read back: the caller reads without the cache.
                    (Part::Cached(_), Err(e)) => return Err(e),
                    (Part::Stored(_), Err(Error::Io { source, .. }))
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Ok(None)
                    }
                    (Part::Stored(path), Err(Error::Format(reason))) => {
                        damaged.push(Error::Damaged {
                            path: path.clone(),
                            reason,
                        })
                    }
                    (Part::Stored(_), Err(e)) => damaged.push(e),
                }
            }
            runs.extend(recent);
            // Files new or gone since the cache was written, or a recent part read again with
            // nothing added: write it again. A cache that cannot be written (a read-only
            // archive) only makes the next read slower.
            let hits = listed
                .iter()
                .filter(|(_, _, cached)| cached.is_some())
                .count();
            let added = fresh.iter().filter(|f| f.is_some()).count();
            let fold = used_recent && cache.recent_was_read();
            if added > 0 || cache.len() > hits || fold {
                let next: Vec<(String, Stamp, RecordBatch)> = listed
                    .into_iter()
                    .zip(fresh)
                    .filter_map(|((key, stamp, cached), fresh)| {
                        let cached = cached.and_then(|at| cache.slice(&at));
                        Some((key, stamp, cached.or(fresh)?))
                    })
                    .collect();
                let _ = RunsCache::store(&self.root, &next);
            } else if used_recent {
                RunsCache::mark_recent_read(&self.root);
            }
            Ok(Some(Loaded {
                value: runs,
                damaged,
            }))
        })
    }

    /// Read every file of a table whose name `select` keeps. A file deleted between listing and
    /// reading (a concurrent compaction) restarts the read, so a reader never sees a
    /// half-compacted table; damaged files are collected, not fatal.
    pub(crate) fn read_rows<T: Send>(
        &self,
        table: Table,
        select: &dyn Fn(&str) -> bool,
        decode: Decoder<T>,
    ) -> Result<Loaded<Vec<T>>> {
        retrying(table, || {
            let mut paths: Vec<PathBuf> = files::list_table_where(&self.root, table, select)?;
            if table == Table::Metrics {
                let named = paths
                    .into_iter()
                    .filter_map(|p| ChunkName::parse(&p).map(|n| (p, n)))
                    .collect();
                paths = files::without_covered(named)
                    .into_iter()
                    .map(|(p, _)| p)
                    .collect();
            }
            let Some(decoded) = read_listed(&paths, table, decode) else {
                return Ok(None);
            };
            let mut rows = Vec::new();
            let mut damaged = Vec::new();
            for result in decoded {
                match result {
                    Ok(decoded) => rows.extend(decoded),
                    Err(e) => damaged.push(e),
                }
            }
            Ok(Some(Loaded {
                value: rows,
                damaged,
            }))
        })
    }
}

/// Run `read` (list a table's files, then read them) until no file it listed was deleted
/// before it could be read (`None`: a concurrent compaction replaced it), so that a reader
/// never sees a half-compacted table.
fn retrying<T>(table: Table, mut read: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    const TRIES: usize = 20;
    for _ in 0..TRIES {
        if let Some(read) = read()? {
            return Ok(read);
        }
    }
    Err(Error::Invalid(format!(
        "the {} table kept changing while it was read ({TRIES} tries); try again",
        table.name()
    )))
}

/// Each file's decoded rows, or the error that makes it damaged (named by its path); `None`
/// when a file was deleted before it could be read.
fn read_listed<T: Send>(
    paths: &[PathBuf],
    table: Table,
    decode: Decoder<T>,
) -> Option<Vec<Result<Vec<T>>>> {
    let mut out = Vec::with_capacity(paths.len());
    for (path, result) in paths.iter().zip(read_all(paths, table, decode)) {
        out.push(match result {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return None
            }
            Err(Error::Format(reason)) => Err(Error::Damaged {
                path: path.clone(),
                reason,
            }),
            other => other,
        });
    }
    Some(out)
}

/// Turns one batch of a table's file into records; called on several threads at once.
type Decoder<'a, T> = &'a (dyn Fn(&Path, &arrow::array::RecordBatch) -> Result<Vec<T>> + Sync);

/// Read and decode files on every core: reading is per-file work (open, footer,
/// decompress, decode), and a table is often one large merged file beside many small ones,
/// which [`in_parallel`] takes first.
fn read_all<T: Send>(paths: &[PathBuf], table: Table, decode: Decoder<T>) -> Vec<Result<Vec<T>>> {
    let read_one = |path: &PathBuf| -> Result<Vec<T>> {
        let mut out = Vec::new();
        for batch in read_parquet(path, table)? {
            out.extend(decode(path, &batch)?);
        }
        Ok(out)
    };
    in_parallel(paths, |path| files::is_merged(path), read_one)
}

/// The cores this process may use (asked once: the answer reads several files).
fn available_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `work` on every item, on every core, results in the order of `items`. Each thread takes
/// the next item not yet taken, the `large` ones first, so one thread works through a large
/// item while the others go through the small ones. A panic in `work` (a damaged file the
/// decoder did not foresee) is that item's error, not the reader's end.
fn in_parallel<I: Sync, T: Send>(
    items: &[I],
    large: impl Fn(&I) -> bool,
    work: impl Fn(&I) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let cores = available_cores();
    let one = |item: &I| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(item)))
            .unwrap_or_else(|_| Err(Error::Format("decoding it panicked".into())))
    };
    let threads = cores.min(8).min(items.len());
    if threads <= 1 {
        return items.iter().map(one).collect();
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| !large(&items[i]));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        loop {
            let taken = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&i) = order.get(taken) else {
                return done;
            };
            done.push((i, one(&items[i])));
        }
    };
    let mut results: Vec<Option<Result<T>>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(worker)).collect();
        let mut all = worker();
        for helper in helpers {
            // A panicking thread leaves its items unset; they are reported below.
            all.extend(helper.join().unwrap_or_default());
        }
        for (i, result) in all {
            results[i] = Some(result);
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Format("a reader thread panicked".into()))))
        .collect()
}

/// Open (creating) a lock file; lock it with [`try_lock`] or [`lock_blocking`].
pub(crate) fn open_lock_file(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Take a non-blocking flock on `file`; the lock lives as long as the file stays open.
pub(crate) fn try_lock(file: &File, kind: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid, open file descriptor has no memory effects.
    unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) == 0 }
}

/// Wait for an exclusive flock on `file`; the lock lives as long as the file stays open.
pub(crate) fn lock_blocking(file: &File) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid, open file descriptor has no memory effects.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "flock failed: {}",
            std::io::Error::last_os_error()
        )))
    }
}

/// Spread what replicates found to every attempt of their identity, so both sides of a
/// nondeterministic pair say so: any mismatch marks all attempts nondeterministic (at the
/// earliest diverging step); otherwise every completed attempt reads as reproduced.
fn mark_replicates(runs: &mut [RunRecord]) {
    let mut verdicts: BTreeMap<String, (bool, Option<i64>)> = BTreeMap::new();
    for run in runs.iter() {
        if let Some(reproduced) = run.reproduced {
            let entry = verdicts.entry(run.run_id.clone()).or_insert((true, None));
            if !reproduced {
                entry.0 = false;
                entry.1 = entry.1.into_iter().chain(run.diverged_step).min();
            }
        }
    }
    for run in runs.iter_mut() {
        match verdicts.get(&run.run_id) {
            Some(&(false, step)) => {
                run.reproduced = Some(false);
                run.diverged_step = step;
            }
            Some(&(true, _)) if run.status == Status::Completed => run.reproduced = Some(true),
            _ => {}
        }
    }
}

/// Resolve a run reference among `runs` (see [`Archive::find`]).
pub fn find_in<'a>(runs: &'a [RunRecord], reference: &str) -> Result<&'a RunRecord> {
    let (prefix, attempt) = match reference.split_once('@') {
        Some((p, a)) => {
            let a = a.parse::<u32>().map_err(|_| {
                Error::Invalid(format!(
                    "{reference:?}: the part after @ must be an attempt number"
                ))
            })?;
            (p, Some(a))
        }
        None => (reference, None),
    };
    if prefix.is_empty() {
        return Err(Error::Invalid(
            "an empty run reference matches every run".into(),
        ));
    }
    let by_id: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.run_id.starts_with(prefix) && attempt.is_none_or(|a| r.attempt == a))
        .collect();
    if by_id.is_empty() {
        // By name: the most recent run of that name (names are reused as code changes).
        let by_name = runs
            .iter()
            .filter(|r| r.name == prefix && attempt.is_none_or(|a| r.attempt == a));
        if let Some(latest) = by_name.max_by_key(|r| (r.started_at, r.attempt)) {
            let first_attempt = runs
                .iter()
                .filter(|r| r.run_id == latest.run_id && attempt.is_none_or(|a| r.attempt == a))
                .min_by_key(|r| r.attempt);
            return Ok(first_attempt.unwrap_or(latest));
        }
    }
    let candidates = by_id;
    let ids: std::collections::BTreeSet<&str> =
        candidates.iter().map(|r| r.run_id.as_str()).collect();
    match (ids.len(), candidates.len()) {
        (0, _) => Err(Error::NotFound(format!(
            "no run matches {reference:?}; `recipe runs list` shows the run ids"
        ))),
        (1, _) => candidates
            .into_iter()
            .min_by_key(|r| r.attempt)
            .ok_or_else(|| Error::NotFound(reference.to_string())),
        (n, _) => Err(Error::NotFound(format!(
            "{reference:?} matches {n} runs ({}); give more digits of the run id",
            ids.iter()
                .take(4)
                .map(|id| &id[..12.min(id.len())])
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_run as run;

    #[test]
    fn references_resolve_by_prefix_attempt_or_latest_name() {
        let mut runs = vec![
            run("ab12", 1, None, 0.1),
            run("ab34", 1, None, 0.2),
            run("ab34", 2, Some(true), 0.2),
        ];
        runs[1].started_at = runs[0].started_at + chrono::Duration::seconds(1);
        runs[2].started_at = runs[1].started_at + chrono::Duration::seconds(1);
        assert!(find_in(&runs, "ab")
            .unwrap_err()
            .to_string()
            .contains("give more digits"));
        assert_eq!(find_in(&runs, "ab1").unwrap().run_id, "ab12");
        assert_eq!(find_in(&runs, "ab34@2").unwrap().attempt, 2);
        assert!(find_in(&runs, "ab34@x").is_err());
        // Both are named "m": the latest run wins, as its first attempt.
        assert_eq!(find_in(&runs, "m").unwrap().key(), "ab34@1");
        assert!(find_in(&runs, "zz")
            .unwrap_err()
            .to_string()
            .contains("no run matches"));
    }
}
