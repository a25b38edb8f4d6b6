//! Replacing files by one merged file so that no Parquet reader, recipe's or another
//! engine's, ever counts a row twice, whenever the process is killed.
//!
//! Compaction merges a finished run's metric chunks, and a day's `runs` or `cells` row
//! files, into one file each; a finishing writer merges a day's `runs` rows the same way.
//! Every one of them goes through [`replace`], in three steps:
//!
//! 1. Write the merged file under `_pending/` (temp name, fsync, rename, fsync). Its Parquet
//!    footer says, under `recipe.replaces`, which file it becomes and which files it
//!    replaces. This rename is the commit point: a crash before it leaves a temp file, which
//!    compaction sweeps, and the sources untouched.
//! 2. Delete the sources, fsync their folder.
//! 3. Rename the merged file to its place among the table's files, fsync.
//!
//! `_pending` lies outside every table folder (and begins with `_`, which pyarrow's
//! datasets skip), so a glob such as `read_parquet('metrics/*/*.parquet')` sees the sources
//! or the merged file, never both. A crash between steps 1 and 3 leaves rows missing from
//! the tables until [`recover`] finishes the replacement, on the next open of the archive
//! (or the next compaction). Recovery runs under the compaction lock, so it never races a
//! replacement still at work.
//!
//! recipe's own readers never miss those rows while a replacement runs: a listing of a
//! table holds a shared lock ([`listing_lock`]) that steps 2 and 3 hold exclusively, so a
//! listing finds either every source (and, if a source is gone before it is read, lists
//! again) or the merged file.
//!
//! Not here: deciding what to merge (`compact`), writing one file whole (`files`).

use crate::archive::{open_lock_file, try_lock};
use crate::fault::crash_at;
use crate::files;
use crate::schema::Table;
use crate::{Error, Result};
use arrow::array::RecordBatch;
use parquet::file::metadata::KeyValue;
use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};

/// The folder of replacements committed but not yet in place.
pub const PENDING_DIR: &str = "_pending";

/// The footer key of a pending file: `{"dest": PATH, "sources": [PATH, ...]}`, relative to
/// the archive's root.
const KEY_REPLACES: &str = "recipe.replaces";

/// The lock a table listing holds shared and steps 2-3 of a replacement exclusively.
const LISTING_LOCK: &str = "_listing.lock";

/// The lock that keeps two compactions (and recoveries) apart.
const COMPACTION_LOCK: &str = "_compact.lock";

/// Replace `sources` (files of `table` in one folder) by `batch` written at `dest`, in the
/// three steps above. A crash at any step leaves the tables readable with no row twice.
pub(crate) fn replace(
    root: &Path,
    table: Table,
    batch: &RecordBatch,
    sources: &[PathBuf],
    dest: &Path,
) -> Result<()> {
    // 1. The merged file, committed under _pending with what it replaces.
    let pending = pending_path(root, dest)?;
    let replaces = serde_json::json!({
        "dest": relative(root, dest)?,
        "sources": sources.iter().map(|s| relative(root, s)).collect::<Result<Vec<_>>>()?,
    });
    files::write_parquet_with(
        &pending,
        table,
        batch,
        vec![KeyValue::new(KEY_REPLACES.into(), replaces.to_string())],
    )?;
    crash_at("pending");
    // 2. and 3.
    put_in_place(root, &pending, dest, sources)
}

/// Steps 2 and 3: delete the sources still there, then rename the pending file to `dest`.
fn put_in_place(root: &Path, pending: &Path, dest: &Path, sources: &[PathBuf]) -> Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| Error::Invalid(format!("{} has no folder", dest.display())))?;
    {
        let lock = open_lock_file(&root.join(LISTING_LOCK))?;
        flock(&lock, libc::LOCK_EX).map_err(|e| Error::io(root.join(LISTING_LOCK), e))?;
        for (i, source) in sources.iter().enumerate() {
            match fs::remove_file(source) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(source, e)),
            }
            if i == 0 {
                crash_at("source");
            }
        }
        // The deletes reach the disk before the rename: after a crash, the merged file is
        // either still pending (and recovery finishes it) or in place without its sources.
        sync_dir(dir)?;
        crash_at("sources");
        fs::rename(pending, dest).map_err(|e| Error::io(dest, e))?;
        crash_at("renamed");
    }
    sync_dir(dir)?;
    if let Some(pending_dir) = pending.parent() {
        sync_dir(pending_dir)?;
    }
    Ok(())
}

/// Finish every replacement that a crash interrupted after its commit point; how many. A
/// no-op (one `readdir` of a missing folder) unless a crash left one; skipped while a
/// compaction runs (it finishes them itself) or where the archive cannot be written.
pub(crate) fn recover(root: &Path) -> Result<usize> {
    if pending_files(root)?.is_empty() {
        return Ok(0);
    }
    let Ok(Some(_lock)) = compaction_lock(root) else {
        return Ok(0);
    };
    recover_locked(root)
}

/// [`recover`] by a caller that holds the compaction lock.
pub(crate) fn recover_locked(root: &Path) -> Result<usize> {
    let mut finished = 0;
    for pending in pending_files(root)? {
        let (dest, sources) = match what_it_replaces(root, &pending) {
            Ok(found) => found,
            // Written whole and fsynced before its commit, a pending file that does not read
            // is the disk's doing: it stays, and says so, rather than deleting its sources.
            Err(e) => {
                eprintln!("warning: a pending merge of the archive cannot be finished: {e}");
                continue;
            }
        };
        put_in_place(root, &pending, &dest, &sources)?;
        finished += 1;
    }
    Ok(finished)
}

/// The committed pending files (not temp files of a merge still being written).
fn pending_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join(PENDING_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry.map_err(|e| Error::io(&dir, e))?.file_name();
        let name = name.to_str().unwrap_or("");
        if !name.starts_with('.') && name.ends_with(".pending") {
            out.push(dir.join(name));
        }
    }
    out.sort();
    Ok(out)
}

/// A pending file's destination and sources, as paths under `root`.
fn what_it_replaces(root: &Path, pending: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let damaged = |reason: &str| Error::Damaged {
        path: pending.to_path_buf(),
        reason: reason.to_string(),
    };
    let value = files::footer_value(pending, KEY_REPLACES)?
        .ok_or_else(|| damaged("no recipe.replaces metadata"))?;
    let value: serde_json::Value =
        serde_json::from_str(&value).map_err(|e| damaged(&e.to_string()))?;
    let path = |v: &serde_json::Value| -> Result<PathBuf> {
        let rel = Path::new(v.as_str().ok_or_else(|| damaged("a path is not text"))?);
        // Only paths inside the archive: a stray file must not delete anything outside it.
        match rel.components().all(|c| matches!(c, Component::Normal(_))) {
            true => Ok(root.join(rel)),
            false => Err(damaged("a path leads outside the archive")),
        }
    };
    let dest = path(&value["dest"])?;
    let sources = (value["sources"].as_array())
        .ok_or_else(|| damaged("no list of sources"))?
        .iter()
        .map(path)
        .collect::<Result<Vec<_>>>()?;
    Ok((dest, sources))
}

/// Where the merged file for `dest` waits: `_pending/<table>~<day>~<name>.pending`.
fn pending_path(root: &Path, dest: &Path) -> Result<PathBuf> {
    let flat = relative(root, dest)?.replace('/', "~");
    Ok(root.join(PENDING_DIR).join(format!("{flat}.pending")))
}

fn relative(root: &Path, path: &Path) -> Result<String> {
    path.strip_prefix(root)
        .ok()
        .and_then(Path::to_str)
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{} is not a file of the archive at {}",
                path.display(),
                root.display()
            ))
        })
}

/// The archive's compaction lock, or `None` while another compaction holds it.
pub(crate) fn compaction_lock(root: &Path) -> Result<Option<File>> {
    let lock = open_lock_file(&root.join(COMPACTION_LOCK))?;
    Ok(try_lock(&lock, libc::LOCK_EX).then_some(lock))
}

/// A shared lock on the archive's listing lock, held while a table is listed; `None` where
/// the lock file can be neither made nor opened (a read-only archive, or no archive).
pub(crate) fn listing_lock(root: &Path) -> Option<File> {
    let path = root.join(LISTING_LOCK);
    let file = (fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true))
    .open(&path)
    .or_else(|_| File::open(&path))
    .ok()?;
    flock(&file, libc::LOCK_SH).ok()?;
    Some(file)
}

/// Wait for a flock of `kind` on `file`; it lives as long as the file stays open.
fn flock(file: &File, kind: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a valid, open file descriptor has no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), kind) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records;

    /// Three chunk files of one run and the batch that merges them.
    fn chunks(root: &Path) -> (Vec<PathBuf>, RecordBatch, PathBuf) {
        let day = root.join("metrics/day=2026-01-01");
        let mut sources = Vec::new();
        let mut batches = Vec::new();
        for c in 1..=3 {
            let points = vec![records::MetricPoint {
                step: c,
                name: "loss".into(),
                value: c as f64,
                wall_time: chrono::Utc::now(),
            }];
            let batch = records::metrics_to_batch("ab", 1, &points).unwrap();
            let path = day.join(format!("ab-a1-c{c:06}.parquet"));
            files::write_parquet(&path, Table::Metrics, &batch).unwrap();
            sources.push(path);
            batches.push(batch);
        }
        let merged = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        (sources, merged, day.join("ab-a1-c000001-000003.parquet"))
    }

    #[test]
    fn a_pending_replacement_is_finished_by_recovery_and_hidden_until_then() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (sources, merged, dest) = chunks(root);
        // Step 1 alone, as a crash right after the commit point leaves it.
        let pending = pending_path(root, &dest).unwrap();
        let replaces = serde_json::json!({
            "dest": relative(root, &dest).unwrap(),
            "sources": sources.iter().map(|s| relative(root, s).unwrap()).collect::<Vec<_>>(),
        });
        files::write_parquet_with(
            &pending,
            Table::Metrics,
            &merged,
            vec![KeyValue::new(KEY_REPLACES.into(), replaces.to_string())],
        )
        .unwrap();
        fs::remove_file(&sources[0]).unwrap(); // and the first delete of step 2
        let listed = files::list_table(root, Table::Metrics).unwrap();
        assert_eq!(
            listed,
            sources[1..].to_vec(),
            "the pending file is no table file"
        );
        assert_eq!(recover(root).unwrap(), 1);
        assert_eq!(
            files::list_table(root, Table::Metrics).unwrap(),
            vec![dest.clone()]
        );
        assert_eq!(
            files::read_parquet(&dest, Table::Metrics).unwrap()[0].num_rows(),
            3
        );
        assert!(pending_files(root).unwrap().is_empty());
        assert_eq!(recover(root).unwrap(), 0);
    }

    #[test]
    fn replace_leaves_only_the_merged_file() {
        let dir = tempfile::tempdir().unwrap();
        let (sources, merged, dest) = chunks(dir.path());
        replace(dir.path(), Table::Metrics, &merged, &sources, &dest).unwrap();
        assert_eq!(
            files::list_table(dir.path(), Table::Metrics).unwrap(),
            vec![dest]
        );
        assert!(pending_files(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_pending_file_naming_paths_outside_the_archive_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("archive");
        let (_, merged, _) = chunks(&root);
        let outside = dir.path().join("precious");
        fs::write(&outside, b"keep").unwrap();
        let replaces = serde_json::json!({"dest": "metrics/x.parquet", "sources": ["../precious"]});
        files::write_parquet_with(
            &root.join(PENDING_DIR).join("x.pending"),
            Table::Metrics,
            &merged,
            vec![KeyValue::new(KEY_REPLACES.into(), replaces.to_string())],
        )
        .unwrap();
        assert_eq!(recover(&root).unwrap(), 0);
        assert!(outside.exists());
    }
}
