//! `recipe runs ...`: the archive from a shell. Tables for people, `--json` and `--csv` for
//! scripts. Damaged files are named on stderr and the rest of the archive is still shown.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use recipe_archive::archive::find_in;
use recipe_archive::diff::diff_runs;
use recipe_archive::export::{format_number, results_table, TextTable};
use recipe_archive::query::{filter_runs, sort_runs, Condition};
use recipe_archive::{compact, group, Archive, Loaded, RunRecord};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// The archive folder [default: $RECIPE_ARCHIVE, else ./runs]
    #[arg(long, global = true)]
    archive: Option<PathBuf>,
    #[command(subcommand)]
    command: RunsCommand,
}

#[derive(Args, Debug, Clone, Default)]
struct Selection {
    /// Keep runs matching FIELD=VALUE (also != < <= > >=); repeatable. Fields: name, status,
    /// recipe_step, sweep, group_id, config.KEY, seeds.KEY, env.KEY, summary.METRIC...
    #[arg(long = "where", short = 'w', value_name = "COND")]
    conditions: Vec<String>,
    /// Sort by a field (prefix with - for descending), e.g. -summary.test_acc
    #[arg(long, value_name = "FIELD", allow_hyphen_values = true)]
    sort: Option<String>,
    /// Show at most N runs (after sorting)
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum RunsCommand {
    /// List runs, oldest first.
    List {
        #[command(flatten)]
        selection: Selection,
        /// One JSON object per run, as an array
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// CSV with one column per field and per summary metric
        #[arg(long)]
        csv: bool,
    },
    /// Everything archived about one run: identity, summary, checks, curves.
    Show {
        /// Run id prefix, run_id@attempt, or a unique run name
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// What changed between two runs (or a run and its parent): identity components, config
    /// keys, metric deltas.
    Diff {
        a: String,
        /// The other run [default: A's parent]
        b: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A results table: runs grouped over seeds, mean ± std, with the run ids of every number.
    Export {
        #[command(flatten)]
        selection: Selection,
        /// Metrics to report [default: all]
        #[arg(long = "metric", short = 'm')]
        metrics: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Markdown)]
        format: Format,
        /// Write to a file instead of stdout
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// One metric of several runs as an SVG plot, the run ids in its caption.
    Plot {
        /// Runs to overlay (run id prefixes or names)
        #[arg(required = true)]
        runs: Vec<String>,
        #[arg(long, short = 'm', default_value = "train_loss")]
        metric: String,
        /// Write to a file instead of stdout
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Re-run a run of the built-in trainer and compare every metric bit for bit.
    Verify { run: String },
    /// Merge small files; finalise runs whose writer died as interrupted.
    Compact {
        /// Print the plan without doing it
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Markdown,
    Latex,
    Csv,
}

pub fn run(args: RunsArgs) -> Result<()> {
    let root = args.archive.unwrap_or_else(Archive::default_root);
    let archive = Archive::open_existing(&root)?;
    match args.command {
        RunsCommand::List {
            selection,
            json,
            csv,
        } => {
            let runs = select(&archive, &selection)?;
            if json {
                let all: Vec<Value> = runs.iter().map(run_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if csv {
                print!("{}", list_table(&runs, true).to_csv());
            } else if runs.is_empty() {
                println!("no runs in {} match", root.display());
            } else {
                print!("{}", list_table(&runs, false).to_terminal());
            }
        }
        RunsCommand::Show { run, json } => {
            let runs = load(archive.runs())?;
            let run = find_in(&runs, &run)?;
            let points = load(archive.metrics(run))?;
            if json {
                let mut value = run_json(run);
                value["metrics"] = json!(points
                    .iter()
                    .map(|p| json!({"step": p.step, "name": p.name, "value": p.value}))
                    .collect::<Vec<_>>());
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", show_text(run, &points));
            }
        }
        RunsCommand::Diff { a, b, json } => {
            let runs = load(archive.runs())?;
            let (ra, rb) = match b {
                Some(b) => (find_in(&runs, &a)?, find_in(&runs, &b)?),
                None => {
                    let child = find_in(&runs, &a)?;
                    let parent = child.parent_run.as_deref().with_context(|| {
                        format!(
                            "run {} has no parent; name the run to compare with",
                            child.short()
                        )
                    })?;
                    (find_in(&runs, parent)?, child)
                }
            };
            let diff = diff_runs(
                ra,
                &load(archive.metrics(ra))?,
                rb,
                &load(archive.metrics(rb))?,
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&diff)?);
            } else {
                print!("{}", diff_text(&diff));
            }
        }
        RunsCommand::Export {
            selection,
            metrics,
            format,
            output,
        } => {
            let runs = select(&archive, &selection)?;
            if runs.is_empty() {
                bail!("no runs match; `recipe runs list` shows what the archive holds");
            }
            let table = results_table(&group::group_runs(&runs), &metrics);
            let text = match format {
                Format::Markdown => table.to_markdown(),
                Format::Latex => table.to_latex(),
                Format::Csv => groups_csv(&group::group_runs(&runs)),
            };
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
        }
        RunsCommand::Plot {
            runs: refs,
            metric,
            output,
        } => {
            let runs = load(archive.runs())?;
            let mut series = Vec::new();
            let mut ids = Vec::new();
            for reference in &refs {
                let run = find_in(&runs, reference)?;
                let points: Vec<(f64, f64)> = load(archive.metrics(run))?
                    .into_iter()
                    .filter(|p| p.name == metric)
                    .map(|p| (p.step as f64, p.value))
                    .collect();
                if points.is_empty() {
                    bail!(
                        "run {} has no metric {metric:?}; `recipe runs show {}` lists its curves",
                        run.short(),
                        run.short()
                    );
                }
                series.push((format!("{} ({})", run.name, run.short()), points));
                ids.push(run.short());
            }
            let svg = recipe_archive::plot::lines(
                &series,
                &metric,
                "step",
                Some(&format!("Runs: {}.", ids.join(", "))),
            );
            match output {
                Some(path) => std::fs::write(&path, svg)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{svg}"),
            }
        }
        RunsCommand::Verify { run } => {
            let runs = load(archive.runs())?;
            let run = find_in(&runs, &run)?;
            let verdict = recipe::verify::verify(&archive, run)?;
            print!("{}", recipe::show::Show::text(&verdict));
            if !verdict.reproduced {
                bail!("run {} did not reproduce", run.short());
            }
        }
        RunsCommand::Compact { dry_run } => {
            let plan = compact::plan(&archive)?;
            if dry_run || plan.is_empty() {
                println!(
                    "{} action(s) planned{}",
                    plan.len(),
                    if dry_run { " (dry run)" } else { "" }
                );
                for action in &plan {
                    println!("  {action:?}");
                }
            } else {
                let report = compact::execute(&archive, &plan)?;
                println!(
                    "compacted {}: {} files -> {} ({} merges, {} stale temp files removed)",
                    root.display(),
                    report.files_before,
                    report.files_after,
                    report.merges,
                    report.temps_removed
                );
            }
        }
    }
    Ok(())
}

/// The value of a read, with damaged files reported on stderr.
fn load<T>(loaded: recipe_archive::Result<Loaded<T>>) -> Result<T> {
    let loaded = loaded?;
    for damaged in &loaded.damaged {
        eprintln!("warning: {damaged}");
    }
    Ok(loaded.value)
}

fn select(archive: &Archive, selection: &Selection) -> Result<Vec<RunRecord>> {
    let conditions = selection
        .conditions
        .iter()
        .map(|c| Condition::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut runs = filter_runs(load(archive.runs())?, &conditions);
    if let Some(key) = &selection.sort {
        sort_runs(&mut runs, key);
    }
    if let Some(limit) = selection.limit {
        runs.truncate(limit);
    }
    Ok(runs)
}

fn reproducibility(run: &RunRecord) -> String {
    match (run.reproduced, run.diverged_step) {
        (Some(true), _) => "reproduced".into(),
        (Some(false), Some(step)) => format!("NONDETERMINISTIC from step {step}"),
        (Some(false), None) => "NONDETERMINISTIC".into(),
        (None, _) => String::new(),
    }
}

fn list_table(runs: &[RunRecord], for_scripts: bool) -> TextTable {
    let metrics: Vec<String> = runs
        .iter()
        .flat_map(|r| r.summary.keys().cloned())
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
                run.group_id.clone(),
                run.reproduced.map(|b| b.to_string()).unwrap_or_default(),
                run.diverged_step.map(|s| s.to_string()).unwrap_or_default(),
            ];
            row.extend(metrics.iter().map(|m| {
                run.summary
                    .get(m)
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
fn headline_metrics(run: &RunRecord) -> Vec<(String, f64)> {
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
    let mut metrics: Vec<(String, f64)> =
        run.summary.iter().map(|(k, v)| (k.clone(), *v)).collect();
    metrics.sort_by_key(|(k, _)| (rank(k), k.clone()));
    metrics.truncate(4);
    metrics
}

fn run_json(run: &RunRecord) -> Value {
    let components: serde_json::Map<String, Value> = recipe_archive::identity::COMPONENTS
        .iter()
        .zip(run.components.iter().zip(&run.component_hashes))
        .map(|(name, (value, hash))| (name.to_string(), json!({"hash": hash, "value": value})))
        .collect();
    json!({
        "run_id": run.run_id,
        "attempt": run.attempt,
        "name": run.name,
        "recipe_step": run.recipe_step,
        "parent_run": run.parent_run,
        "sweep": run.sweep,
        "status": run.status.as_str(),
        "started_at": run.started_at.to_rfc3339(),
        "ended_at": run.ended_at.map(|t| t.to_rfc3339()),
        "last_step": run.last_step,
        "group_id": run.group_id,
        "identity": components,
        "summary": run.summary.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "checks": run.checks,
        "artifacts": run.artifacts,
        "error": run.error,
        "reproduced": run.reproduced,
        "diverged_step": run.diverged_step,
        "session_id": run.session_id,
        "cell_execution": run.cell_execution,
        "cell_history_hash": run.cell_history_hash,
    })
}

fn show_text(run: &RunRecord, points: &[recipe_archive::MetricPoint]) -> String {
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
    for (i, name) in recipe_archive::identity::COMPONENTS.iter().enumerate() {
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
    let mut curves: std::collections::BTreeMap<&str, Vec<&recipe_archive::MetricPoint>> =
        Default::default();
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

fn compact_json(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 100 {
        format!("{}…", text.chars().take(99).collect::<String>())
    } else {
        text
    }
}

fn diff_text(diff: &recipe_archive::diff::RunDiff) -> String {
    let short = recipe_archive::export::short_key;
    let mut out = format!("a = {}\nb = {}\n\n", short(&diff.a), short(&diff.b));
    if diff.changed_components.is_empty() {
        out += "identity: the same in every component (a replicate)\n";
    } else {
        out += &format!("identity: {} changed\n", diff.changed_components.join(", "));
        let mut table = TextTable::new(&["component", "key", "a", "b"]);
        let show = |v: &Option<Value>| {
            v.as_ref()
                .map(compact_json)
                .unwrap_or_else(|| "(absent)".into())
        };
        for c in &diff.changes {
            table.push(vec![
                c.component.to_string(),
                c.key.clone(),
                show(&c.a),
                show(&c.b),
            ]);
        }
        out += &table.to_terminal();
    }
    if !diff.metrics.is_empty() {
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
                m.first_different_step
                    .map(|s| format!("step {s}"))
                    .unwrap_or_else(|| "identical".into()),
            ]);
        }
        out += "\nmetrics\n";
        out += &table.to_terminal();
    }
    out
}

fn groups_csv(groups: &[group::Group]) -> String {
    let mut table = TextTable::new(&[
        "group_id", "name", "config", "metric", "mean", "std", "stderr", "n", "run_ids",
    ]);
    for g in groups {
        for (metric, s) in &g.metrics {
            table.push(vec![
                g.group_id.clone(),
                g.name.clone(),
                g.config.to_string(),
                metric.clone(),
                s.mean.to_string(),
                s.std.to_string(),
                s.stderr.to_string(),
                s.n.to_string(),
                s.runs.join(" "),
            ]);
        }
    }
    table.to_csv()
}
