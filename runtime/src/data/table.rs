//! Tables as people have them: CSV (plain or .gz) and Parquet, through one column-based
//! loader built on arrow's own readers (quoting, headers and type inference are arrow's).
//!
//! After reading, both formats take the same steps:
//! 1. drop the columns the user named ([`TableChoices::drop`]);
//! 2. pick the target: the one named, else the one column called `label`, `target`, `class`
//!    or `y` (any case), else an error listing the columns; never a guess by position;
//! 3. refuse missing cells (empty, `NA`, `NaN`, nulls) with their count per column, unless
//!    the user chose to drop those rows;
//! 4. make classes of the target: text values become classes named by their values, sorted;
//!    whole numbers become classes in their order; fractional values are refused (a
//!    regression target, which the trainer does not take yet);
//! 5. take every other column as a feature, which must be numeric: a text or date column the
//!    user did not drop is an error naming it.
//!
//! Every choice is part of the dataset's [`DataSpec`], so an archived run loads the same
//! table again and a diff sees a changed target or a dropped column.
//!
//! Not here: one-hot encoding, imputation and normalisation (not offered yet), splits.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

use crate::{Error, Result};

/// Column names taken as the target when none is named, compared without case.
pub const TARGET_NAMES: [&str; 4] = ["label", "target", "class", "y"];

/// What the user chose about a table: its target and what to leave out. The default (no
/// choice) is what `Dataset::from_csv` and `from_parquet` load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TableChoices {
    /// The target column; `None`: the one column named like [`TARGET_NAMES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Columns left out (ids, text, dates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
    /// Leave out the rows with a missing cell instead of refusing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_missing_rows: bool,
}

/// A table made ready to train on: features (N, D) row-major, class indices, class names.
#[derive(Debug)]
pub struct Prepared {
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
    pub feature_names: Vec<String>,
}

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
    let missing = regex::Regex::new("^(|NA|N/A|NaN|nan|null|NULL)$")
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

/// Steps 1 to 5 of the header on a table read from `path`.
pub fn prepare(table: RecordBatch, choices: &TableChoices, path: &Path) -> Result<Prepared> {
    let file = path.display();
    let names: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let listed = || names.join(", ");
    // 1. Dropped columns.
    for name in &choices.drop {
        if !names.contains(name) {
            return Err(Error::Data(format!(
                "{file}: no column {name:?} to drop; the columns are {}",
                listed()
            )));
        }
    }
    let kept: Vec<usize> = (0..names.len())
        .filter(|&i| !choices.drop.contains(&names[i]))
        .collect();
    // 2. The target.
    let target = match &choices.target {
        Some(name) => *kept.iter().find(|&&i| &names[i] == name).ok_or_else(|| {
            Error::Data(format!(
                "{file}: no column {name:?} to be the target; the columns are {}",
                listed()
            ))
        })?,
        None => {
            let found: Vec<usize> = kept
                .iter()
                .copied()
                .filter(|&i| {
                    TARGET_NAMES
                        .iter()
                        .any(|t| names[i].eq_ignore_ascii_case(t))
                })
                .collect();
            match found[..] {
                [i] => i,
                _ => {
                    return Err(Error::Data(format!(
                        "{file}: which column is the target? None is named {} (or more than \
                         one is); name it with Dataset::table(path).target(\"COLUMN\") (`--target` \
                         on the command line). The columns are {}",
                        TARGET_NAMES.join(", "),
                        listed()
                    )))
                }
            }
        }
    };
    let features: Vec<usize> = kept.iter().copied().filter(|&i| i != target).collect();
    // 5 (checked first: a text column is a clearer error than its missing cells).
    let not_numbers: Vec<String> = features
        .iter()
        .filter(|&&i| !is_number(table.column(i).data_type()))
        .map(|&i| format!("{} ({})", names[i], table.column(i).data_type()))
        .collect();
    if !not_numbers.is_empty() {
        let quoted: Vec<String> = features
            .iter()
            .filter(|&&i| !is_number(table.column(i).data_type()))
            .map(|&i| format!("{:?}", names[i]))
            .collect();
        return Err(Error::Data(format!(
            "{file}: feature columns must be numbers, and {} are not; leave them out with \
             .drop([{}]) (`--drop` on the command line; encoding them is not offered yet)",
            not_numbers.join(", "),
            quoted.join(", ")
        )));
    }
    // 3. Missing cells.
    let used: Vec<usize> = std::iter::once(target)
        .chain(features.iter().copied())
        .collect();
    let mut keep = vec![true; table.num_rows()];
    let mut counts = Vec::new();
    for &i in &used {
        let missing = missing_cells(table.column(i));
        let n = missing.iter().filter(|&&m| m).count();
        if n > 0 {
            counts.push(format!("{}: {n}", names[i]));
            for (row, m) in missing.into_iter().enumerate() {
                keep[row] &= !m;
            }
        }
    }
    if !counts.is_empty() && !choices.drop_missing_rows {
        return Err(Error::Data(format!(
            "{file}: missing cells (empty, NA, NaN or null) in {}; recipe never trains on them. \
             Leave out those rows with .drop_missing_rows() (`--drop-missing-rows`), or the \
             columns with .drop([...])",
            counts.join(", ")
        )));
    }
    let rows: Vec<usize> = (0..table.num_rows()).filter(|&r| keep[r]).collect();
    if rows.is_empty() {
        return Err(Error::Data(format!("{file}: no rows to train on")));
    }
    // 4. Classes.
    let (labels, classes) = classes(table.column(target), &rows, &names[target], path)?;
    // 5. Features, row-major.
    let columns: Vec<ArrayRef> = features
        .iter()
        .map(|&i| arrow::compute::cast(table.column(i), &DataType::Float64))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Data(format!("{file}: {e}")))?;
    let columns: Vec<&[f64]> = columns
        .iter()
        .map(|c| c.as_primitive::<Float64Type>().values().as_ref())
        .collect();
    let mut values = Vec::with_capacity(rows.len() * columns.len());
    for &row in &rows {
        values.extend(columns.iter().map(|column| column[row] as f32));
    }
    Ok(Prepared {
        features: values,
        labels,
        classes,
        feature_names: features.iter().map(|&i| names[i].clone()).collect(),
    })
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric() || *t == DataType::Boolean
}

/// Which cells of a column are missing: nulls, and NaN in a float column.
fn missing_cells(column: &ArrayRef) -> Vec<bool> {
    let nan = match column.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            arrow::compute::cast(column, &DataType::Float64)
                .ok()
                .map(|c| {
                    let c = c.as_primitive::<Float64Type>().clone();
                    BooleanArray::from_iter(c.iter().map(|v| Some(v.is_some_and(f64::is_nan))))
                })
        }
        _ => None,
    };
    (0..column.len())
        .map(|row| column.is_null(row) || nan.as_ref().is_some_and(|n| n.value(row)))
        .collect()
}

/// Class indices of `rows` of the target, and the class names: text values sorted, or whole
/// numbers in their order (named by their values).
fn classes(
    column: &ArrayRef,
    rows: &[usize],
    name: &str,
    path: &Path,
) -> Result<(Vec<u32>, Vec<String>)> {
    let values: Vec<String> = match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean => {
            let text = arrow::compute::cast(column, &DataType::Utf8)
                .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
            let text = text.as_string::<i32>();
            rows.iter().map(|&r| text.value(r).to_string()).collect()
        }
        t if t.is_numeric() => {
            let numbers = arrow::compute::cast(column, &DataType::Float64)
                .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
            let numbers = numbers.as_primitive::<Float64Type>();
            let mut whole = Vec::with_capacity(rows.len());
            for &r in rows {
                let v = numbers.value(r);
                if v.fract() != 0.0 {
                    return Err(Error::Data(format!(
                        "{}: target column {name:?} holds {v} (row {}): a fractional value \
                         makes it a regression target, which the trainer does not take yet; \
                         name a column of classes with .target(\"COLUMN\")",
                        path.display(),
                        r + 1
                    )));
                }
                whole.push(v as i64);
            }
            let (labels, distinct) = indices(&whole);
            return Ok((labels, distinct.iter().map(i64::to_string).collect()));
        }
        other => {
            return Err(Error::Data(format!(
                "{}: target column {name:?} is {other}, not classes",
                path.display()
            )))
        }
    };
    Ok(indices(&values))
}

/// Each value's index among the distinct values, sorted; and those values.
fn indices<T: Ord + Clone>(values: &[T]) -> (Vec<u32>, Vec<T>) {
    let mut distinct = values.to_vec();
    distinct.sort();
    distinct.dedup();
    let labels = values
        .iter()
        .map(|v| distinct.binary_search(v).unwrap_or(0) as u32)
        .collect();
    (labels, distinct)
}
