//! A table's features fitted on the training split only, then written row-major.
//!
//! Fitted on the training rows, in this order:
//! 1. fill values, for the columns with missing cells: with `.fill_mean()` the mean (the most
//!    frequent value for a one-hot column), with `.fill_mode()` the most frequent value (ties
//!    go to the smallest);
//! 2. the categories of each one-hot column: the values the training rows hold, sorted
//!    (numbers by value, anything else as text), one 0/1 feature each; a value that only val
//!    or test rows hold is all zeros, and counted in [`Fitted::unseen`];
//! 3. with `.normalize()`, each feature's mean and standard deviation (the population one,
//!    numpy's default); a feature that is constant over the training rows keeps std 1 and is
//!    listed in [`Fitted::constant`].
//!
//! Why the training rows only: a mean, a category or a scale taken over every row lets the
//! val and test rows reach the model through its inputs, and their scores flatter it.
//!
//! Everything fitted is kept in [`Fitted`], which the dataset's fingerprint records in its
//! details, so an archived run shows it and a diff of two runs sees it.
//!
//! Not here: which columns and rows there are, the target and its classes (see [`super`]).

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, Float64Type};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::Fill;
use crate::{Error, Result};

/// What was made of a table: the target, the features in order, the rows left out, and
/// every value fitted on the training split. Recorded in the run's data component.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fitted {
    /// The target column, named or found by its name.
    pub target: String,
    /// The target's classes in index order: class `i` is `classes[i]` (none for regression).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// A regression target standardised with these (`.normalize()`): the model predicts
    /// (y - mean) / std, and losses, RMSE and MAE are in units of std.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_scale: Option<Scale>,
    /// The features in the order the model sees them: a column's name, or `column=value` for
    /// each category of a one-hot column.
    pub features: Vec<String>,
    /// Rows of the file left out for a missing cell (`.drop_missing_rows()`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_left_out: usize,
    /// The rows everything below was fitted on.
    pub training_rows: usize,
    /// One-hot column -> the categories the training rows hold, sorted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, Vec<String>>,
    /// One-hot column -> val and test rows holding a category the training rows do not
    /// (encoded as all zeros).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unseen: BTreeMap<String, usize>,
    /// Column -> the value its missing cells were given, and how many.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filled: BTreeMap<String, Filled>,
    /// Feature -> the mean and std it was standardised with (`.normalize()`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scaled: BTreeMap<String, Scale>,
    /// Features constant over the training rows: standardised with std 1, not 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constant: Vec<String>,
}

/// The value a column's missing cells were given, and how many there were.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Filled {
    pub value: FillValue,
    pub cells: usize,
}

/// A fill value: a number, or the category of a one-hot column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FillValue {
    Number(f64),
    Text(String),
}

/// A feature's mean and standard deviation over the training rows.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    pub mean: f64,
    pub std: f64,
}

/// More classes than this from a column of whole numbers reads like a quantity, and the
/// summary says how to ask for regression (MNIST has 10, CIFAR-100 100 named ones).
const MANY_CLASSES: usize = 20;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Fitted {
    /// What was done to the table, one line each, for the dataset's summary.
    pub fn lines(&self) -> Vec<String> {
        let list = |items: &[String]| {
            let shown: Vec<&str> = items.iter().take(12).map(String::as_str).collect();
            let more = items.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            shown.join(", ") + &more
        };
        let task = if self.classes.is_empty() {
            " (regression)"
        } else {
            ""
        };
        let mut lines = vec![format!(
            "target column {:?}{task}; {} features: {}",
            self.target,
            self.features.len(),
            list(&self.features)
        )];
        let whole_numbers = self.classes.iter().all(|c| c.parse::<i64>().is_ok());
        if whole_numbers && self.classes.len() > MANY_CLASSES {
            lines.push(format!(
                "{} classes from a column of whole numbers: if {:?} is a quantity (a count, \
                 grams, a price), ask for regression: .regression() (`--regression`)",
                self.classes.len(),
                self.target
            ));
        }
        if let Some(Scale { mean, std }) = self.target_scale {
            let (mean, std) = (
                recipe_archive::export::format_number(mean),
                recipe_archive::export::format_number(std),
            );
            lines.push(format!(
                "target standardised with the training rows' mean {mean} and std {std}: the \
                 model predicts (y - {mean}) / {std}, so losses, RMSE and MAE are in units of {std}"
            ));
        }
        if self.rows_left_out > 0 {
            lines.push(format!(
                "{} rows left out for a missing cell",
                self.rows_left_out
            ));
        }
        for (column, categories) in &self.categories {
            lines.push(format!(
                "{column}: one-hot over the {} categories of the training rows: {}",
                categories.len(),
                list(categories)
            ));
        }
        for (column, rows) in &self.unseen {
            lines.push(format!(
                "{column}: {rows} val/test rows hold a category the training rows do not; \
                 their one-hot features are all zeros"
            ));
        }
        for (column, filled) in &self.filled {
            let value = match &filled.value {
                FillValue::Number(v) => recipe_archive::export::format_number(*v),
                FillValue::Text(t) => format!("{t:?}"),
            };
            lines.push(format!(
                "{column}: {} missing cells filled with {value}, fitted on the {} training rows",
                filled.cells, self.training_rows
            ));
        }
        if !self.scaled.is_empty() {
            lines.push(format!(
                "features standardised with the mean and std of the {} training rows",
                self.training_rows
            ));
        }
        if !self.constant.is_empty() {
            lines.push(format!(
                "constant over the training rows, so divided by 1 instead of a std of 0: {}",
                list(&self.constant)
            ));
        }
        lines
    }
}

/// A feature column as the loader hands it over: its cells and which are missing (`None`:
/// none is).
pub(super) struct Column<'a> {
    pub name: &'a str,
    pub array: &'a ArrayRef,
    pub missing: Option<Vec<bool>>,
    pub one_hot: bool,
}

/// A category index no training row holds.
const UNSEEN: u32 = u32::MAX;

/// Where one column's features come from.
enum Source {
    /// A numeric column; the cells marked missing take `fill`.
    Number {
        values: ScalarBuffer<f64>,
        missing: Option<Vec<bool>>,
        fill: f64,
    },
    /// A one-hot column: each table row's category index (or [`UNSEEN`]), one feature per
    /// category.
    Categories { codes: Vec<u32>, count: usize },
}

impl Source {
    /// Feature `k` of this column at table row `row`.
    fn value(&self, row: usize, k: usize) -> f64 {
        match self {
            Source::Number {
                values,
                missing,
                fill,
            } => match missing {
                Some(missing) if missing[row] => *fill,
                _ => values[row],
            },
            Source::Categories { codes, .. } => f64::from(u8::from(codes[row] == k as u32)),
        }
    }

    fn width(&self) -> usize {
        match self {
            Source::Number { .. } => 1,
            Source::Categories { count, .. } => *count,
        }
    }
}

/// A table's features, fitted and ready to write.
pub(super) struct Features {
    sources: Vec<Source>,
    /// Each feature: (its source, which of the source's features).
    outputs: Vec<(usize, usize)>,
    /// Each feature's (mean, std); (0, 1) without `.normalize()`: the values as read.
    scales: Vec<(f64, f64)>,
}

impl Features {
    /// The features of the table rows `rows`, row-major (rows.len(), features).
    pub(super) fn write(&self, rows: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * self.outputs.len());
        for &row in rows {
            for (&(source, k), &(mean, std)) in self.outputs.iter().zip(&self.scales) {
                out.push(((self.sources[source].value(row, k) - mean) / std) as f32);
            }
        }
        out
    }
}

/// Steps 1 to 3 of the header over `columns`: `rows` are the table rows kept, `train` those
/// of the training split.
pub(super) fn fit(
    columns: Vec<Column>,
    rows: &[usize],
    train: &[usize],
    fill: Option<Fill>,
    normalize: bool,
    path: &Path,
) -> Result<(Features, Fitted)> {
    let mut fitted = Fitted {
        training_rows: train.len(),
        ..Fitted::default()
    };
    // 1 and 2, column by column.
    let mut sources = Vec::with_capacity(columns.len());
    for mut column in columns {
        let name = column.name.to_string();
        let cells = column
            .missing
            .as_ref()
            .map_or(0, |m| rows.iter().filter(|&&r| m[r]).count());
        if cells == 0 {
            // None missing, or left out with their rows.
            column.missing = None;
        } else if fill.is_none() {
            return Err(Error::Invalid(format!(
                "{}: column {name:?} kept {cells} missing cells that were neither refused nor \
                 left out (a bug in recipe's table loader)",
                path.display()
            )));
        }
        let (source, value) = if column.one_hot {
            let one_hot = categories(&column, rows, train, path)?;
            if one_hot.unseen > 0 {
                fitted.unseen.insert(name.clone(), one_hot.unseen);
            }
            let encoded = one_hot.categories.iter().map(|c| format!("{name}={c}"));
            fitted.features.extend(encoded);
            fitted.categories.insert(name.clone(), one_hot.categories);
            (one_hot.source, FillValue::Text(one_hot.mode))
        } else {
            let fill = fill.unwrap_or(Fill::Mean);
            let (source, value) = number(&column, rows, train, fill, path)?;
            fitted.features.push(name.clone());
            (source, FillValue::Number(value))
        };
        if cells > 0 {
            fitted.filled.insert(name, Filled { value, cells });
        }
        sources.push(source);
    }
    // 3. Scales.
    let outputs: Vec<(usize, usize)> = sources
        .iter()
        .enumerate()
        .flat_map(|(s, source)| (0..source.width()).map(move |k| (s, k)))
        .collect();
    let mut scales = vec![(0.0, 1.0); outputs.len()];
    if normalize {
        for ((&(s, k), scale), name) in outputs.iter().zip(&mut scales).zip(&fitted.features) {
            let values = || train.iter().map(|&r| sources[s].value(r, k));
            let (mean, std) = mean_std(values);
            let std = if std > 0.0 && std.is_finite() {
                std
            } else {
                fitted.constant.push(name.clone());
                1.0
            };
            *scale = (mean, std);
            fitted.scaled.insert(name.clone(), Scale { mean, std });
        }
    }
    let features = Features {
        sources,
        outputs,
        scales,
    };
    Ok((features, fitted))
}

/// Mean and population standard deviation, in two passes over the values (one pass of sums
/// of squares loses the digits of a column like 1e6 + small).
pub(super) fn mean_std<I: Iterator<Item = f64>>(values: impl Fn() -> I) -> (f64, f64) {
    let (sum, n) = values().fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    let mean = sum / n.max(1) as f64;
    let squares: f64 = values().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (squares / n.max(1) as f64).sqrt())
}

/// A numeric column, and the value its missing cells take, fitted on the training rows (0
/// where none is missing). An infinite value is refused: no mean or scale survives it.
fn number(
    column: &Column,
    rows: &[usize],
    train: &[usize],
    fill: Fill,
    path: &Path,
) -> Result<(Source, f64)> {
    let numbers = arrow::compute::cast(column.array, &DataType::Float64)
        .map_err(|e| Error::Data(format!("{}: column {:?}: {e}", path.display(), column.name)))?;
    let values = numbers.as_primitive::<Float64Type>().values().clone();
    if let Some(&r) = rows.iter().find(|&&r| values[r].is_infinite()) {
        return Err(Error::Data(format!(
            "{}: column {:?} holds {} at row {}; recipe never trains on an infinite value: \
             correct the file, or leave the column out with .drop([{:?}])",
            path.display(),
            column.name,
            values[r],
            r + 1,
            column.name
        )));
    }
    let fill = match &column.missing {
        None => 0.0,
        Some(missing) => {
            let mut present: Vec<f64> = train
                .iter()
                .filter(|&&r| !missing[r])
                .map(|&r| values[r])
                .collect();
            if present.is_empty() {
                return Err(no_training_value(column, train.len(), path));
            }
            match fill {
                Fill::Mean => present.iter().sum::<f64>() / present.len() as f64,
                Fill::Mode => {
                    present.sort_by(f64::total_cmp);
                    most_frequent(&present)
                }
            }
        }
    };
    let source = Source::Number {
        values,
        missing: column.missing.clone(),
        fill,
    };
    Ok((source, fill))
}

/// The most frequent of sorted values; of equally frequent ones, the first.
fn most_frequent<T: PartialEq + Clone>(sorted: &[T]) -> T {
    let mut best = (&sorted[0], 0);
    let mut run = (&sorted[0], 0);
    for v in sorted {
        run = if *v == *run.0 {
            (run.0, run.1 + 1)
        } else {
            (v, 1)
        };
        if run.1 > best.1 {
            best = run;
        }
    }
    best.0.clone()
}

/// A one-hot column fitted on the training rows.
struct OneHot {
    /// Each kept row's index among the categories.
    source: Source,
    /// The values the training rows hold, sorted.
    categories: Vec<String>,
    /// The most frequent of them, which missing cells take.
    mode: String,
    /// Kept rows whose value no training row holds.
    unseen: usize,
}

/// Step 2 of the header for one column (and its fill value, step 1).
fn categories(column: &Column, rows: &[usize], train: &[usize], path: &Path) -> Result<OneHot> {
    let text = arrow::compute::cast(column.array, &DataType::Utf8)
        .map_err(|e| Error::Data(format!("{}: column {:?}: {e}", path.display(), column.name)))?;
    let text = text.as_string::<i32>();
    let missing = |r: usize| column.missing.as_ref().is_some_and(|m| m[r]);
    let mut held: Vec<&str> = train
        .iter()
        .filter(|&&r| !missing(r))
        .map(|&r| text.value(r))
        .collect();
    if held.is_empty() {
        return Err(no_training_value(column, train.len(), path));
    }
    let numeric = column.array.data_type().is_numeric();
    held.sort_by(|a, b| {
        if numeric {
            let number = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
            number(a).total_cmp(&number(b)).then(a.cmp(b))
        } else {
            a.cmp(b)
        }
    });
    // Sorted, so the most frequent of equals is the smallest.
    let mode = most_frequent(&held);
    held.dedup();
    let index: HashMap<&str, u32> = held
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, i as u32))
        .collect();
    let mut codes = vec![UNSEEN; column.array.len()];
    for &r in rows {
        let value = if missing(r) { mode } else { text.value(r) };
        codes[r] = index.get(value).copied().unwrap_or(UNSEEN);
    }
    let categories: Vec<String> = held.iter().map(|c| c.to_string()).collect();
    let count = categories.len();
    Ok(OneHot {
        unseen: rows.iter().filter(|&&r| codes[r] == UNSEEN).count(),
        source: Source::Categories { codes, count },
        categories,
        mode: mode.to_string(),
    })
}

fn no_training_value(column: &Column, train: usize, path: &Path) -> Error {
    Error::Data(format!(
        "{}: column {:?} has no value in any of the {train} training rows to fill its missing \
         cells from; leave it out with .drop([{:?}]) (`--drop` on the command line)",
        path.display(),
        column.name,
        column.name
    ))
}
