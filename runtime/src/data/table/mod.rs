//! Tables as people have them: CSV (plain or .gz) and Parquet, through one column-based
//! loader built on arrow's own readers ([`read`]: quoting, headers and type inference are
//! arrow's).
//!
//! After reading, both formats take the same steps ([`prepare`]):
//! 1. check the columns the choices name, and leave out the dropped ones;
//! 2. pick the target: the one named, else the one column called `label`, `target`, `class`
//!    or `y` (any case), else an error listing the columns; never a guess by position;
//! 3. take every other column as a feature: a number, or a column the user chose to one-hot
//!    encode; a text or date column the user did not name is an error naming it;
//! 4. refuse missing cells (empty, `NA`, `NaN`, nulls) with their count per column and the
//!    three ways out, unless the user chose one: leave out those rows, or fill the cells
//!    (a missing target is never filled: its row is left out, or refused);
//! 5. split the rows kept: a seeded 70/10/20 permutation into `train`, `val` and `test`;
//! 6. make the target: for classes, text values become classes named by their values,
//!    sorted, and whole numbers classes in their order (fractional values are refused unless
//!    the user asks for regression); for regression (`.regression()`), the column's numbers,
//!    standardised with the training rows' mean and std when the user asks to normalise;
//! 7. fit fill values, categories and scales on the training rows only ([`fit`]);
//! 8. write the features row-major with what step 7 fitted.
//!
//! Every choice is part of the dataset's [`DataSpec`](super::DataSpec), so an archived run
//! loads the same table again and a diff sees a changed target or a dropped column; every
//! value fitted is in [`Fitted`], which the dataset's fingerprint records.
//!
//! Not here: the per-column view of a table before choosing its target ([`columns`]).

mod columns;
mod fit;
mod read;

pub use columns::{columns, ColumnStats, Columns};
pub use fit::{FillValue, Filled, Fitted, Scale};
pub use read::{read_csv, read_csv_with, read_parquet};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::path::Path;

use super::{seeded_splits, Target, SPLITS};
use crate::{Error, Result};

/// Column names taken as the target when none is named, compared without case.
pub const TARGET_NAMES: [&str; 4] = ["label", "target", "class", "y"];

/// What the user chose about a table: its target, what to leave out, how to encode, fill and
/// scale. The default (no choice) is what `Dataset::from_csv` and `from_parquet` load; a
/// choice left at its default is not written, so the spec of a table loaded without choices
/// keeps one form.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TableChoices {
    /// The target column; `None`: the one column named like [`TARGET_NAMES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Columns left out (ids, text, dates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
    /// Leave out the rows with a missing cell instead of refusing them (with [`Self::fill`],
    /// only the rows whose target is missing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_missing_rows: bool,
    /// Columns encoded as one 0/1 feature per category of the training rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_hot: Vec<String>,
    /// Fill missing feature cells with a value fitted on the training rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<Fill>,
    /// Standardise every feature (and a regression target) with the training rows' mean
    /// and std.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub normalize: bool,
    /// The target is a number to regress, not classes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regression: bool,
}

/// What a missing feature cell is filled with, fitted on the training rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    /// The column's mean; for a one-hot column its most frequent value.
    Mean,
    /// The column's most frequent value (of equally frequent ones, the smallest).
    Mode,
}

/// A table made ready to train on.
#[derive(Debug)]
pub struct Prepared {
    /// (N, D) row-major.
    pub features: Vec<f32>,
    /// (N,) classes or values.
    pub target: Target,
    /// Split name -> row indices (step 5).
    pub splits: BTreeMap<String, Vec<usize>>,
    pub fitted: Fitted,
}

/// Steps 1 to 8 of the header on a table read from `path`.
pub fn prepare(table: RecordBatch, choices: &TableChoices, path: &Path) -> Result<Prepared> {
    let file = path.display();
    let names = column_names(&table);
    let listed = || names.join(", ");
    let quoted = |columns: &[usize]| {
        let quoted: Vec<String> = columns.iter().map(|&i| format!("{:?}", names[i])).collect();
        quoted.join(", ")
    };
    // 1. The columns the choices name.
    for (name, to) in (choices.drop.iter().map(|n| (n, "drop")))
        .chain(choices.one_hot.iter().map(|n| (n, "one-hot encode")))
    {
        if !names.contains(name) {
            return Err(Error::Data(format!(
                "{file}: no column {name:?} to {to}; the columns are {}",
                listed()
            )));
        }
    }
    if let Some(name) = choices.one_hot.iter().find(|n| choices.drop.contains(n)) {
        return Err(Error::Data(format!(
            "{file}: column {name:?} is both dropped and one-hot encoded; choose one"
        )));
    }
    let kept: Vec<usize> = (0..names.len())
        .filter(|&i| !choices.drop.contains(&names[i]))
        .collect();
    // 2. The target.
    let target = target_column(&names, &kept, choices, path)?;
    if choices.one_hot.contains(&names[target]) {
        return Err(Error::Data(format!(
            "{file}: {:?} is the target, so it cannot be one-hot encoded as a feature",
            names[target]
        )));
    }
    let features: Vec<usize> = kept.iter().copied().filter(|&i| i != target).collect();
    // 3. Features are numbers or one-hot encoded (checked before missing cells: a text
    // column is a clearer error than its missing cells).
    let one_hot = |i: usize| choices.one_hot.contains(&names[i]);
    let not_numbers: Vec<usize> = features
        .iter()
        .copied()
        .filter(|&i| !one_hot(i) && !is_number(table.column(i).data_type()))
        .collect();
    if !not_numbers.is_empty() {
        let typed: Vec<String> = not_numbers
            .iter()
            .map(|&i| {
                let column = table.column(i);
                match stray_text(column) {
                    Some((row, text)) => format!(
                        "{} ({}: row {} holds {text:?} where most cells are numbers)",
                        names[i],
                        column.data_type(),
                        row + 1
                    ),
                    None => format!("{} ({})", names[i], column.data_type()),
                }
            })
            .collect();
        return Err(Error::Data(format!(
            "{file}: feature columns must be numbers, and {} are not; leave them out with \
             .drop([{list}]) or encode them with .one_hot([{list}]) (`--drop COLUMN` or \
             `--one-hot COLUMN` on the command line)",
            typed.join(", "),
            list = quoted(&not_numbers),
        )));
    }
    // 4. Missing cells.
    let missing: Vec<Option<Vec<bool>>> = table.columns().iter().map(missing_cells).collect();
    let with_missing: Vec<usize> = std::iter::once(target)
        .chain(features.iter().copied())
        .filter(|&i| missing[i].is_some())
        .collect();
    if !with_missing.is_empty() && !choices.drop_missing_rows && choices.fill.is_none() {
        let counts: Vec<String> = with_missing
            .iter()
            .map(|&i| count_missing(&names[i], &missing[i]))
            .collect();
        return Err(Error::Data(format!(
            "{file}: missing cells (empty, NA, NaN or null) in {}; recipe never trains on \
             them. Choose one: leave out those rows with .drop_missing_rows() \
             (`--drop-missing-rows`); fill them with the training split's mean, or most \
             frequent value, with .fill_mean() or .fill_mode() (`--fill mean|mode`); or leave \
             out the columns with .drop([{}]) (`--drop COLUMN`)",
            counts.join(", "),
            quoted(&with_missing)
        )));
    }
    if choices.fill.is_some() && !choices.drop_missing_rows && missing[target].is_some() {
        return Err(Error::Data(format!(
            "{file}: missing cells in the target, {}; a target is never filled: leave out \
             those rows with .drop_missing_rows() as well (`--drop-missing-rows`)",
            count_missing(&names[target], &missing[target])
        )));
    }
    let mut keep = vec![true; table.num_rows()];
    if choices.drop_missing_rows {
        // With a fill, only the target's missing cells cost their row.
        let costly = with_missing
            .iter()
            .filter(|&&i| i == target || choices.fill.is_none());
        for m in costly.filter_map(|&i| missing[i].as_ref()) {
            for (k, &m) in keep.iter_mut().zip(m) {
                *k &= !m;
            }
        }
    }
    let rows: Vec<usize> = (0..table.num_rows()).filter(|&r| keep[r]).collect();
    if rows.is_empty() {
        return Err(Error::Data(format!(
            "{file}: no rows to train on ({} in the file, each with a missing cell left out)",
            table.num_rows()
        )));
    }
    // 5. Splits; the training rows as rows of the table.
    let splits = seeded_splits(rows.len(), &SPLITS);
    let train: Vec<usize> = splits
        .get("train")
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|&k| rows[k])
        .collect();
    // 6. The target.
    let (target_values, target_scale) = if choices.regression {
        let column = table.column(target);
        let (values, scale) = values(column, &rows, &train, &names[target], choices, path)?;
        let name = names[target].clone();
        (Target::Values { values, name }, scale)
    } else {
        let (labels, names) = classes(table.column(target), &rows, &names[target], path)?;
        (Target::Classes { labels, names }, None)
    };
    // 7. Fitted on the training rows.
    let columns = features
        .iter()
        .map(|&i| fit::Column {
            name: &names[i],
            array: table.column(i),
            missing: missing[i].clone(),
            one_hot: one_hot(i),
        })
        .collect();
    let (encoded, fitted) = fit::fit(
        columns,
        &rows,
        &train,
        choices.fill,
        choices.normalize,
        path,
    )?;
    // 8. Features, row-major.
    let classes = match &target_values {
        Target::Classes { names, .. } => names.clone(),
        Target::Values { .. } | Target::Tokens { .. } => Vec::new(),
    };
    Ok(Prepared {
        features: encoded.write(&rows),
        target: target_values,
        splits,
        fitted: Fitted {
            target: names[target].clone(),
            classes,
            target_scale,
            rows_left_out: table.num_rows() - rows.len(),
            ..fitted
        },
    })
}

/// Step 2 of [`prepare`]: the column named as the target, else the one kept column named like
/// [`TARGET_NAMES`]; an error listing the columns otherwise.
fn target_column(
    names: &[String],
    kept: &[usize],
    choices: &TableChoices,
    path: &Path,
) -> Result<usize> {
    let file = path.display();
    if let Some(name) = &choices.target {
        return kept
            .iter()
            .copied()
            .find(|&i| &names[i] == name)
            .ok_or_else(|| {
                Error::Data(format!(
                    "{file}: no column {name:?} to be the target; the columns are {}",
                    names.join(", ")
                ))
            });
    }
    let named_like = |i: &usize| {
        TARGET_NAMES
            .iter()
            .any(|t| names[*i].eq_ignore_ascii_case(t))
    };
    match kept.iter().copied().filter(named_like).collect::<Vec<_>>()[..] {
        [i] => Ok(i),
        _ => Err(Error::Data(format!(
            "{file}: which column is the target? None is named {} (or more than one is); name \
             it with Dataset::table(path).target(\"COLUMN\") (`--target` on the command line). \
             The columns are {}",
            TARGET_NAMES.join(", "),
            names.join(", ")
        ))),
    }
}

/// For a text column most of whose cells read as numbers: the first row that does not, and
/// its text (a stray `?` or `unknown` that made arrow read the whole column as text).
fn stray_text(column: &ArrayRef) -> Option<(usize, String)> {
    let text = column.as_string_opt::<i32>()?;
    let (mut numbers, mut others, mut first) = (0, 0, None);
    for (row, cell) in text.iter().enumerate() {
        let Some(cell) = cell else { continue };
        if cell.trim().parse::<f64>().is_ok() {
            numbers += 1;
        } else {
            others += 1;
            first.get_or_insert((row, cell));
        }
    }
    let (row, cell) = first?;
    (numbers > others).then(|| (row, cell.to_string()))
}

/// `column: count (first at row r)`, rows counted from 1 after the header.
fn count_missing(name: &str, missing: &Option<Vec<bool>>) -> String {
    let cells = missing.as_deref().unwrap_or_default();
    let count = cells.iter().filter(|&&m| m).count();
    match cells.iter().position(|&m| m) {
        Some(first) => format!("{name}: {count} (first at row {})", first + 1),
        None => format!("{name}: 0"),
    }
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric() || *t == DataType::Boolean
}

/// Which cells of a column are missing: nulls, and NaN in a float column; `None` when none is.
fn missing_cells(column: &ArrayRef) -> Option<Vec<bool>> {
    let nan = match column.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            arrow::compute::cast(column, &DataType::Float64).ok()
        }
        _ => None,
    };
    let nan = nan
        .as_ref()
        .map(|c| c.as_primitive::<Float64Type>().values());
    let any_nan = nan.is_some_and(|v| v.iter().any(|x| x.is_nan()));
    if column.null_count() == 0 && !any_nan {
        return None;
    }
    Some(
        (0..column.len())
            .map(|row| column.is_null(row) || nan.is_some_and(|v| v[row].is_nan()))
            .collect(),
    )
}

/// Class indices of `rows` of the target, and the class names: text values sorted, or whole
/// numbers in their order (named by their values).
fn classes(
    column: &ArrayRef,
    rows: &[usize],
    name: &str,
    path: &Path,
) -> Result<(Vec<u32>, Vec<String>)> {
    let bad = |e: arrow::error::ArrowError| Error::Data(format!("{}: {e}", path.display()));
    match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean => {
            let text = arrow::compute::cast(column, &DataType::Utf8).map_err(bad)?;
            let text = text.as_string::<i32>();
            let (labels, names) = indices(rows.iter().map(|&r| text.value(r)));
            Ok((labels, names.iter().map(|n| n.to_string()).collect()))
        }
        t if t.is_numeric() => {
            let numbers = arrow::compute::cast(column, &DataType::Float64).map_err(bad)?;
            let numbers = numbers.as_primitive::<Float64Type>().values();
            if let Some(&r) = rows.iter().find(|&&r| numbers[r].fract() != 0.0) {
                return Err(Error::Data(format!(
                    "{}: target column {name:?} holds {} (row {}): a fractional value is not a \
                     class. To predict the number, ask for regression: .regression() \
                     (`--regression` on the command line); or name a column of classes with \
                     .target(\"COLUMN\")",
                    path.display(),
                    numbers[r],
                    r + 1
                )));
            }
            let (labels, names) = indices(rows.iter().map(|&r| numbers[r] as i64));
            Ok((labels, names.iter().map(i64::to_string).collect()))
        }
        other => Err(Error::Data(format!(
            "{}: target column {name:?} is {other}, not classes",
            path.display()
        ))),
    }
}

/// The target's numbers at `rows` for regression, standardised with the mean and std of the
/// training rows `train` when the choices normalise (the scale is returned to be recorded).
fn values(
    column: &ArrayRef,
    rows: &[usize],
    train: &[usize],
    name: &str,
    choices: &TableChoices,
    path: &Path,
) -> Result<(Vec<f32>, Option<fit::Scale>)> {
    if !is_number(column.data_type()) {
        return Err(Error::Data(format!(
            "{}: target column {name:?} is {}, not numbers: a regression target must be \
             numbers; for classes, leave out .regression()",
            path.display(),
            column.data_type()
        )));
    }
    let numbers = arrow::compute::cast(column, &DataType::Float64)
        .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    let numbers = numbers.as_primitive::<Float64Type>().values();
    if let Some(&r) = rows.iter().find(|&&r| !numbers[r].is_finite()) {
        return Err(Error::Data(format!(
            "{}: target column {name:?} holds {} (row {}): a regression target must be finite",
            path.display(),
            numbers[r],
            r + 1
        )));
    }
    let scale = choices.normalize.then(|| {
        let (mean, std) = fit::mean_std(|| train.iter().map(|&r| numbers[r]));
        fit::Scale {
            mean,
            std: if std > 0.0 { std } else { 1.0 },
        }
    });
    let (mean, std) = scale.map_or((0.0, 1.0), |s| (s.mean, s.std));
    let values = rows
        .iter()
        .map(|&r| ((numbers[r] - mean) / std) as f32)
        .collect();
    Ok((values, scale))
}

/// Each value's index among the distinct values, sorted; and those values. The values are
/// borrowed (`&str`) or small (`i64`): no cell is copied.
fn indices<T: Ord + Hash + Copy>(values: impl Iterator<Item = T> + Clone) -> (Vec<u32>, Vec<T>) {
    let distinct: HashSet<T> = values.clone().collect();
    let mut distinct: Vec<T> = distinct.into_iter().collect();
    distinct.sort();
    let index: HashMap<T, u32> = (distinct.iter().enumerate())
        .map(|(i, &v)| (v, i as u32))
        .collect();
    let labels = values.map(|v| index[&v]).collect();
    (labels, distinct)
}

/// The names of a table's columns, in order.
pub(super) fn column_names(table: &RecordBatch) -> Vec<String> {
    let schema = table.schema();
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

#[cfg(test)]
mod tests;
