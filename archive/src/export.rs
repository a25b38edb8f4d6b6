//! Tables for people and papers: one [`TextTable`] rendered as an aligned terminal table,
//! Markdown, LaTeX (booktabs) or CSV, and the results table of run groups with mean ± std
//! and the run ids behind every number.

use crate::diff::higher_is_better;
use crate::group::{Group, Stats};
use crate::{Error, Result};
use std::collections::BTreeSet;

/// Rows of text cells under headers, with an optional caption (the provenance of a results
/// table lives there).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TextTable {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub caption: Option<String>,
    /// Cells (row, column) marked best: bold in Markdown, LaTeX and HTML, `*` in a terminal.
    pub best: BTreeSet<(usize, usize)>,
}

impl TextTable {
    pub fn new(headers: &[&str]) -> TextTable {
        TextTable {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            ..TextTable::default()
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Row `row`'s cells as `cell` renders them, those marked best then wrapped by `mark`:
    /// what every format shares, from a terminal's ` *` to LaTeX's `\textbf`.
    pub fn marked_row(
        &self,
        row: usize,
        cell: impl Fn(&str) -> String,
        mark: impl Fn(String) -> String,
    ) -> Vec<String> {
        (self.rows[row].iter().enumerate())
            .map(|(col, c)| {
                if self.best.contains(&(row, col)) {
                    mark(cell(c))
                } else {
                    cell(c)
                }
            })
            .collect()
    }

    /// Columns padded to their widest cell, for a terminal.
    pub fn to_terminal(&self) -> String {
        let rows: Vec<Vec<String>> = (0..self.rows.len())
            .map(|r| self.marked_row(r, str::to_string, |c| format!("{c} *")))
            .collect();
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                std::iter::once(&self.headers[i])
                    .chain(rows.iter().filter_map(|r| r.get(i)))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}", w = *w))
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = vec![line(&self.headers)];
        out.push(
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  "),
        );
        out.extend(rows.iter().map(|r| line(r)));
        if let Some(caption) = &self.caption {
            out.push(String::new());
            out.push(caption.clone());
        }
        out.join("\n") + "\n"
    }

    pub fn to_markdown(&self) -> String {
        let escape = |c: &String| c.replace('|', "\\|");
        let row = |cells: &[String]| {
            format!(
                "| {} |",
                cells.iter().map(escape).collect::<Vec<_>>().join(" | ")
            )
        };
        let mut out = vec![row(&self.headers)];
        out.push(format!("|{}|", vec!["---"; self.headers.len()].join("|")));
        out.extend(
            (0..self.rows.len())
                .map(|r| row(&self.marked_row(r, str::to_string, |c| format!("**{c}**")))),
        );
        if let Some(caption) = &self.caption {
            out.push(String::new());
            out.push(caption.clone());
        }
        out.join("\n") + "\n"
    }

    /// A booktabs table: `\toprule`, `\midrule`, `\bottomrule`, caption with the run ids.
    pub fn to_latex(&self) -> String {
        let mut out =
            String::from("% needs \\usepackage{booktabs}\n\\begin{table}[t]\n\\centering\n");
        out += &format!(
            "\\begin{{tabular}}{{l{}}}\n\\toprule\n",
            "r".repeat(self.headers.len().saturating_sub(1))
        );
        let row = |cells: &[String]| cells.join(" & ") + " \\\\\n";
        let escaped: Vec<String> = self.headers.iter().map(|h| latex_escape(h)).collect();
        out += &row(&escaped);
        out += "\\midrule\n";
        for r in 0..self.rows.len() {
            out += &row(&self.marked_row(r, latex_escape, |c| format!("\\textbf{{{c}}}")));
        }
        out += "\\bottomrule\n\\end{tabular}\n";
        if let Some(caption) = &self.caption {
            out += &format!("\\caption{{{}}}\n", latex_escape(caption));
        }
        out + "\\end{table}\n"
    }

    /// RFC 4180 CSV (the caption is not part of it).
    pub fn to_csv(&self) -> String {
        let field = |c: &String| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        };
        std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|r| r.iter().map(field).collect::<Vec<_>>().join(",") + "\n")
            .collect()
    }
}

fn latex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '±' => out.push_str("$\\pm$"),
            '↑' => out.push_str("$\\uparrow$"),
            '↓' => out.push_str("$\\downarrow$"),
            'Δ' => out.push_str("$\\Delta$"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '\\' => out.push_str("\\textbackslash{}"),
            _ => out.push(c),
        }
    }
    out
}

/// `mean ± std` with as many decimals as the std's two leading digits need.
pub fn format_mean_std(stats: &Stats) -> String {
    // A spread below 1e-12 of the mean is rounding in the mean itself, not seed variance.
    if stats.n < 2 || !stats.std.is_finite() || stats.std <= stats.mean.abs() * 1e-12 {
        return format_number(stats.mean);
    }
    let decimals = (1 - stats.std.abs().log10().floor() as i32).clamp(0, 10) as usize;
    format!("{:.*} ± {:.*}", decimals, stats.mean, decimals, stats.std)
}

/// A number with four significant digits, plainly.
pub fn format_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&magnitude) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - magnitude).clamp(0, 10) as usize;
    format!("{v:.decimals$}")
}

/// That every metric asked for is one some group has: a metric no run logged (`--metric
/// tset_acc`) is an error naming the metrics there are, not a column of dashes.
pub fn check_metrics(groups: &[Group], metrics: &[String]) -> Result<()> {
    let known: BTreeSet<&str> = (groups.iter())
        .flat_map(|g| g.metrics.keys().map(String::as_str))
        .collect();
    match metrics.iter().find(|m| !known.contains(m.as_str())) {
        None => Ok(()),
        Some(missing) => Err(Error::NotFound(format!(
            "no run selected has the metric {missing:?}; their metrics: {}",
            known.into_iter().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The results table of a set of groups: one row per group, the config keys that vary
/// between groups, `mean ± std` for each metric (all metrics when `metrics` is empty), N,
/// and a caption naming the run ids behind each row.
pub fn results_table(groups: &[Group], metrics: &[String]) -> TextTable {
    let metric_names: Vec<String> = if metrics.is_empty() {
        groups
            .iter()
            .flat_map(|g| g.metrics.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        metrics.to_vec()
    };
    let flat: Vec<_> = groups
        .iter()
        .map(|g| crate::diff::flatten(&g.config))
        .collect();
    let varying: Vec<String> = flat
        .iter()
        .flat_map(|f| f.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| flat.iter().any(|f| f.get(k) != flat[0].get(k)))
        .collect();
    let mut headers = vec!["run".to_string()];
    headers.extend(varying.iter().cloned());
    headers.extend(
        metric_names
            .iter()
            .map(|m| format!("{m} {}", if higher_is_better(m) { "↑" } else { "↓" })),
    );
    headers.push("N".into());
    let mut table = TextTable {
        headers,
        ..TextTable::default()
    };
    let mut provenance = Vec::new();
    for (group, f) in groups.iter().zip(&flat) {
        let mut row = vec![group.name.clone()];
        row.extend(
            varying
                .iter()
                .map(|k| f.get(k).map(value_text).unwrap_or_else(|| "–".into())),
        );
        row.extend(metric_names.iter().map(|m| {
            group
                .metrics
                .get(m)
                .map(format_mean_std)
                .unwrap_or_else(|| "–".into())
        }));
        let n = group.metrics.values().map(|s| s.n).max().unwrap_or(0);
        row.push(n.to_string());
        table.push(row);
        let ids: BTreeSet<String> = group
            .metrics
            .values()
            .flat_map(|s| s.runs.iter().map(|r| short_key(r)))
            .collect();
        provenance.push(format!(
            "{}: {}",
            group.name,
            ids.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    // The best mean of each metric column, where two or more rows have one (ties: each).
    let first_metric = 1 + varying.len();
    for (k, m) in metric_names.iter().enumerate() {
        let means: Vec<Option<f64>> = groups
            .iter()
            .map(|g| g.metrics.get(m).map(|s| s.mean).filter(|v| v.is_finite()))
            .collect();
        let pick = if higher_is_better(m) {
            f64::max
        } else {
            f64::min
        };
        let Some(best) = means.iter().flatten().copied().reduce(pick) else {
            continue;
        };
        if means.iter().flatten().count() >= 2 {
            for (row, mean) in means.iter().enumerate() {
                if *mean == Some(best) {
                    table.best.insert((row, first_metric + k));
                }
            }
        }
    }
    let marked = if table.best.is_empty() {
        ""
    } else {
        " Bold (* in text): the best mean of each column."
    };
    table.caption = Some(format!(
        "Mean ± sample std over seeds.{marked} Runs: {}.",
        provenance.join("; ")
    ));
    table
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `run_id@attempt` shortened to 12 hex digits (and `@n` only for replicates).
pub fn short_key(key: &str) -> String {
    let (id, attempt) = key.split_once('@').unwrap_or((key, "1"));
    let short = &id[..12.min(id.len())];
    if attempt == "1" {
        short.to_string()
    } else {
        format!("{short}@{attempt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TextTable {
        let mut t = TextTable::new(&["run", "test_acc"]);
        t.push(vec!["mlp_wide".into(), "0.95 ± 0.01".into()]);
        t.caption = Some("Runs: ab12".into());
        t
    }

    #[test]
    fn latex_is_booktabs_and_escaped() {
        let tex = table().to_latex();
        assert!(
            tex.contains("\\toprule") && tex.contains("\\midrule") && tex.contains("\\bottomrule")
        );
        assert!(tex.contains("mlp\\_wide & 0.95 $\\pm$ 0.01 \\\\"));
        assert!(tex.contains("\\caption{Runs: ab12}"));
    }

    #[test]
    fn markdown_and_csv() {
        let t = table();
        assert!(t
            .to_markdown()
            .starts_with("| run | test_acc |\n|---|---|\n| mlp_wide | 0.95 ± 0.01 |"));
        let mut c = t.clone();
        c.push(vec!["a,b".into(), "say \"hi\"".into()]);
        assert!(c.to_csv().ends_with("\"a,b\",\"say \"\"hi\"\"\"\n"));
    }

    #[test]
    fn a_metric_no_run_logged_is_an_error_naming_the_ones_there_are() {
        let groups = crate::group::group_runs(&[crate::records::test_run("a", 1, None, 0.9)]);
        assert!(check_metrics(&groups, &["acc".into()]).is_ok());
        assert!(check_metrics(&groups, &[]).is_ok());
        let err = check_metrics(&groups, &["acc".into(), "val_acc".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no run selected has the metric \"val_acc\"; their metrics: acc"
        );
    }

    #[test]
    fn the_best_mean_of_each_column_is_marked_in_every_format() {
        let mut better = crate::records::test_run("b", 1, None, 0.95);
        better.group_id = "g2".into();
        better.name = "wide".into();
        let runs = [crate::records::test_run("a", 1, None, 0.9), better];
        let table = results_table(&crate::group::group_runs(&runs), &["acc".into()]);
        assert_eq!(table.best, BTreeSet::from([(1, 1)]));
        assert!(table.to_markdown().contains("| wide | **0.9500** | 1 |"));
        assert!(table.to_latex().contains("wide & \\textbf{0.9500} & 1"));
        assert!(table.to_terminal().contains("0.9500 *"));
        assert!(table
            .caption
            .unwrap()
            .contains("the best mean of each column"));
        // One row has nothing to be best against.
        let alone = results_table(&crate::group::group_runs(&runs[..1]), &["acc".into()]);
        assert!(alone.best.is_empty() && !alone.to_markdown().contains("**"));
    }

    #[test]
    fn mean_std_digits_follow_the_std() {
        let s = Stats {
            mean: 0.91234,
            std: 0.0123,
            stderr: 0.0,
            n: 3,
            runs: vec![],
        };
        assert_eq!(format_mean_std(&s), "0.912 ± 0.012");
        assert_eq!(format_number(1234.5678), "1235");
        assert_eq!(format_number(0.000123456), "0.0001235");
    }
}
