//! Runs as people read them: the runs table, one run in full, a diff, curves of several runs.
//! `recipe runs` prints these; the runtime shows them in notebooks.

use crate::export::{format_number, TextTable};
use crate::{Error, MetricPoint, Result, RunRecord};
use serde_json::Value;

/// Whether replicates of the run reproduced it, for people.
pub fn reproducibility(run: &RunRecord) -> String {
    match (run.reproduced, run.diverged_step) {
        (Some(true), _) => "reproduced".into(),
        (Some(false), Some(step)) => format!("NONDETERMINISTIC from step {step}"),
        (Some(false), None) => "NONDETERMINISTIC".into(),
        (None, _) => String::new(),
    }
}

/// The runs as a table: for people (short ids, headline metrics), or every column for
/// scripts.
pub fn runs_table(runs: &[RunRecord], for_scripts: bool) -> TextTable {
    let metrics: Vec<String> = runs
        .iter()
        .flat_map(|r| r.summary.keys().map(|k| k.to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut headers = vec!["run", "name", "recipe_step", "status", "steps", "started"];
    if for_scripts {
        headers = vec![
            "run_id",
            "attempt",
            "name",
            "recipe_step",
            "sweep",
            "status",
            "last_step",
            "started_at",
            "ended_at",
            "group_id",
            "reproduced",
            "diverged_step",
        ];
    }
    let mut table = TextTable::new(&headers);
    if for_scripts {
        table
            .headers
            .extend(metrics.iter().map(|m| format!("summary.{m}")));
    } else {
        table.headers.push("summary".into());
        table.headers.push("reproducible".into());
    }
    for run in runs {
        let text = |o: &Option<String>| o.clone().unwrap_or_default();
        let row = if for_scripts {
            let mut row = vec![
                run.run_id.clone(),
                run.attempt.to_string(),
                run.name.clone(),
                text(&run.recipe_step),
                text(&run.sweep),
                run.status.to_string(),
                run.last_step.map(|s| s.to_string()).unwrap_or_default(),
                run.started_at.to_rfc3339(),
                run.ended_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                run.group_id.to_string(),
                run.reproduced.map(|b| b.to_string()).unwrap_or_default(),
                run.diverged_step.map(|s| s.to_string()).unwrap_or_default(),
            ];
            row.extend(metrics.iter().map(|m| {
                run.summary
                    .get(m.as_str())
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            }));
            row
        } else {
            let summary: Vec<String> = headline_metrics(run)
                .into_iter()
                .map(|(k, v)| format!("{k}={}", format_number(v)))
                .collect();
            vec![
                run.short(),
                run.name.clone(),
                text(&run.recipe_step),
                run.status.to_string(),
                run.last_step
                    .map(|s| (s + 1).to_string())
                    .unwrap_or_else(|| "0".into()),
                run.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                summary.join(" "),
                reproducibility(run),
            ]
        };
        table.push(row);
    }
    table
}

/// Up to four summary metrics worth a glance: test, then validation, then training
/// metrics; bookkeeping (timings, gradient norms) last.
pub fn headline_metrics(run: &RunRecord) -> Vec<(String, f64)> {
    let rank = |name: &str| {
        ["test_", "val_", "train_loss", "train_"]
            .iter()
            .position(|p| name.starts_with(p))
            .unwrap_or(4)
            + if ["grad_norm", "steps_per_second", "train_seconds"].contains(&name) {
                10
            } else {
                0
            }
    };
    let mut metrics: Vec<(String, f64)> = run
        .summary
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    metrics.sort_by_key(|(k, _)| (rank(k), k.clone()));
    metrics.truncate(4);
    metrics
}

/// One run, whole: identity, summary, checks and its curves in brief.
pub fn run_text(run: &RunRecord, points: &[crate::MetricPoint]) -> String {
    let mut out = format!("run {}  attempt {}\n", run.run_id, run.attempt);
    let line = |k: &str, v: String| format!("  {k:<14} {v}\n");
    out += &line("name", run.name.clone());
    for (k, v) in [
        ("recipe step", &run.recipe_step),
        ("parent", &run.parent_run),
        ("sweep", &run.sweep),
        ("error", &run.error),
    ] {
        if let Some(v) = v {
            out += &line(k, v.clone());
        }
    }
    out += &line("status", run.status.to_string());
    out += &line("started", run.started_at.to_rfc3339());
    if let Some(ended) = run.ended_at {
        out += &line(
            "ended",
            format!(
                "{} ({:.1} s)",
                ended.to_rfc3339(),
                (ended - run.started_at).num_milliseconds() as f64 / 1e3
            ),
        );
    }
    if !reproducibility(run).is_empty() {
        out += &line("reproducible", reproducibility(run));
    }
    out += "\nidentity\n";
    for (i, name) in crate::identity::COMPONENTS.iter().enumerate() {
        out += &format!(
            "  {name:<7} {}  {}\n",
            &run.component_hashes[i][..12],
            compact_json(&run.components[i])
        );
    }
    if !run.summary.is_empty() {
        out += "\nsummary\n";
        for (k, v) in &run.summary {
            out += &line(k, format_number(*v));
        }
    }
    if !run.checks.is_empty() {
        out += "\nchecks\n";
        for c in &run.checks {
            out += &format!(
                "  {} {:<24} measured {} expected {}{}\n",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.measured,
                c.expected,
                if c.note.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", c.note)
                }
            );
        }
    }
    let mut curves: std::collections::BTreeMap<&str, Vec<&crate::MetricPoint>> = Default::default();
    for p in points {
        curves.entry(&p.name).or_default().push(p);
    }
    if !curves.is_empty() {
        let mut table = TextTable::new(&["metric", "points", "first", "last", "min", "max"]);
        for (name, ps) in curves {
            let values = ps.iter().map(|p| p.value);
            let min = values.clone().fold(f64::INFINITY, f64::min);
            let max = values.fold(f64::NEG_INFINITY, f64::max);
            table.push(vec![
                name.to_string(),
                ps.len().to_string(),
                format!("{} @ {}", format_number(ps[0].value), ps[0].step),
                format!(
                    "{} @ {}",
                    format_number(ps[ps.len() - 1].value),
                    ps[ps.len() - 1].step
                ),
                format_number(min),
                format_number(max),
            ]);
        }
        out += "\ncurves\n";
        out += &table.to_terminal();
    }
    out
}

/// A JSON value on one line of at most 100 characters.
pub fn compact_json(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 100 {
        format!("{}…", text.chars().take(99).collect::<String>())
    } else {
        text
    }
}

/// What a change of the code component means, when its keys alone do not say it plainly:
/// only the cells before the training cell changed (where a notebook defines its net).
fn code_note(diff: &crate::diff::RunDiff) -> Option<&'static str> {
    let keys: Vec<&str> = (diff.changes.iter())
        .filter(|c| c.component == "code")
        .map(|c| c.key.as_str())
        .collect();
    (keys == ["history_hash"]).then_some(
        "code: the training cell is the same; a cell run before it changed (the model or \
         code it defined)",
    )
}

/// A diff for people, in parts that its text and its HTML both show: the two runs, what
/// changed in which identity component, the metrics side by side, and notes.
pub struct DiffView {
    /// `a = …` and `b = …`.
    pub runs: [String; 2],
    /// `identity: …` in one line.
    pub identity: String,
    /// What a change of the code component means, where its keys alone do not say it.
    pub code_note: Option<&'static str>,
    /// component, key, a, b; hashes in full (see [`is_hash`]): the text shortens them.
    pub changes: Option<TextTable>,
    pub metrics: Option<TextTable>,
    pub notes: Vec<String>,
}

/// Whether a table cell is a blake3 hash (a cell's, a diff's), shown by its first 12 digits.
pub fn is_hash(cell: &str) -> bool {
    cell.len() == 64 && cell.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The parts of the diff of two runs.
pub fn diff_view(diff: &crate::diff::RunDiff) -> DiffView {
    let short = crate::export::short_key;
    let identity = if diff.changed_components.is_empty() {
        "identity: the same in every component (a replicate)".to_string()
    } else {
        format!("identity: {} changed", diff.changed_components.join(", "))
    };
    let changes = (!diff.changed_components.is_empty()).then(|| {
        let mut table = TextTable::new(&["component", "key", "a", "b"]);
        let show = |v: &Option<Value>| match v {
            Some(Value::String(h)) if is_hash(h) => h.clone(),
            Some(v) => compact_json(v),
            None => "(absent)".into(),
        };
        for c in &diff.changes {
            table.push(vec![
                c.component.to_string(),
                c.key.clone(),
                show(&c.a),
                show(&c.b),
            ]);
        }
        table
    });
    let metrics = (!diff.metrics.is_empty()).then(|| {
        let mut table = TextTable::new(&[
            "metric",
            "final a",
            "final b",
            "Δ final",
            "best a",
            "best b",
            "common steps",
            "max |Δ|",
            "first diff",
        ]);
        let num = |v: Option<f64>| v.map(format_number).unwrap_or_else(|| "–".into());
        for m in &diff.metrics {
            let delta = match (m.final_a, m.final_b) {
                (Some(a), Some(b)) => {
                    let d = b - a;
                    format!("{}{}", if d >= 0.0 { "+" } else { "" }, format_number(d))
                }
                _ => "–".into(),
            };
            table.push(vec![
                m.name.clone(),
                num(m.final_a),
                num(m.final_b),
                delta,
                num(m.best_a),
                num(m.best_b),
                m.common_steps.to_string(),
                num(m.max_abs_delta),
                match (m.first_different_step, m.common_steps) {
                    (Some(s), _) => format!("step {s}"),
                    // Nothing compared is not a match.
                    (None, 0) => "–".into(),
                    (None, _) => "identical".into(),
                },
            ]);
        }
        table
    });
    DiffView {
        runs: [
            format!("a = {}", short(&diff.a)),
            format!("b = {}", short(&diff.b)),
        ],
        identity,
        code_note: code_note(diff),
        changes,
        metrics,
        notes: diff.caveats(),
    }
}

/// A diff for people: what changed in which identity component, and the metrics side by side.
pub fn diff_text(diff: &crate::diff::RunDiff) -> String {
    let view = diff_view(diff);
    let mut out = format!("{}\n{}\n\n{}\n", view.runs[0], view.runs[1], view.identity);
    if let Some(note) = view.code_note {
        out += &format!("{note}\n");
    }
    if let Some(mut table) = view.changes {
        // A hash differs or not: its first 12 digits say which.
        for cell in table.rows.iter_mut().flatten() {
            if is_hash(cell) {
                *cell = format!("{}…", &cell[..12]);
            }
        }
        out += &table.to_terminal();
    }
    if let Some(table) = view.metrics {
        out += "\nmetrics\n";
        out += &table.to_terminal();
    }
    if !view.notes.is_empty() {
        out += "\n";
        for note in view.notes {
            out += &format!("note: {note}\n");
        }
    }
    out
}

/// One metric of several runs as an SVG line plot, the run ids in its caption so every
/// curve is traceable. Fails naming a run that has no such metric.
pub fn curves_svg(runs: &[(&RunRecord, Vec<MetricPoint>)], metric: &str) -> Result<String> {
    let (series, caption) = curves_of(runs, metric)?;
    Ok(crate::plot::lines(&series, metric, "step", Some(&caption)))
}

/// One metric of several runs: a curve per run, named `name (short id)`, and the caption
/// that lists the run ids. Fails naming a run that has no such metric.
pub fn curves_of(
    runs: &[(&RunRecord, Vec<MetricPoint>)],
    metric: &str,
) -> Result<(Vec<(String, Vec<(f64, f64)>)>, String)> {
    let mut series = Vec::new();
    let mut ids = Vec::new();
    for (run, points) in runs {
        let points: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.name == metric)
            .map(|p| (p.step as f64, p.value))
            .collect();
        if points.is_empty() {
            return Err(Error::NotFound(format!(
                "run {} has no metric {metric:?}; `recipe runs show {}` lists its curves",
                run.short(),
                run.short()
            )));
        }
        series.push((format!("{} ({})", run.name, run.short()), points));
        ids.push(run.short());
    }
    Ok((series, format!("Runs: {}.", ids.join(", "))))
}
