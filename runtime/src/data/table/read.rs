//! Reading a table into one arrow `RecordBatch`: CSV (the bytes of a plain or gunzipped file)
//! through arrow's CSV reader, Parquet through parquet's arrow reader. Quoting, headers and
//! type inference are arrow's; here are only the missing-cell spellings and the errors that
//! name the file.
//!
//! Not here: what the columns mean (the target, features, missing cells): see [`super`].

use arrow::array::RecordBatch;
use std::path::Path;
use std::sync::Arc;

use crate::{Error, Result};

/// The cells a CSV file leaves missing: empty, `NA`, `N/A`, `NaN`, `nan`, `null`, `NULL`.
const MISSING: &str = "^(|NA|N/A|NaN|nan|null|NULL)$";

/// Read a CSV file (or `.csv.gz`): a header row, types inferred by arrow, and `NA`, `N/A`,
/// `NaN`, `null` and empty cells read as missing.
pub fn read_csv(bytes: &[u8], path: &Path) -> Result<RecordBatch> {
    read_csv_with(bytes, path, true)
}

/// [`read_csv`], for a file with or without a header row (without one, arrow names the
/// columns `column_1`, `column_2`, ...).
pub fn read_csv_with(bytes: &[u8], path: &Path, header: bool) -> Result<RecordBatch> {
    use arrow::csv::reader::{Format, ReaderBuilder};
    let bad = |e: arrow::error::ArrowError| Error::Data(format!("{}: {e}", path.display()));
    let missing = regex::Regex::new(MISSING)
        .map_err(|e| Error::Invalid(format!("the missing-cell pattern: {e}")))?;
    let format = Format::default()
        .with_header(header)
        .with_null_regex(missing);
    let (schema, _) = format
        .infer_schema(std::io::Cursor::new(bytes), None)
        .map_err(bad)?;
    let schema = Arc::new(schema);
    let reader = ReaderBuilder::new(schema.clone())
        .with_format(format)
        .build(std::io::Cursor::new(bytes))
        .map_err(bad)?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(bad)?;
    arrow::compute::concat_batches(&schema, &batches).map_err(bad)
}

/// Read a Parquet file whole.
pub fn read_parquet(path: &Path) -> Result<RecordBatch> {
    let bytes =
        bytes::Bytes::from(std::fs::read(path).map_err(|e| Error::Io(path.to_path_buf(), e))?);
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::Data(format!("{}: not readable Parquet ({e})", path.display())))?;
    let schema = builder.schema().clone();
    let batches = builder
        .build()
        .and_then(|reader| {
            reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Into::into)
        })
        .map_err(|e| Error::Data(format!("{}: not readable Parquet ({e})", path.display())))?;
    arrow::compute::concat_batches(&schema, &batches)
        .map_err(|e| Error::Data(format!("{}: {e}", path.display())))
}
