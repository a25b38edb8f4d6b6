//! Reading a table into one arrow `RecordBatch`: CSV (the bytes of a plain or gunzipped file)
//! through arrow's CSV reader, Parquet through parquet's arrow reader. Quoting, headers,
//! type inference and parsing are arrow's; here are the missing-cell spellings, the errors
//! that name the file, and two choices about speed that never change the table made:
//! - types are inferred from the first rows, and from every row whenever that could differ
//!   ([`read_csv_with`]);
//! - the records are decoded in one piece per thread, cut between records ([`cuts`]).
//!
//! Not here: what the columns mean (the target, features, missing cells): see [`super`].

use arrow::array::RecordBatch;
use arrow::csv::reader::{Format, ReaderBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
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

/// Rows the column types are first inferred from. Inference over every row is a whole extra
/// pass of parsing, as long as the decoding itself; a sample is enough for the types of a
/// well-formed file, and [`read_csv_with`] goes back to every row whenever the sample could
/// be wrong, so the sample changes the time a load takes, never the table it makes.
const INFER_ROWS: usize = 10_000;

/// [`read_csv`], for a file with or without a header row (without one, arrow names the
/// columns `column_1`, `column_2`, ...).
///
/// Types are inferred from the first [`INFER_ROWS`] rows, then from every row when:
/// 1. decoding with the sampled types fails (a later `1.5` in a column of whole numbers, a
///    later word in a column of numbers): the types of every row name the column's type, and
///    a file that is malformed fails again with the line arrow names;
/// 2. the sample saw a column only empty (arrow would drop its later values), or dates or
///    times (a later date with a time would be cut to the date, a later finer timestamp to
///    the sample's precision): those parse loosely, so only every row can say.
pub fn read_csv_with(bytes: &[u8], path: &Path, header: bool) -> Result<RecordBatch> {
    let missing = regex::Regex::new(MISSING)
        .map_err(|e| Error::Invalid(format!("the missing-cell pattern: {e}")))?;
    let format = Format::default()
        .with_header(header)
        .with_null_regex(missing);
    let bad = |e: ArrowError| Error::Data(format!("{}: {e}", path.display()));
    let infer = |rows: Option<usize>| {
        let (schema, _) = format
            .infer_schema(std::io::Cursor::new(bytes), rows)
            .map_err(bad)?;
        Ok::<_, Error>(Arc::new(schema))
    };
    let sampled = infer(Some(INFER_ROWS))?;
    let loose = |t: &DataType| {
        matches!(
            t,
            DataType::Null | DataType::Date32 | DataType::Timestamp(..)
        )
    };
    if !sampled.fields().iter().any(|f| loose(f.data_type())) {
        if let Ok(table) = decode(bytes, &format, header, sampled) {
            return Ok(table);
        }
    }
    decode(bytes, &format, header, infer(None)?).map_err(bad)
}

/// The CSV in `bytes` decoded with `schema`, as one batch: its records cut into one piece
/// per thread ([`cuts`]), each decoded by arrow, in their order. Should a piece fail, the
/// whole is decoded again in one piece, so that the error names the line in the file (a
/// piece's arrow counts from the piece's start).
fn decode(
    bytes: &[u8],
    format: &Format,
    header: bool,
    schema: SchemaRef,
) -> std::result::Result<RecordBatch, ArrowError> {
    use rayon::prelude::*;
    let one = |bytes: &[u8], format: Format| -> std::result::Result<Vec<RecordBatch>, ArrowError> {
        ReaderBuilder::new(schema.clone())
            .with_format(format)
            .build(std::io::Cursor::new(bytes))?
            .collect()
    };
    let cuts = cuts(bytes, rayon::current_num_threads());
    let pieces: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1])).collect();
    let decoded: std::result::Result<Vec<Vec<RecordBatch>>, ArrowError> = pieces
        .par_iter()
        .map(|&(start, end)| {
            // Only the first piece holds the header row.
            let header = header && start == 0;
            one(&bytes[start..end], format.clone().with_header(header))
        })
        .collect();
    let batches = match decoded {
        Ok(pieces) => pieces.into_iter().flatten().collect(),
        Err(_) if pieces.len() > 1 => one(bytes, format.clone())?,
        Err(e) => return Err(e),
    };
    arrow::compute::concat_batches(&schema, &batches)
}

/// Where `parts` pieces of about equal size begin and end: 0, a cut after a newline outside
/// quotes, ..., `bytes.len()`. A newline is outside quotes when the quotes before it are even
/// in number (RFC 4180, arrow's default: a quote inside a quoted field is written twice).
fn cuts(bytes: &[u8], parts: usize) -> Vec<usize> {
    let mut cuts = vec![0];
    let (mut at, mut quotes) = (0, 0usize);
    for k in 1..parts.max(1) {
        let aim = bytes.len() / parts * k;
        if aim <= at {
            continue;
        }
        quotes += bytes[at..aim].iter().filter(|&&b| b == b'"').count();
        at = aim;
        while at < bytes.len() {
            let b = bytes[at];
            at += 1;
            if b == b'"' {
                quotes += 1;
            } else if b == b'\n' && quotes % 2 == 0 {
                break;
            }
        }
        if at < bytes.len() {
            cuts.push(at);
        }
    }
    cuts.push(bytes.len());
    cuts
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_after_a_newline_outside_quotes() {
        // Quoted fields that hold newlines, commas and doubled quotes, around every cut.
        let mut text = String::from("id,note,label\n");
        for r in 0..200 {
            text += &format!("{r},\"line one\nline \"\"two\"\", {r}\",{}\r\n", r % 2);
        }
        let bytes = text.as_bytes();
        for parts in 1..9 {
            let cuts = cuts(bytes, parts);
            assert_eq!((cuts[0], *cuts.last().unwrap()), (0, bytes.len()));
            assert!(cuts.windows(2).all(|w| w[0] < w[1]), "{cuts:?}");
            for &cut in &cuts[1..cuts.len() - 1] {
                let before = &bytes[..cut];
                assert_eq!(before.last(), Some(&b'\n'));
                assert_eq!(before.iter().filter(|&&b| b == b'"').count() % 2, 0);
            }
        }
        let table = read_csv(bytes, Path::new("notes.csv")).unwrap();
        assert_eq!(table.num_rows(), 200);
        let notes = arrow::compute::cast(table.column(1), &DataType::Utf8).unwrap();
        let notes = arrow::array::AsArray::as_string::<i32>(&notes);
        assert_eq!(notes.value(137), "line one\nline \"two\", 137");
    }

    #[test]
    fn an_error_in_a_later_piece_names_its_line_in_the_file() {
        let mut text = String::from("label,x\n");
        for r in 0..20_000 {
            text += if r == 17_000 { "0,3,4\n" } else { "1,2\n" };
        }
        let message = read_csv(text.as_bytes(), Path::new("long.csv"))
            .unwrap_err()
            .to_string();
        // The header is line 1, row r is line r + 2.
        assert!(
            message.contains("long.csv") && message.contains("line 17002"),
            "{message}"
        );
    }
}
