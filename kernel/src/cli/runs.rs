//! `recipe runs ...`: the archive from a shell. Tables for people, `--json` and `--csv` for
//! scripts. Damaged files are named on stderr and the rest of the archive is still shown.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use recipe_archive::archive::find_in;
use recipe_archive::diff::diff_runs;
use recipe_archive::export::{self, results_table, TextTable};
use recipe_archive::query::{self, sort_runs, Condition};
use recipe_archive::{compact, group, report, Archive, RunRecord};
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
    /// Re-run a run and compare every metric bit for bit: a zoo run from its archived config,
    /// a run of a net or loop defined in a notebook by replaying the notebook's cells.
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
                print!("{}", report::runs_table(&runs, true).to_csv());
            } else if runs.is_empty() {
                println!("no runs in {} match", root.display());
            } else {
                print!("{}", report::runs_table(&runs, false).to_terminal());
            }
        }
        RunsCommand::Show { run, json } => {
            let runs = archive.runs()?.warn_damaged();
            let run = find_in(&runs, &run)?;
            let points = archive.metrics(run)?.warn_damaged();
            if json {
                let mut value = run_json(run);
                value["metrics"] = json!(points
                    .iter()
                    .map(|p| json!({"step": p.step, "name": p.name, "value": p.value}))
                    .collect::<Vec<_>>());
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", report::run_text(run, &points));
            }
        }
        RunsCommand::Diff { a, b, json } => {
            let runs = archive.runs()?.warn_damaged();
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
            let points = archive.metrics_of_runs(&[ra, rb])?;
            let mut diff = diff_runs(ra, &points.value[0], rb, &points.value[1]);
            diff.note_unread(&points.damaged, ra, rb);
            if json {
                println!("{}", serde_json::to_string_pretty(&diff)?);
            } else {
                print!("{}", report::diff_text(&diff));
            }
            // The diff is shown, but a comparison with points missing is no success.
            if let Some(unread) = diff.unread.first() {
                bail!(
                    "the metrics of run {} could not be read: {} ({}); the metric deltas leave \
                     its points out",
                    export::short_key(&unread.run),
                    unread.file,
                    unread.reason
                );
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
            let groups = group::group_runs(&runs);
            if groups.is_empty() {
                bail!(
                    "none of the {} runs selected completed, and a results table holds completed \
                     runs only; `recipe runs list` shows their status",
                    runs.len()
                );
            }
            export::check_metrics(&groups, &metrics)?;
            let table = results_table(&groups, &metrics);
            let text = match format {
                Format::Markdown => table.to_markdown(),
                Format::Latex => table.to_latex(),
                Format::Csv => groups_csv(&groups),
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
            let runs = archive.runs()?.warn_damaged();
            let chosen = refs
                .iter()
                .map(|reference| find_in(&runs, reference))
                .collect::<Result<Vec<_>, _>>()?;
            let points = archive.metrics_of_runs(&chosen)?.warn_damaged();
            let curves: Vec<_> = chosen.into_iter().zip(points).collect();
            let svg = report::curves_svg(&curves, &metric)?;
            match output {
                Some(path) => std::fs::write(&path, svg)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{svg}"),
            }
        }
        RunsCommand::Verify { run } => {
            let runs = archive.runs()?.warn_damaged();
            let run = find_in(&runs, &run)?;
            // A run of code defined in a notebook replays the notebook; a zoo run re-runs.
            let verdict = if crate::replay::needs_replay(run) {
                crate::replay::verify_by_replay(&archive, run)?
            } else {
                recipe::verify::verify(&archive, run)?
            };
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

/// The runs a selection picks, with damaged files reported on stderr. A field that no run
/// of the archive has (`--where config.lrr=1`, `--sort summary.tset_acc`) is an error that
/// lists the known fields, not an empty or unsorted listing.
fn select(archive: &Archive, selection: &Selection) -> Result<Vec<RunRecord>> {
    let conditions = selection
        .conditions
        .iter()
        .map(|c| Condition::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut runs = archive.runs_where(&conditions)?.warn_damaged();
    let given_to: Vec<String> = (selection.conditions.iter())
        .map(|c| format!("--where {c}"))
        .chain(selection.sort.iter().map(|_| "--sort".to_string()))
        .collect();
    let fields = || {
        (conditions.iter().map(|c| c.field.as_str()))
            .chain(selection.sort.as_deref())
            .zip(given_to.iter().map(String::as_str))
    };
    // Only a field the selected runs lack can be unknown; then the whole archive decides.
    if query::unknown_field(fields(), &runs).is_some() {
        let all = if conditions.is_empty() {
            None
        } else {
            Some(archive.runs()?.value)
        };
        if let Some(error) = query::unknown_field(fields(), all.as_deref().unwrap_or(&runs)) {
            return Err(error.into());
        }
    }
    if let Some(key) = &selection.sort {
        sort_runs(&mut runs, key);
    }
    if let Some(limit) = selection.limit {
        runs.truncate(limit);
    }
    Ok(runs)
}

fn run_json(run: &RunRecord) -> Value {
    let components: serde_json::Map<String, Value> = recipe_archive::identity::COMPONENTS
        .iter()
        .zip(run.components.iter().zip(&run.component_hashes))
        .map(|(name, (value, hash))| (name.to_string(), json!({"hash": &**hash, "value": **value})))
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
        "group_id": &*run.group_id,
        "identity": components,
        "summary": run.summary.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
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
