//! The archive in a notebook: the runs, one run, a diff, curves of several runs, a results
//! table with mean ± std over seeds. Each is a value that shows as text in a terminal and as
//! HTML in Jupyter; the text is what `recipe runs` prints.

use recipe_archive::diff::{diff_runs, RunDiff};
use recipe_archive::export::{results_table, TextTable};
use recipe_archive::{group, report, Archive, RunRecord};

use crate::show::{escape, html_table, Html, Show};
use crate::Result;

fn table_html(table: &TextTable) -> String {
    html_table(&table.headers, &table.rows)
}

/// Runs as a table: short id, name, recipe step, status, steps, headline metrics.
#[derive(Clone, Debug)]
pub struct Runs(pub Vec<RunRecord>);

impl Runs {
    /// Every run in `archive`, oldest first.
    pub fn of(archive: &Archive) -> Result<Runs> {
        Ok(Runs(archive.runs()?.warn_damaged()))
    }

    /// The runs whose name is `name` (every attempt and seed).
    pub fn named(&self, name: &str) -> Vec<RunRecord> {
        self.0.iter().filter(|r| r.name == name).cloned().collect()
    }

    /// The latest run named `name`, or one whose id starts with it.
    pub fn find(&self, reference: &str) -> Result<RunRecord> {
        Ok(recipe_archive::archive::find_in(&self.0, reference)?.clone())
    }
}

impl Show for Runs {
    fn text(&self) -> String {
        report::runs_table(&self.0, false).to_terminal()
    }
    fn html(&self) -> String {
        table_html(&report::runs_table(&self.0, false))
    }
}

/// One run in full: identity, summary, checks, curves in brief.
#[derive(Clone, Debug)]
pub struct RunReport(pub String);

/// The report of `run`.
pub fn run_report(archive: &Archive, run: &RunRecord) -> Result<RunReport> {
    Ok(RunReport(report::run_text(
        run,
        &archive.metrics(run)?.warn_damaged(),
    )))
}

impl Show for RunReport {
    fn text(&self) -> String {
        self.0.clone()
    }
}

/// What differs between two runs: identity components, config keys, metrics.
#[derive(Clone, Debug)]
pub struct Diff(pub RunDiff);

/// Compare run `a` with run `b`.
pub fn diff(archive: &Archive, a: &RunRecord, b: &RunRecord) -> Result<Diff> {
    let points = archive.metrics_of_runs(&[a, b])?;
    let mut diff = diff_runs(a, &points.value[0], b, &points.value[1]);
    diff.note_unread(&points.damaged, a, b);
    Ok(Diff(diff))
}

impl Show for Diff {
    fn text(&self) -> String {
        report::diff_text(&self.0)
    }
    fn html(&self) -> String {
        format!("<pre>{}</pre>", escape(&self.text()))
    }
}

/// One metric of several runs as an SVG plot whose caption names every run id.
pub fn curves(archive: &Archive, runs: &[RunRecord], metric: &str) -> Result<Html> {
    let chosen: Vec<&RunRecord> = runs.iter().collect();
    let points = archive.metrics_of_runs(&chosen)?.warn_damaged();
    let with_points: Vec<_> = chosen.into_iter().zip(points).collect();
    Ok(Html(report::curves_svg(&with_points, metric)?))
}

/// Completed runs grouped by identity minus seeds: mean ± std (N) of each metric, with the
/// run ids behind every number.
#[derive(Clone, Debug)]
pub struct Results(pub TextTable);

/// The results table of `runs` for `metrics`.
pub fn results(runs: &[RunRecord], metrics: &[&str]) -> Results {
    let metrics: Vec<String> = metrics.iter().map(|m| m.to_string()).collect();
    Results(results_table(&group::group_runs(runs), &metrics))
}

impl Results {
    pub fn markdown(&self) -> String {
        self.0.to_markdown()
    }
    /// LaTeX with booktabs rules.
    pub fn latex(&self) -> String {
        self.0.to_latex()
    }
}

impl Show for Results {
    fn text(&self) -> String {
        self.0.to_terminal()
    }
    fn html(&self) -> String {
        table_html(&self.0)
    }
}

crate::show_in_jupyter!(Runs, RunReport, Diff, Results);
