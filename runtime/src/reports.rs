//! The archive in a notebook: the runs, one run, a diff, curves of several runs, a results
//! table with mean ± std over seeds. Each is a value that shows as text in a terminal and as
//! HTML in Jupyter; the text is what `recipe runs` prints.

use recipe_archive::diff::{diff_runs, RunDiff};
use recipe_archive::export::{format_number, results_table, TextTable};
use recipe_archive::plot::{Labels, YScale};
use recipe_archive::{group, report, Archive, RunRecord};

use crate::show::{escape, html_table_with, Show};
use crate::Result;

/// A table as HTML, its best cells in bold and its caption under it.
fn table_html(table: &TextTable) -> String {
    let rows: Vec<Vec<String>> = (0..table.rows.len())
        .map(|r| table.marked_row(r, escape, |c| format!("<b>{c}</b>")))
        .collect();
    let cells = html_table_with(&table.headers, &rows, str::to_string);
    match &table.caption {
        Some(caption) => format!("{cells}<p><small>{}</small></p>", escape(caption)),
        None => cells,
    }
}

/// Runs as a table: short id, name, recipe step, status, steps, headline metrics. A list of
/// runs otherwise: it iterates, indexes and slices like a `Vec<RunRecord>`
/// (`runs.len()`, `runs[0]`, `for run in &runs`), and filters into another `Runs`.
#[derive(Clone, Debug, Default)]
pub struct Runs(pub Vec<RunRecord>);

impl Runs {
    /// Every run in `archive`, oldest first.
    pub fn of(archive: &Archive) -> Result<Runs> {
        Ok(Runs(archive.runs()?.warn_damaged()))
    }

    /// The archived runs of models trained in this session, in the order given
    /// (`Runs::of_trained([&a, &b])?`, or any iterator of `&Trained`). Fails on one that
    /// was not archived.
    pub fn of_trained<'a>(
        trained: impl IntoIterator<Item = &'a crate::train::Trained>,
    ) -> Result<Runs> {
        trained.into_iter().map(|t| t.record().cloned()).collect()
    }

    /// The runs whose name is `name` (every attempt and seed).
    pub fn named(&self, name: &str) -> Runs {
        self.filter(|r| r.name == name)
    }

    /// The runs of the recipe step `step` (`"overfit"`, `"regularize"`...).
    pub fn step(&self, step: &str) -> Runs {
        self.filter(|r| r.recipe_step.as_deref() == Some(step))
    }

    /// The runs for which `keep` is true.
    pub fn filter(&self, keep: impl Fn(&RunRecord) -> bool) -> Runs {
        self.0.iter().filter(|r| keep(r)).cloned().collect()
    }

    /// The latest run named `name`, or one whose id starts with it.
    pub fn find(&self, reference: &str) -> Result<RunRecord> {
        Ok(recipe_archive::archive::find_in(&self.0, reference)?.clone())
    }
}

impl std::ops::Deref for Runs {
    type Target = [RunRecord];
    fn deref(&self) -> &[RunRecord] {
        &self.0
    }
}

impl FromIterator<RunRecord> for Runs {
    fn from_iter<I: IntoIterator<Item = RunRecord>>(runs: I) -> Runs {
        Runs(runs.into_iter().collect())
    }
}

impl From<Vec<RunRecord>> for Runs {
    fn from(runs: Vec<RunRecord>) -> Runs {
        Runs(runs)
    }
}

impl<'a> IntoIterator for &'a Runs {
    type Item = &'a RunRecord;
    type IntoIter = std::slice::Iter<'a, RunRecord>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
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
    /// Tables, with each hash as its first 12 digits and the whole of it in a tooltip.
    fn html(&self) -> String {
        let view = report::diff_view(&self.0);
        let mut out = format!(
            "<div><p><code>{}</code><br><code>{}</code></p><p><b>{}</b></p>",
            escape(&view.runs[0]),
            escape(&view.runs[1]),
            escape(&view.identity)
        );
        if let Some(note) = view.code_note {
            out += &format!("<p>{}</p>", escape(note));
        }
        let cell = |c: &str| {
            if report::is_hash(c) {
                format!(r#"<code title="{c}">{}…</code>"#, &c[..12])
            } else {
                escape(c)
            }
        };
        for table in [view.changes, view.metrics].into_iter().flatten() {
            out += &html_table_with(&table.headers, &table.rows, cell);
        }
        for note in &view.notes {
            out += &format!("<p>note: {}</p>", escape(note));
        }
        out + "</div>"
    }
}

/// One metric of several runs: a plot whose legend names each run and whose caption lists
/// the run ids, on a log axis where the values span more than two decades
/// ([`Curves::log_y`] decides by hand); as text, each run's first, last and best value.
#[derive(Clone, Debug)]
pub struct Curves {
    pub metric: String,
    /// (`name (short id)`, [(step, value)]) per run.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    pub caption: String,
    pub y_scale: YScale,
}

/// The curves of `metric` for `runs`. Fails naming a run that has no such metric.
pub fn curves(archive: &Archive, runs: &[RunRecord], metric: &str) -> Result<Curves> {
    let chosen: Vec<&RunRecord> = runs.iter().collect();
    let points = archive.metrics_of_runs(&chosen)?.warn_damaged();
    let with_points: Vec<_> = chosen.into_iter().zip(points).collect();
    let (series, caption) = report::curves_of(&with_points, metric)?;
    Ok(Curves {
        metric: metric.into(),
        series,
        caption,
        y_scale: YScale::Auto,
    })
}

impl Curves {
    /// A log y axis (`true`) or a linear one (`false`), whatever the values span.
    pub fn log_y(mut self, log: bool) -> Curves {
        self.y_scale = if log { YScale::Log } else { YScale::Linear };
        self
    }
}

impl Show for Curves {
    fn text(&self) -> String {
        let higher = recipe_archive::diff::higher_is_better(&self.metric);
        let mut table = TextTable::new(&["run", "steps", "first", "last", "best", "best at"]);
        for (name, points) in &self.series {
            let finite = points.iter().filter(|p| p.1.is_finite());
            let best = finite
                .clone()
                .fold(None::<(f64, f64)>, |best, &(s, v)| match best {
                    Some((_, b)) if (v > b) != higher || v == b => best,
                    _ => Some((s, v)),
                });
            let value =
                |p: Option<&(f64, f64)>| p.map_or("–".to_string(), |p| format_number(p.1));
            table.push(vec![
                name.clone(),
                points.len().to_string(),
                value(points.first()),
                value(points.last()),
                value(best.as_ref()),
                best.map_or("–".to_string(), |b| b.0.to_string()),
            ]);
        }
        format!("{}\n{}{}\n", self.metric, table.to_terminal(), self.caption)
    }
    fn html(&self) -> String {
        recipe_archive::plot::plot(
            &self.series,
            &Labels {
                title: &self.metric,
                x: "step",
                caption: Some(&self.caption),
                y_scale: self.y_scale,
            },
        )
    }
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

/// The reproducibility checklist of a set of runs, from their archived identity: runs,
/// seeds, compute, hardware, software, data and splits, hyperparameters (ranges where they
/// vary), code and recipe checks; what differs between runs names the runs of each value,
/// and the caption lists every run id.
#[derive(Clone, Debug)]
pub struct Checklist(pub TextTable);

/// The checklist of `runs`. Fails on an empty list.
pub fn checklist(runs: &[RunRecord]) -> Result<Checklist> {
    Ok(Checklist(recipe_archive::checklist::checklist(runs)?))
}

impl Checklist {
    pub fn markdown(&self) -> String {
        self.0.to_markdown()
    }
    /// LaTeX with booktabs rules.
    pub fn latex(&self) -> String {
        self.0.to_latex()
    }
}

impl Show for Checklist {
    fn text(&self) -> String {
        self.0.to_terminal()
    }
    fn html(&self) -> String {
        table_html(&self.0)
    }
}

crate::show_in_jupyter!(Runs, RunReport, Diff, Results, Curves, Checklist);
