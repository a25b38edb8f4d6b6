//! Compaction: merge the many small files that writers commit into few large ones, without
//! ever blocking or breaking a reader.
//!
//! Decide, then act: [`plan`] looks at the archive and returns [`Action`]s; [`execute`] does
//! the I/O. Every merge replaces its sources through `replace`, so no reader of the plain
//! Parquet files ever sees a row twice, whenever the process is killed, and the next open or
//! compaction finishes a merge a crash interrupted. Runs whose writer is alive are left
//! alone. A `running` row whose writer died is written back as `interrupted` at its last
//! committed step, with the last committed value of each metric as its summary, so other
//! engines read the status recipe shows.

use crate::archive::Archive;
use crate::cache::{RunsCache, Stamp};
use crate::files::{self, list_table, ChunkName};
use crate::records::{self, RunRecord, Status};
use crate::replace::{self, compaction_lock};
use crate::schema::Table;
use crate::{Error, Result};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One step of a compaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Merge the chunk files of one finished run attempt into one file.
    MergeMetrics {
        sources: Vec<PathBuf>,
        dest: PathBuf,
    },
    /// Merge the row files of one day of `runs` or `cells` into one file.
    MergeRows {
        table: Table,
        sources: Vec<PathBuf>,
        dest: PathBuf,
    },
    /// Write back the row file of a run whose writer died while it was `running`, settled
    /// as interrupted (when no merge of its day takes it).
    SettleDeadRun(PathBuf),
    /// Remove a temp file whose writing process is gone.
    RemoveTemp(PathBuf),
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub files_before: usize,
    pub files_after: usize,
    pub merges: usize,
    pub temps_removed: usize,
}

/// Decide what to merge. Pure apart from reading the listing and writer liveness.
pub fn plan(archive: &Archive) -> Result<Vec<Action>> {
    let mut actions = Vec::new();
    let live = |run_id: &str, attempt: u32| archive.is_live(run_id, attempt);

    // 1. Metrics: per finished run attempt, every file it has.
    let mut per_run: BTreeMap<(PathBuf, String, u32), Vec<(PathBuf, ChunkName)>> = BTreeMap::new();
    for path in list_table(archive.root(), Table::Metrics)? {
        if let Some(name) = ChunkName::parse(&path) {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            per_run
                .entry((dir, name.run_id.clone(), name.attempt))
                .or_default()
                .push((path, name));
        }
    }
    for ((dir, run_id, attempt), chunks) in per_run {
        let chunks = files::without_covered(chunks);
        if chunks.len() < 2 || live(&run_id, attempt) {
            continue;
        }
        let first = chunks.iter().map(|(_, n)| n.first).min().unwrap_or(1);
        let last = chunks.iter().map(|(_, n)| n.last).max().unwrap_or(1);
        let dest = dir.join(
            ChunkName {
                run_id,
                attempt,
                first,
                last,
            }
            .file_name(),
        );
        actions.push(Action::MergeMetrics {
            sources: chunks.into_iter().map(|(p, _)| p).collect(),
            dest,
        });
    }

    // 2. Rows of runs (of finished or dead runs) and cells, per day folder.
    for table in [Table::Runs, Table::Cells] {
        actions.extend(plan_row_merges(archive, table, Tiers::One(2))?);
    }

    // 3. Runs whose writer died while they were running, and which no merge settles.
    let merged: Vec<PathBuf> = (actions.iter())
        .flat_map(|a| match a {
            Action::MergeRows { sources, .. } => sources.clone(),
            _ => Vec::new(),
        })
        .collect();
    for run in archive.raw_runs()?.value {
        if run.status == Status::Running && !live(&run.run_id, run.attempt) {
            let path = crate::writer::row_path(archive, run.started_at.date_naive(), &run);
            if path.exists() && !merged.contains(&path) {
                actions.push(Action::SettleDeadRun(path));
            }
        }
    }

    // 4. Temp files of writers that died mid-write: in the tables' day folders, the folder
    // of pending merges, and the runs cache's folder (a reader killed while writing it).
    let cache_folder = Path::new(crate::cache::CACHE_FILE)
        .parent()
        .unwrap_or(Path::new(""));
    let mut folders = vec![
        archive.root().join(cache_folder),
        archive.root().join(replace::PENDING_DIR),
    ];
    for table in Table::ALL {
        if let Ok(days) = fs::read_dir(archive.root().join(table.name())) {
            folders.extend(days.flatten().map(|day| day.path()));
        }
    }
    for folder in folders {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if temp_writer_pid(&path)
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            {
                actions.push(Action::RemoveTemp(path));
            }
        }
    }
    Ok(actions)
}

/// Which row files of a day folder one merge takes, and how many make a merge.
#[derive(Clone, Copy, PartialEq)]
enum Tiers {
    /// All of them, merged or not, once there are this many: the fewest files (`recipe runs
    /// compact`).
    One(usize),
    /// By level: `fresh` files not merged yet make a file of level 1, and `merged` files of
    /// level k one of level k + 1. A row is then read again once per level, about
    /// log_merged(rows of the day / fresh) times, rather than at every merge.
    Levels { fresh: usize, merged: usize },
}

impl Tiers {
    /// The group of a day's row file named `stem` in a merge plan.
    fn group(self, stem: &str) -> u32 {
        match self {
            Tiers::One(_) => 0,
            Tiers::Levels { .. } => level(stem),
        }
    }

    /// How many files of a group make a merge.
    fn enough(self, group: u32) -> usize {
        match self {
            Tiers::One(n) => n,
            Tiers::Levels { fresh, .. } if group == 0 => fresh,
            Tiers::Levels { merged, .. } => merged,
        }
    }
}

/// The level of a row file: 0 not merged, k for `compacted-Lk-...`, and 1 for a merged file
/// of an archive from before levels (`compacted-HASH`).
fn level(stem: &str) -> u32 {
    match stem.strip_prefix(files::MERGED_PREFIX) {
        None => 0,
        Some(rest) => rest
            .strip_prefix('L')
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(level, _)| level.parse().ok())
            .unwrap_or(1),
    }
}

/// Merge the row files of each day folder of `table` that has enough of them in one of its
/// `tiers`, leaving out the rows of runs whose writer is alive.
fn plan_row_merges(archive: &Archive, table: Table, tiers: Tiers) -> Result<Vec<Action>> {
    let mut groups: BTreeMap<(PathBuf, u32), Vec<PathBuf>> = BTreeMap::new();
    for path in list_table(archive.root(), table)? {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let merged = stem.starts_with(files::MERGED_PREFIX);
        let writer_live = table == Table::Runs
            && !merged
            && stem
                .rsplit_once("-a")
                .is_some_and(|(id, a)| a.parse().is_ok_and(|a| archive.is_live(id, a)));
        if !writer_live {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            groups
                .entry((dir, tiers.group(stem)))
                .or_default()
                .push(path);
        }
    }
    Ok(groups
        .into_iter()
        .filter(|((_, group), sources)| sources.len() >= tiers.enough(*group))
        .map(|((dir, _), sources)| {
            let names: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
            let tag = blake3::hash(names.join("\n").as_bytes()).to_hex();
            let stem = |p: &PathBuf| p.file_stem().and_then(|s| s.to_str()).map(level);
            let below = sources.iter().filter_map(stem).max().unwrap_or(0);
            let dest = dir.join(format!(
                "{}L{}-{}.parquet",
                files::MERGED_PREFIX,
                below + 1,
                &tag[..16]
            ));
            Action::MergeRows {
                table,
                sources,
                dest,
            }
        })
        .collect())
}

/// How many finished row files a day of `runs` may gather before a finishing writer merges
/// them: listing reads every file, so a long sweep must not leave thousands of them.
pub const AUTO_COMPACT_ROWS: usize = 32;

/// How many merged files of one level a finishing writer merges into one of the next. Every
/// merged file costs a listing a file to read, and every merge reads its sources' rows
/// again: with 4, each row is read again once per level (6 levels hold 131,072 runs of a day),
/// and a listing finds at most 3 merged files per level and 31 unmerged ones per day.
pub const AUTO_COMPACT_MERGED: usize = 4;

/// The size of the runs cache (about 23,000 runs) up to which a finishing writer's merge
/// puts the merged rows in it, so that the first listing after a sweep finds them cached.
/// Each such merge rewrites the whole cache: past this size, that would make a sweep's
/// logging grow with the square of its runs, so the next reader brings the cache up to date
/// instead.
pub const CACHE_AT_MERGE_MAX_BYTES: u64 = 8 << 20;

/// The compaction a finishing writer does on its way out: merge the day's unmerged run rows
/// once there are [`AUTO_COMPACT_ROWS`] of them, and its merged files of one level once there
/// are [`AUTO_COMPACT_MERGED`]. Skipped (not waited for) while another compaction runs.
/// A merge puts its rows in the runs cache while the cache is under
/// [`CACHE_AT_MERGE_MAX_BYTES`], and past that leaves it to the next reader.
///
/// Most finishes merge nothing, so they only count the names in their own day folder; the
/// plan, which asks every row file's writer whether it is alive, runs when a merge is due.
pub fn auto(archive: &Archive, day: chrono::NaiveDate) -> Result<()> {
    let dir = files::day_dir(archive.root(), Table::Runs, day);
    let tiers = Tiers::Levels {
        fresh: AUTO_COMPACT_ROWS,
        merged: AUTO_COMPACT_MERGED,
    };
    // Files per level.
    let mut levels: BTreeMap<u32, usize> = BTreeMap::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_str().unwrap_or("");
                if let Some(stem) = name
                    .strip_suffix(".parquet")
                    .filter(|_| !name.starts_with('.'))
                {
                    *levels.entry(level(stem)).or_default() += 1;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&dir, e)),
    }
    if levels
        .iter()
        .all(|(level, files)| *files < tiers.enough(*level))
    {
        return Ok(());
    }
    // A lock that cannot be had now, or at all (a lock file this user may not open): no
    // merge this time.
    let Ok(Some(lock)) = compaction_lock(archive.root()) else {
        return Ok(());
    };
    // A merge a crash interrupted is finished first, so its sources are not merged again.
    replace::recover_locked(archive.root())?;
    let actions = plan_row_merges(archive, Table::Runs, tiers)?;
    // Best effort: the run is already archived, and a failed merge leaves every source in
    // place, so a finishing writer never fails because of a compaction.
    let cache = match fs::metadata(archive.root().join(crate::cache::CACHE_FILE)) {
        Ok(file) if file.len() >= CACHE_AT_MERGE_MAX_BYTES => CacheUpdate::Later,
        _ => CacheUpdate::Now,
    };
    let _ = apply(archive, &actions, cache);
    drop(lock);
    Ok(())
}

/// `.name.tmp-PID-N` -> PID.
fn temp_writer_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix('.')?.rsplit_once(".tmp-")?.1;
    rest.split_once('-')?.0.parse().ok()
}

/// Read the sources of a merge, leaving out damaged ones: they stay where they are (and
/// readers keep naming them) rather than being merged away or blocking the merge. A source
/// gone since the plan (replaced by a merge that recovery finished) is left out too.
fn read_sources(
    sources: &[PathBuf],
    table: Table,
) -> Result<Vec<(PathBuf, Vec<arrow::array::RecordBatch>)>> {
    let mut read = Vec::new();
    for source in sources {
        match files::read_parquet(source, table) {
            Ok(batches) => read.push((source.clone(), batches)),
            Err(Error::Damaged { .. } | Error::SchemaVersion { .. }) => {}
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(read)
}

/// Run rows this process wrote lately, each with the stamp of the file that holds it: a
/// finishing writer's merge takes a source's row from here while its file is unchanged
/// (decoding a file of one row costs about 0.1 ms, most of a merge).
static WRITTEN: Mutex<VecDeque<(PathBuf, Stamp, RunRecord)>> = Mutex::new(VecDeque::new());

/// Remember the row just written at `path` (which reads back as exactly this record).
pub(crate) fn remember_written(path: &Path, record: &RunRecord) {
    // By absolute path: a relative one names another file after a change of directory.
    let (Ok(stamp), Ok(path)) = (Stamp::of(path), std::path::absolute(path)) else {
        return;
    };
    let path = path.as_path();
    let mut written = WRITTEN.lock().unwrap_or_else(|p| p.into_inner());
    written.retain(|(p, _, _)| p != path);
    if written.len() >= 2 * AUTO_COMPACT_ROWS {
        written.pop_front();
    }
    written.push_back((path.to_path_buf(), stamp, record.clone()));
}

/// The row this process wrote at `path`, while the file there is still the one it wrote.
fn written_row(path: &Path) -> Option<RunRecord> {
    let path = std::path::absolute(path).ok()?;
    let path = path.as_path();
    let written = WRITTEN.lock().unwrap_or_else(|p| p.into_inner());
    let (_, stamp, record) = written.iter().find(|(p, _, _)| p == path)?;
    (Stamp::of(path).ok()? == *stamp).then(|| record.clone())
}

/// The rows of the `runs` files `sources` (those this process wrote from memory, the rest
/// read), leaving out damaged files as [`read_sources`] does; and the paths they came from.
fn read_run_rows(sources: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<RunRecord>)> {
    let mut used = Vec::new();
    let mut rows = Vec::new();
    let mut unknown = Vec::new();
    for source in sources {
        match written_row(source) {
            Some(row) => {
                used.push(source.clone());
                rows.push(row);
            }
            None => unknown.push(source.clone()),
        }
    }
    let (read, batches) = split(read_sources(&unknown, Table::Runs)?);
    used.extend(read);
    for batch in &batches {
        rows.extend(records::runs_from_batch(batch)?);
    }
    Ok((used, rows))
}

/// The paths and the batches of what [`read_sources`] read.
fn split(
    read: Vec<(PathBuf, Vec<arrow::array::RecordBatch>)>,
) -> (Vec<PathBuf>, Vec<arrow::array::RecordBatch>) {
    let mut used = Vec::new();
    let mut batches = Vec::new();
    for (path, b) in read {
        used.push(path);
        batches.extend(b);
    }
    (used, batches)
}

/// Whether every point of a chunk file belongs to the run attempt its name says.
fn holds_its_run(path: &Path, batches: &[arrow::array::RecordBatch]) -> bool {
    ChunkName::parse(path).is_some_and(|name| {
        batches
            .iter()
            .all(|b| records::metrics_from_batch(b, &name.run_id, name.attempt).is_ok())
    })
}

/// One batch of the stored schema from batches read with the table's read schema (its
/// dictionaries become plain text again).
fn merge(table: Table, batches: &[arrow::array::RecordBatch]) -> Result<arrow::array::RecordBatch> {
    let read = arrow::compute::concat_batches(&table.read_schema(), batches)?;
    crate::schema::cast_columns(&read, table.schema())
}

/// Carry out a plan. Holds the archive's compaction lock, so two compactions never race.
pub fn execute(archive: &Archive, actions: &[Action]) -> Result<Report> {
    let Some(lock) = compaction_lock(archive.root())? else {
        return Err(Error::Invalid(
            "another compaction of this archive is running; try again when it ends".into(),
        ));
    };
    replace::recover_locked(archive.root())?;
    let count = || -> Result<usize> {
        Table::ALL
            .iter()
            .map(|t| list_table(archive.root(), *t).map(|f| f.len()))
            .sum()
    };
    let files_before = count()?;
    let (merges, temps_removed) = apply(archive, actions, CacheUpdate::Now)?;
    let report = Report {
        files_before,
        files_after: count()?,
        merges,
        temps_removed,
    };
    drop(lock);
    Ok(report)
}

/// Whether a merge of `runs` files puts its rows in the runs cache at once (one rewrite of
/// the cache per merge), or leaves that to the next reader.
#[derive(Clone, Copy, PartialEq)]
enum CacheUpdate {
    Now,
    Later,
}

/// Carry out a plan under the compaction lock: how many merges it made and temp files it
/// removed.
fn apply(archive: &Archive, actions: &[Action], cache: CacheUpdate) -> Result<(usize, usize)> {
    let (mut merges, mut temps_removed) = (0, 0);
    for action in actions {
        match action {
            Action::MergeMetrics { sources, dest } => {
                // The merged file's name covers every chunk of its range, so a run with a
                // damaged or foreign chunk is left as it is: merging the rest would hide that
                // chunk from the readers that name it.
                let read = read_sources(sources, Table::Metrics)?;
                if read.len() < sources.len() || !read.iter().all(|(p, b)| holds_its_run(p, b)) {
                    continue;
                }
                let (used, batches) = split(read);
                let batch = merge(Table::Metrics, &batches)?;
                replace::replace(archive.root(), Table::Metrics, &batch, &used, dest)?;
                merges += 1;
            }
            Action::MergeRows {
                table: Table::Runs,
                sources,
                dest,
            } => {
                // The newest row of each attempt, with a dead writer's run settled as
                // interrupted, so other engines read the same status recipe shows.
                let (used, read) = read_run_rows(sources)?;
                if used.is_empty() {
                    continue;
                }
                let mut newest: BTreeMap<(String, u32), RunRecord> = BTreeMap::new();
                for row in read {
                    let key = (row.run_id.clone(), row.attempt);
                    if newest.get(&key).is_none_or(|old| row.is_newer_than(old)) {
                        newest.insert(key, row);
                    }
                }
                let mut rows: Vec<RunRecord> = newest.into_values().collect();
                for row in rows.iter_mut() {
                    archive.settle_dead_writer(row)?;
                }
                let batch = records::runs_to_batch(&rows)?;
                replace::replace(archive.root(), Table::Runs, &batch, &used, dest)?;
                merges += 1;
                if cache == CacheUpdate::Now {
                    // Best effort: the merge is done; a reader rewrites a cache that lags.
                    let _ = RunsCache::replace_merged(archive.root(), &used, dest);
                }
            }
            Action::MergeRows {
                table,
                sources,
                dest,
            } => {
                let (used, batches) = split(read_sources(sources, *table)?);
                if used.is_empty() {
                    continue;
                }
                let batch = merge(*table, &batches)?;
                replace::replace(archive.root(), *table, &batch, &used, dest)?;
                merges += 1;
            }
            Action::SettleDeadRun(path) => {
                // One file rewritten whole under its own name: nothing to replace.
                let (used, mut rows) = read_run_rows(std::slice::from_ref(path))?;
                if used.is_empty() {
                    continue;
                }
                for row in rows.iter_mut() {
                    archive.settle_dead_writer(row)?;
                }
                files::write_parquet(path, Table::Runs, &records::runs_to_batch(&rows)?)?;
            }
            Action::RemoveTemp(path) => {
                remove_all(std::slice::from_ref(path))?;
                temps_removed += 1;
            }
        }
    }
    Ok((merges, temps_removed))
}

fn remove_all(paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    if let Some(dir) = paths.first().and_then(|p| p.parent()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::records::RunRecord;
    use crate::schema::Table;
    use crate::writer::archive_tests::train;
    use crate::Archive;

    #[test]
    fn a_row_files_level_is_read_from_its_name() {
        use super::level;
        assert_eq!(level("3ce04629d75f-a1"), 0);
        assert_eq!(level("compacted-L1-0123456789abcdef"), 1);
        assert_eq!(level("compacted-L12-0123456789abcdef"), 12);
        // Merged before levels: level 1, the smallest merged files.
        assert_eq!(level("compacted-0123456789abcdef"), 1);
    }

    #[test]
    fn temp_files_of_dead_writers_are_swept_from_the_tables_and_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        train(&archive, 1, 0.0);
        archive.runs().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let (dead, alive) = (child.id(), std::process::id());
        let day = crate::files::list_table(archive.root(), Table::Runs).unwrap()[0]
            .parent()
            .unwrap()
            .to_path_buf();
        let cache = archive.root().join("_cache");
        let temp = |folder: &std::path::Path, name: &str, pid: u32| {
            let path = folder.join(format!(".{name}.tmp-{pid}-0"));
            std::fs::write(&path, b"half written").unwrap();
            path
        };
        let swept = [
            temp(&cache, "runs.arrow", dead),
            temp(&day, "x.parquet", dead),
        ];
        let kept = [
            temp(&cache, "runs.arrow", alive),
            temp(&day, "x.parquet", alive),
        ];
        let report = super::execute(&archive, &super::plan(&archive).unwrap()).unwrap();
        assert_eq!(report.temps_removed, 2);
        assert!(swept.iter().all(|p| !p.exists()), "{swept:?}");
        assert!(kept.iter().all(|p| p.exists()), "{kept:?}");
        assert_eq!(archive.runs().unwrap().value.len(), 1);
    }

    #[test]
    fn a_remembered_row_serves_only_while_its_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let row = train(&archive, 1, 0.0);
        let path = crate::files::list_table(archive.root(), Table::Runs).unwrap()[0].clone();
        let read = |path: &std::path::Path| -> RunRecord {
            let batches = crate::files::read_parquet(path, Table::Runs).unwrap();
            crate::records::runs_from_batch(&batches[0])
                .unwrap()
                .remove(0)
        };
        assert_eq!(read(&path), row);
        // Remembered when written; remembered again here, since tests running beside this
        // one may have written enough rows since to push it out.
        super::remember_written(&path, &row);
        assert_eq!(super::written_row(&path), Some(read(&path)));
        // The same file written by someone else (here: another record, same path).
        let mut other = row.clone();
        other.name = "rewritten".into();
        crate::files::write_parquet(
            &path,
            Table::Runs,
            &crate::records::runs_to_batch(std::slice::from_ref(&other)).unwrap(),
        )
        .unwrap();
        assert_eq!(super::written_row(&path), None);
        assert_eq!(
            super::read_run_rows(std::slice::from_ref(&path)).unwrap().1,
            vec![other]
        );
    }

    #[test]
    fn temp_names_carry_the_writer_pid() {
        let p = std::path::Path::new("x/.abc-a1-c000001.parquet.tmp-4242-7");
        assert_eq!(super::temp_writer_pid(p), Some(4242));
        assert_eq!(
            super::temp_writer_pid(std::path::Path::new("x/abc.parquet")),
            None
        );
    }
}
