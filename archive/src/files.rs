//! Files on disk: where each table's files live, how one is written so that no reader ever
//! sees half of it, and how one is read so that a damaged or foreign file is named, not
//! trusted.
//!
//! Layout of an archive directory (Hive-style `day=` folders, so DuckDB, pyarrow, Polars and
//! Spark read each table folder as one dataset):
//!
//! ```text
//! runs/day=2026-11-27/<run_id>-a<attempt>.parquet           one attempt's row, rewritten at finish
//! runs/day=2026-11-27/compacted-L<level>-<hash>.parquet      rows merged by `compact`, by level
//! metrics/day=2026-11-27/<run_id>-a<attempt>-c<seq>.parquet  one flushed chunk
//! metrics/day=2026-11-27/<run_id>-a<attempt>-c<first>-<last>.parquet   chunks merged by `compact`
//! cells/day=2026-11-27/<session>-<count>-<nanos>.parquet     one executed cell
//! blobs/<2 hex>/<blake3 hex>                                 content-addressed bytes
//! _claims/<run_id>-a<attempt>                                who took which attempt number (a
//!                                                            process's claims: links to one file);
//!                                                            a byte of it locked while its writer lives
//! _pending/<table>~<day>~<name>.pending                       a merged file committed, not yet in place
//!                                                            (see `replace`)
//! _cache/runs.arrow                                          the rows of `runs` files already read
//!                                                            (Arrow IPC; derived, see `cache`)
//! _cache/runs-recent.jsonl                                   rows of runs finished since, one JSON
//!                                                            line each, and `read` marks (derived,
//!                                                            see `cache`)
//! ```

use crate::schema::{Table, KEY_TABLE, KEY_VERSION, KEY_WRITER, SCHEMA_VERSION, WRITER};
use crate::{Error, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType, UInt32Type};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Write `bytes` to `path` so that the file appears whole or not at all: temp name in the
/// same folder, write, fsync, rename, fsync the folder.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    write_whole(path, write, true)
}

/// Write `path` whole or not at all for the readers of this boot of the system (temp name,
/// write, rename), without fsync: for derived files whose readers do not trust a version
/// written before the system last started (the runs cache).
pub fn write_derived(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    write_whole(path, write, false)
}

fn write_whole(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<()>,
    synced: bool,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .ok_or_else(|| Error::Invalid(format!("{} has no folder", path.display())))?;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
        write(&mut file)?;
        if synced {
            file.sync_all().map_err(|e| Error::io(&temp, e))?;
        }
        close(file).map_err(|e| Error::io(&temp, e))?;
        if !synced {
            // Renamed over an existing file, an unsynced one is written out to the disk on
            // the spot (ext4 does so to spare it a crash's empty file): 0.6 ms of a listing
            // that rewrites the runs cache. Removed first, it is not; a reader in between
            // finds no file, which a derived file allows.
            let _ = fs::remove_file(path);
        }
        fs::rename(&temp, path).map_err(|e| Error::io(path, e))?;
        if !synced {
            return Ok(());
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Close a file and report what close(2) says: dropping a `File` ignores it, and a network
/// file system may report a failed write only there.
fn close(file: File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    // SAFETY: `file` gives up its descriptor here, so it is closed exactly once.
    match unsafe { libc::close(file.into_raw_fd()) } {
        0 => Ok(()),
        _ => match std::io::Error::last_os_error() {
            // Linux closes the descriptor even when interrupted.
            e if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            e => Err(e),
        },
    }
}

/// Files with fewer rows than this are written uncompressed.
pub const SMALL_FILE_ROWS: usize = 8;

/// Write one batch as a ZSTD Parquet file carrying the schema version, table and writer.
/// An error says which file: a full disk reads `PATH: No space left on device`.
pub fn write_parquet(path: &Path, table: Table, batch: &RecordBatch) -> Result<()> {
    write_parquet_with(path, table, batch, Vec::new())
}

/// [`write_parquet`] with more key-value metadata in the file's footer.
pub(crate) fn write_parquet_with(
    path: &Path,
    table: Table,
    batch: &RecordBatch,
    extra: Vec<KeyValue>,
) -> Result<()> {
    let mut metadata = vec![
        KeyValue::new(KEY_VERSION.to_string(), SCHEMA_VERSION.to_string()),
        KeyValue::new(KEY_TABLE.to_string(), table.name().to_string()),
        KeyValue::new(KEY_WRITER.to_string(), WRITER.to_string()),
    ];
    metadata.extend(extra);
    // A file of a few rows (a run's own row, one cell) gains nothing from compression, and a
    // ZSTD context per column chunk costs more than the write itself.
    // Nor do min/max statistics help anyone prune a file of one row, and without them its
    // footer, which every listing decodes, is smaller.
    let small = batch.num_rows() < SMALL_FILE_ROWS;
    let props = WriterProperties::builder()
        .set_compression(if small {
            Compression::UNCOMPRESSED
        } else {
            // Level 1: the benchmark's archive is as small as at level 3 (17.1 MiB), and
            // logging takes 9% less CPU (a level-3 context is larger to set up per column).
            Compression::ZSTD(ZstdLevel::try_new(1)?)
        })
        .set_statistics_enabled(if small {
            EnabledStatistics::None
        } else {
            EnabledStatistics::Page
        })
        .set_key_value_metadata(Some(metadata));
    let props = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|_| !small)
        .fold(props, |props, (field, column)| {
            let path = ColumnPath::from(field.name().as_str());
            match column_kind(column.as_ref()) {
                ColumnKind::FewValues => {
                    props.set_column_compression(path, Compression::UNCOMPRESSED)
                }
                ColumnKind::Integers => props
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED),
                ColumnKind::Floats => props.set_column_dictionary_enabled(path, false),
                ColumnKind::Other => props,
            }
        })
        .build();
    write_atomic(path, |file| {
        // A crash test's full disk: the bytes go to /dev/full, which refuses them as a full
        // disk does (ENOSPC), through the same writer and error path.
        let mut full;
        let file = match crate::fault::disk_full(table.name()) {
            true => {
                full = fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .map_err(|e| Error::io("/dev/full", e))?;
                &mut full
            }
            false => file,
        };
        let named = |e| write_error(path, e);
        let mut writer = ArrowWriter::try_new(file, table.schema(), Some(props)).map_err(named)?;
        writer.write(batch).map_err(named)?;
        // Without close() there is no footer: the file would be unreadable.
        writer.close().map_err(named)?;
        Ok(())
    })
}

/// A Parquet writer's error as one that names the file: its I/O error (a full disk, a
/// quota) as the file's own, anything else with the file's path in front.
fn write_error(path: &Path, e: parquet::errors::ParquetError) -> Error {
    use parquet::errors::ParquetError;
    match e {
        ParquetError::External(e) => match e.downcast::<std::io::Error>() {
            Ok(io) => Error::io(path, *io),
            Err(e) => Error::Format(format!("writing {}: {e}", path.display())),
        },
        e => Error::Format(format!("writing {}: parquet: {e}", path.display())),
    }
}

/// The value of `key` in a Parquet file's footer metadata (the footer alone is read).
pub(crate) fn footer_value(path: &Path, key: &str) -> Result<Option<String>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| Error::Damaged {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let kv = metadata.file_metadata().key_value_metadata();
    Ok(kv
        .and_then(|kv| kv.iter().find(|e| e.key == key))
        .and_then(|e| e.value.clone()))
}

/// How a column is best stored.
enum ColumnKind {
    /// A few short distinct values (a run's status, attempt, environment; a chunk's run id
    /// and metric names): Parquet's dictionary already stores them in a few bytes, and ZSTD
    /// would cost each reader a context per column chunk for nothing (a merged `runs` file of
    /// 1,000 rows read 10% faster without them, at the same size).
    FewValues,
    /// Many distinct integers or times (steps, wall times): delta-coded, then ZSTD. A
    /// dictionary of them would be as large as the column.
    Integers,
    /// Many distinct floats (metric values): plain, then ZSTD (byte stream split came out
    /// no smaller on real training curves).
    Floats,
    /// Anything else: dictionary, then ZSTD.
    Other,
}

fn column_kind(column: &dyn Array) -> ColumnKind {
    /// Distinct values of at most `FEW` values and `BYTES` bytes in all are few.
    const FEW: usize = 16;
    const BYTES: usize = 4096;
    fn many<T: PartialEq>(values: impl Iterator<Item = T>, size: impl Fn(&T) -> usize) -> bool {
        // At most FEW values are kept, so a scan of them is as quick as a set; and a value
        // is most often the one before it (a run id, a metric name logged in turn).
        let mut seen: Vec<T> = Vec::with_capacity(FEW + 1);
        let mut bytes = 0;
        for value in values {
            if seen.last() == Some(&value) || seen.contains(&value) {
                continue;
            }
            bytes += size(&value);
            seen.push(value);
            if seen.len() > FEW || bytes > BYTES {
                return true;
            }
        }
        false
    }
    let fixed = |_: &Option<i64>| 8;
    let integers = |many: bool| {
        if many {
            ColumnKind::Integers
        } else {
            ColumnKind::FewValues
        }
    };
    match column.data_type() {
        DataType::Utf8 if many(column.as_string::<i32>().iter(), |v| v.map_or(0, str::len)) => {
            ColumnKind::Other
        }
        DataType::Utf8 => ColumnKind::FewValues,
        DataType::UInt32 if many(column.as_primitive::<UInt32Type>().iter(), |_| 4) => {
            ColumnKind::Other
        }
        DataType::UInt32 => ColumnKind::FewValues,
        DataType::Int64 => integers(many(column.as_primitive::<Int64Type>().iter(), fixed)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => integers(many(
            column.as_primitive::<TimestampMicrosecondType>().iter(),
            fixed,
        )),
        DataType::Float64 => ColumnKind::Floats,
        DataType::Boolean => ColumnKind::FewValues,
        _ => ColumnKind::Other,
    }
}

/// Read a whole Parquet file of `table`, refusing damaged, foreign and other-version files
/// with an error that names the file.
pub fn read_parquet(path: &Path, table: Table) -> Result<Vec<RecordBatch>> {
    // One read of the whole file: archive files are small, and reading column chunks from a
    // `File` costs a dup, a seek and a read per chunk.
    let bytes = bytes::Bytes::from(fs::read(path).map_err(|e| Error::io(path, e))?);
    let damaged = |reason: String| Error::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&bytes)
        .map_err(|e| damaged(e.to_string()))?;
    let kv = metadata.file_metadata().key_value_metadata();
    let get = |key: &str| {
        kv.and_then(|kv| kv.iter().find(|e| e.key == key))
            .and_then(|e| e.value.clone())
    };
    match get(KEY_VERSION) {
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) => return Err(Error::SchemaVersion { path: path.to_path_buf(), found: v }),
        None => {
            return Err(damaged(format!(
                "no {KEY_VERSION} metadata: not written by recipe; keep other files outside the archive folder"
            )))
        }
    }
    if let Some(t) = get(KEY_TABLE).filter(|t| t != table.name()) {
        return Err(damaged(format!(
            "a file of table {t:?} inside the {:?} folder",
            table.name()
        )));
    }
    // The table's own read schema, not the one embedded in the file: nothing to decode.
    // Parquet checks the columns' count, types and nullability against it; their names are
    // checked here.
    let schema = table.read_schema();
    let stored: Vec<&str> = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    let expected: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if stored != expected {
        return Err(damaged(format!(
            "its columns {stored:?} are not those of the {} table at schema version \
             {SCHEMA_VERSION}",
            table.name()
        )));
    }
    let options = ArrowReaderOptions::new().with_schema(schema.clone());
    let metadata = ArrowReaderMetadata::try_new(std::sync::Arc::new(metadata), options)
        .map_err(|e| damaged(e.to_string()))?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, metadata)
        .build()
        .map_err(|e| damaged(e.to_string()))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| damaged(e.to_string()))
}

/// How the files that compaction merges rows of `runs` and `cells` into begin.
pub const MERGED_PREFIX: &str = "compacted-";

/// Whether a file holds what compaction merged (rows of many runs, or many chunks of one):
/// the large files of a table.
pub fn is_merged(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with(MERGED_PREFIX) || ChunkName::parse(path).is_some_and(|c| c.first != c.last)
}

/// Every committed Parquet file of a table, sorted by path. Temp files (`.name.tmp-...`)
/// of writers still at work, or dead, are skipped.
pub fn list_table(root: &Path, table: Table) -> Result<Vec<PathBuf>> {
    list_table_where(root, table, &|_| true)
}

/// The committed files of `table` whose file name `keep` accepts, sorted. Names are tested
/// before any path is built: a run's metric chunks are a few names among thousands.
pub fn list_table_where(
    root: &Path,
    table: Table,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<PathBuf>> {
    // Never between a replacement's deleted sources and its renamed result (see `replace`).
    let _listing = crate::replace::listing_lock(root);
    let dir = root.join(table.name());
    let mut out = Vec::new();
    let days = match fs::read_dir(&dir) {
        Ok(days) => days,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    for day in days {
        let day = day.map_err(|e| Error::io(&dir, e))?.path();
        if !day.is_dir() {
            continue;
        }
        let entries = match fs::read_dir(&day) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&day, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&day, e))?;
            let name = entry.file_name();
            let name = name.to_str().unwrap_or("");
            if !name.starts_with('.') && name.ends_with(".parquet") && keep(name) {
                out.push(day.join(name));
            }
        }
    }
    // Byte order of the whole path: the same order as by components for these names, and
    // without splitting every path into components at each comparison.
    out.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    Ok(out)
}

/// The Hive partition folder of a day.
pub fn day_dir(root: &Path, table: Table, day: chrono::NaiveDate) -> PathBuf {
    root.join(table.name())
        .join(format!("day={}", day.format("%Y-%m-%d")))
}

/// What a file name in the `metrics` folder says it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkName {
    pub run_id: String,
    pub attempt: u32,
    /// The chunk sequence numbers it covers (first == last for a chunk a writer flushed).
    pub first: u32,
    pub last: u32,
}

impl ChunkName {
    pub fn file_name(&self) -> String {
        if self.first == self.last {
            format!(
                "{}-a{}-c{:06}.parquet",
                self.run_id, self.attempt, self.first
            )
        } else {
            format!(
                "{}-a{}-c{:06}-{:06}.parquet",
                self.run_id, self.attempt, self.first, self.last
            )
        }
    }

    pub fn parse(path: &Path) -> Option<ChunkName> {
        let stem = path.file_name()?.to_str()?.strip_suffix(".parquet")?;
        let (run_id, rest) = stem.split_once("-a")?;
        let (attempt, chunks) = rest.split_once("-c")?;
        let (first, last) = match chunks.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => (chunks.parse().ok()?, chunks.parse().ok()?),
        };
        Some(ChunkName {
            run_id: run_id.to_string(),
            attempt: attempt.parse().ok()?,
            first,
            last,
        })
    }

    fn covers(&self, other: &ChunkName) -> bool {
        self.run_id == other.run_id
            && self.attempt == other.attempt
            && self.first <= other.first
            && other.last <= self.last
            && self != other
    }
}

/// Drop chunk files already merged into a compacted file, so a reader that lists a folder
/// between a compaction's rename and its deletes counts no point twice.
pub fn without_covered(files: Vec<(PathBuf, ChunkName)>) -> Vec<(PathBuf, ChunkName)> {
    let names: Vec<ChunkName> = files.iter().map(|(_, n)| n.clone()).collect();
    files
        .into_iter()
        .filter(|(_, name)| !names.iter().any(|other| other.covers(name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_round_trip() {
        for (first, last) in [(1, 1), (3, 40)] {
            let name = ChunkName {
                run_id: "ab12".into(),
                attempt: 2,
                first,
                last,
            };
            assert_eq!(ChunkName::parse(Path::new(&name.file_name())), Some(name));
        }
        assert_eq!(ChunkName::parse(Path::new("notes.parquet")), None);
    }

    #[test]
    fn compacted_files_hide_their_sources() {
        let chunk = |first, last| {
            let n = ChunkName {
                run_id: "r".into(),
                attempt: 1,
                first,
                last,
            };
            (PathBuf::from(n.file_name()), n)
        };
        let kept = without_covered(vec![chunk(1, 1), chunk(2, 2), chunk(1, 2), chunk(3, 3)]);
        let firsts: Vec<(u32, u32)> = kept.iter().map(|(_, n)| (n.first, n.last)).collect();
        assert_eq!(firsts, vec![(1, 2), (3, 3)]);
    }
}
