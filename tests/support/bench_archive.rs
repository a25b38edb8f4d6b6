//! Benchmark: recipe's archive against MLflow's default local tracking store, side by side
//! in one invocation. Logs RUNS runs x STEPS steps x 3 metrics, then lists, filters and
//! diffs (recipe's side also reads one run's curves, its record in hand), and prints both times, the ratio and peak memory. Read phases run 11 times from a
//! fresh handle on both sides; medians are shown. The first listing after logging is timed
//! on its own: on recipe's side it is the one that writes the runs cache. Both stores live
//! in a temporary folder in the current folder (see [`scratch`]).
//!
//! Usage: bench-archive [--runs 1000] [--steps 1000] [--python PATH] [--skip-mlflow]
//!                      [--keep DIR] (write the archive there and keep it, for profiling)
//! The Python needs `mlflow` (scripts/bench-archive makes .venv-bench with it).

use anyhow::{bail, Context, Result};
use recipe_archive::diff::diff_runs;
use recipe_archive::query::Condition;
use recipe_archive::{Archive, CodeState, DataFingerprint, Environment, Identity, RunSpec, Status};
use recipe_tests::peak_rss_mib;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn main() -> Result<()> {
    let mut runs = 1000usize;
    let mut steps = 1000i64;
    let mut python = String::from(".venv-bench/bin/python");
    let mut skip_mlflow = false;
    let mut keep: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--steps" => steps = args.next().context("--steps N")?.parse()?,
            "--python" => python = args.next().context("--python PATH")?,
            "--skip-mlflow" => skip_mlflow = true,
            "--keep" => keep = Some(PathBuf::from(args.next().context("--keep DIR")?)),
            other => bail!("unknown flag {other}"),
        }
    }
    let dir = scratch()?;
    if let Some(keep) = &keep {
        // Runs logged again into an archive would be replicates, a different workload.
        if std::fs::read_dir(keep).is_ok_and(|mut entries| entries.next().is_some()) {
            bail!("--keep {}: the folder is not empty", keep.display());
        }
    }
    let archive = Archive::open(keep.unwrap_or_else(|| dir.path().join("runs")))?;
    let mut ours = BTreeMap::new();

    // 1. Log.
    let t0 = Instant::now();
    let env = Environment::capture();
    for r in 0..runs {
        let lr = [0.1, 0.01, 0.001][r % 3];
        let identity = Identity {
            config: json!({"lr": lr, "model": "mlp"}),
            seeds: [("init".to_string(), r as u64)].into(),
            data: DataFingerprint {
                name: "bench".into(),
                hash: "00".into(),
                details: Value::Null,
            },
            code: CodeState::outside_git(),
            env: env.clone(),
        };
        let mut run = archive.begin_run(RunSpec::new(format!("run-{r}"), identity))?;
        for step in 0..steps {
            let loss = 1.0 / (1.0 + step as f64 * lr) + (r % 7) as f64 * 1e-3;
            run.log_all(step, &[("loss", loss), ("acc", 1.0 - loss), ("lr", lr)])?;
        }
        run.finish(Status::Completed, None)?;
    }
    ours.insert("log", t0.elapsed().as_secs_f64());

    // 2-4. Read phases, each from a fresh handle (nothing cached in-process), repeated;
    // the median is reported because this machine is shared and noisy.
    let root = archive.root().to_path_buf();
    // The first read after logging decodes the runs table's new Parquet files and writes the
    // runs cache; the repeats below read the cache (each still from a fresh handle).
    let t0 = Instant::now();
    let first = Archive::open_existing(&root)?.runs()?.value;
    ours.insert("first list", t0.elapsed().as_secs_f64());
    assert_eq!(first.len(), runs);
    drop(first);
    let (list_s, listed) = median_of(REPEATS, || Ok(Archive::open_existing(&root)?.runs()?.value))?;
    ours.insert("list", list_s);
    assert_eq!(listed.len(), runs);
    let conditions = [
        Condition::parse("config.lr=0.01")?,
        Condition::parse("summary.loss<0.5")?,
    ];
    let (filter_s, found) = median_of(REPEATS, || {
        Ok(Archive::open_existing(&root)?
            .runs_where(&conditions)?
            .value)
    })?;
    ours.insert("filter", filter_s);
    let (diff_s, diff) = median_of(REPEATS, || {
        let fresh = Archive::open_existing(&root)?;
        let all = fresh.runs()?.value;
        let (a, b) = (&all[0], &all[1]);
        let points = fresh.metrics_of_runs(&[a, b])?.value;
        Ok(diff_runs(a, &points[0], b, &points[1]))
    })?;
    ours.insert("diff", diff_s);
    // One run's curves, its record in hand (as a notebook holds it): no listing of the runs.
    let one = listed[listed.len() / 2].clone();
    let (curves_s, curves) = median_of(REPEATS, || {
        Ok(Archive::open_existing(&root)?.metrics(&one)?.value)
    })?;
    ours.insert("curves", curves_s);
    assert_eq!(curves.len(), 3 * steps as usize);
    assert_eq!(diff.metrics.len(), 3);
    let our_rss = peak_rss_mib();
    let disk: u64 = walk_size(archive.root());
    // Gone before MLflow's side runs, minutes before a next invocation's recipe side: on a
    // file system without a journal, files created within a minute or more of many deletes
    // nearby cost more (see `scratch`).
    drop(archive);
    drop(dir);

    println!(
        "archive benchmark: {runs} runs x {steps} steps x 3 metrics ({} points)",
        runs as i64 * steps * 3
    );
    println!(
        "recipe: filter matched {}, archive on disk {:.1} MiB, peak RSS {our_rss:.0} MiB",
        found.len(),
        disk as f64 / 1048576.0
    );

    if skip_mlflow {
        for (phase, t) in &ours {
            println!("{phase:<10} recipe {t:>9.5} s");
        }
        return Ok(());
    }
    let mlflow_dir = scratch()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/mlflow_bench.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(mlflow_dir.path())
        .arg(runs.to_string())
        .arg(steps.to_string())
        .output()
        .with_context(|| format!("running {python} (make it with scripts/bench-archive)"))?;
    if !out.status.success() {
        bail!(
            "the MLflow side failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let theirs: Value = serde_json::from_slice(&out.stdout)?;
    println!(
        "MLflow {} ({}): filter matched {}, peak RSS {:.0} MiB",
        theirs["mlflow"].as_str().unwrap_or("?"),
        theirs["tracking_uri"].as_str().unwrap_or("?"),
        theirs["filter_matches"],
        theirs["peak_rss_mib"].as_f64().unwrap_or(0.0)
    );
    println!();
    println!("| phase | recipe (s) | MLflow (s) | MLflow / recipe |");
    println!("|---|---|---|---|");
    for phase in ["log", "first list", "list", "filter", "diff"] {
        let (us, them) = (
            ours[phase],
            theirs["timings"][phase].as_f64().unwrap_or(f64::NAN),
        );
        println!("| {phase} | {us:.5} | {them:.3} | {:.0}x |", them / us);
    }
    Ok(())
}

/// A folder for one side's store, removed at the end: in the current folder, where a user's
/// archive lives (`./runs`), for both sides. Not the system's temp folder: there other
/// programs create and delete files all day, and where a file system keeps no journal
/// (ext4 on the machines this was measured on) each file created after many deletes costs
/// up to 0.2 ms, which recipe (two files per run) pays and MLflow's SQLite store does not.
fn scratch() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(".bench-archive-")
        .tempdir_in(".")?)
}

/// How often each read phase runs; its median time is reported. Eleven, not five: on a shared
/// machine a median of five moved by half between invocations. Same on the MLflow side.
const REPEATS: usize = 11;

/// Median wall time of `repeats` calls, and the last call's result. The previous result is
/// freed after the clock stops (the MLflow side does the same).
fn median_of<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..repeats {
        let t0 = Instant::now();
        let value = f()?;
        times.push(t0.elapsed().as_secs_f64());
        last = Some(value);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], last.context("no repeats")?))
}

fn walk_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk_size(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
