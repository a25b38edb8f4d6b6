//! Becoming one with a table before training on it: every column as it was read, with its
//! type, missing cells, distinct values, min / mean / max for numbers and the most frequent
//! values for anything else; what the choices make of it (target, feature, dropped, one-hot,
//! or a column still to decide about); and the target's classes with their counts.
//!
//! It needs no target: a notebook looks here first, then names the target and the columns to
//! drop or encode. Nothing is fitted and no split is made: these are all the rows.
//!
//! Not here: the loaded dataset's summary (class balance per split, feature statistics after
//! encoding): see [`crate::data::inspect`].

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{classes, is_number, missing_cells, target_column, TableChoices};
use crate::show::{escape, html_table, Show};
use crate::{show_in_jupyter, Result};

/// How many of a column's most frequent values are kept.
const FREQUENT: usize = 5;

/// How many of the target's classes the text and HTML list by name.
const CLASSES: usize = 20;

/// Every column of a table, and its target's classes.
#[derive(Clone, Debug)]
pub struct Columns {
    /// The file, as the user named it.
    pub file: String,
    pub rows: usize,
    pub columns: Vec<ColumnStats>,
    /// The target the choices name, or the one column named like a target.
    pub target: Option<String>,
    /// The target's classes as training names them, with their counts over all rows.
    pub classes: Vec<(String, usize)>,
    /// Why there are no classes (no target yet, or one that is not classes).
    pub no_classes: Option<String>,
}

/// One column as it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnStats {
    pub name: String,
    /// arrow's type of the column (`Int64`, `Float64`, `Utf8`, `Date32`...).
    pub kind: String,
    /// Empty, `NA`, `NaN` or null cells.
    pub missing: usize,
    /// Distinct values among the cells present.
    pub distinct: usize,
    /// For numbers: (min, mean, max) over the cells present.
    pub numbers: Option<(f64, f64, f64)>,
    /// For anything else: the most frequent values and their counts, most frequent first
    /// (equals in their sorted order).
    pub frequent: Vec<(String, usize)>,
    /// What the choices make of it: `target`, `feature`, `dropped`, `one-hot`, or
    /// `drop or one-hot` for a column that is not a number and has no choice yet.
    pub role: &'static str,
}

/// Every column of `table` (read from `path`) as [`Columns`] describes it.
pub fn columns(table: &RecordBatch, choices: &TableChoices, path: &Path) -> Result<Columns> {
    let names = super::column_names(table);
    let kept: Vec<usize> = (0..names.len())
        .filter(|&i| !choices.drop.contains(&names[i]))
        .collect();
    let target = target_column(&names, &kept, choices, path);
    let mut stats = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let role = if target.as_ref().is_ok_and(|&t| t == i) {
            "target"
        } else if choices.drop.contains(name) {
            "dropped"
        } else if choices.one_hot.contains(name) {
            "one-hot"
        } else if is_number(table.column(i).data_type()) {
            "feature"
        } else {
            "drop or one-hot"
        };
        stats.push(column_stats(name, table.column(i), role, path)?);
    }
    let (classes, no_classes) = match &target {
        Ok(t) => {
            let column = table.column(*t);
            let missing = missing_cells(column);
            let present: Vec<usize> = (0..table.num_rows())
                .filter(|&r| !missing.as_ref().is_some_and(|m| m[r]))
                .collect();
            match classes(column, &present, &names[*t], path) {
                Ok((labels, names)) => {
                    let mut counts = vec![0usize; names.len()];
                    for l in labels {
                        counts[l as usize] += 1;
                    }
                    (names.into_iter().zip(counts).collect(), None)
                }
                Err(e) => (Vec::new(), Some(e.to_string())),
            }
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(Columns {
        file: path.display().to_string(),
        rows: table.num_rows(),
        columns: stats,
        target: target.ok().map(|t| names[t].clone()),
        classes,
        no_classes,
    })
}

fn column_stats(
    name: &str,
    column: &ArrayRef,
    role: &'static str,
    path: &Path,
) -> Result<ColumnStats> {
    let bad = |e: arrow::error::ArrowError| {
        crate::Error::Data(format!("{}: column {name:?}: {e}", path.display()))
    };
    let missing = missing_cells(column);
    let present = |r: &usize| !missing.as_ref().is_some_and(|m| m[*r]);
    let rows = (0..column.len()).filter(present);
    let mut stats = ColumnStats {
        name: name.to_string(),
        kind: column.data_type().to_string(),
        missing: missing
            .as_ref()
            .map_or(0, |m| m.iter().filter(|&&m| m).count()),
        distinct: 0,
        numbers: None,
        frequent: Vec::new(),
        role,
    };
    if column.data_type().is_numeric() {
        let numbers = arrow::compute::cast(column, &DataType::Float64).map_err(bad)?;
        let values = numbers.as_primitive::<Float64Type>().values();
        let (mut lo, mut hi, mut sum, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
        // `+ 0.0` makes -0 and 0 one value.
        let mut distinct = HashSet::new();
        for r in rows {
            let v = values[r];
            (lo, hi, sum, n) = (lo.min(v), hi.max(v), sum + v, n + 1);
            distinct.insert((v + 0.0).to_bits());
        }
        stats.distinct = distinct.len();
        stats.numbers = (n > 0).then(|| (lo, sum / n as f64, hi));
    } else {
        let text = arrow::compute::cast(column, &DataType::Utf8).map_err(bad)?;
        let text = text.as_string::<i32>();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for r in rows {
            *counts.entry(text.value(r)).or_default() += 1;
        }
        stats.distinct = counts.len();
        let mut frequent: Vec<(&str, usize)> = counts.into_iter().collect();
        frequent.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        frequent.truncate(FREQUENT);
        stats.frequent = frequent
            .into_iter()
            .map(|(v, c)| (v.to_string(), c))
            .collect();
    }
    Ok(stats)
}

impl Columns {
    fn headline(&self) -> String {
        let target = match &self.target {
            Some(t) => format!("target {t:?}"),
            None => "no target yet".to_string(),
        };
        format!(
            "{}: {} rows, {} columns; {target}",
            self.file,
            self.rows,
            self.columns.len()
        )
    }

    fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let headers = [
            "column",
            "type",
            "missing",
            "distinct",
            "min",
            "mean",
            "max",
            "most frequent",
            "role",
        ];
        // Whole numbers as they are (ids, counts, years); others to four digits.
        let number = |v: f64| {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{v:.0}")
            } else {
                recipe_archive::export::format_number(v)
            }
        };
        let rows = self
            .columns
            .iter()
            .map(|c| {
                let (lo, mean, hi) = match c.numbers {
                    Some((lo, mean, hi)) => (number(lo), number(mean), number(hi)),
                    None => Default::default(),
                };
                let frequent: Vec<String> = c
                    .frequent
                    .iter()
                    .map(|(v, n)| format!("{v} ({n})"))
                    .collect();
                vec![
                    c.name.clone(),
                    c.kind.clone(),
                    c.missing.to_string(),
                    c.distinct.to_string(),
                    lo,
                    mean,
                    hi,
                    frequent.join(", "),
                    c.role.to_string(),
                ]
            })
            .collect();
        (headers.map(String::from).to_vec(), rows)
    }

    fn class_line(&self) -> String {
        match (&self.target, &self.no_classes) {
            (_, Some(why)) => why.clone(),
            (Some(target), None) => {
                let mut classes: Vec<String> = self
                    .classes
                    .iter()
                    .take(CLASSES)
                    .map(|(name, n)| format!("{name} {n}"))
                    .collect();
                if self.classes.len() > CLASSES {
                    classes.push(format!("and {} more", self.classes.len() - CLASSES));
                }
                format!(
                    "{} classes of {target:?}: {}",
                    self.classes.len(),
                    classes.join(", ")
                )
            }
            (None, None) => String::new(),
        }
    }
}

impl Show for Columns {
    fn text(&self) -> String {
        let (headers, rows) = self.table();
        let widths: Vec<usize> = (0..headers.len())
            .map(|j| {
                let cells = rows.iter().map(|r| r[j].chars().count());
                cells.chain([headers[j].len()]).max().unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, &w)| format!("{c:<w$}"))
                .collect();
            padded.join("  ").trim_end().to_string() + "\n"
        };
        let mut out = self.headline() + "\n" + &line(&headers);
        for row in &rows {
            out += &line(row);
        }
        out + &self.class_line() + "\n"
    }

    fn html(&self) -> String {
        let (headers, rows) = self.table();
        format!(
            "<p>{}</p>{}<p>{}</p>",
            escape(&self.headline()),
            html_table(&headers, &rows),
            escape(&self.class_line())
        )
    }
}

show_in_jupyter!(Columns);
