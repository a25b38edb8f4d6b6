//! Benchmark: loading a table, the runtime against pandas `read_csv` and pyarrow's
//! `csv.read_csv`, side by side in one invocation. The file: 1,000,000 rows x 20 columns, 19
//! of numbers (decimals of a few digits, as a sensor or a spreadsheet writes them) and a
//! string target of 5 classes, written once per invocation from a seeded generator.
//!
//! Each side runs in its own process (so each peak memory is its own) and loads the file 3
//! times; printed: the median seconds, the ratio to the runtime's (above 1: the runtime is
//! faster), and peak memory. The runtime runs twice: with every CPU thread (it decodes the
//! CSV in one piece per thread, as pyarrow does) and with one (as pandas reads). The runtime's load is the whole of `Dataset::table(path).load()`:
//! CSV to arrow, target, classes, splits and the row-major f32 features a model takes;
//! pandas' and pyarrow's stop at their DataFrame and Table.
//!
//! Usage: bench-table [--python PATH] [--rows N] [--keep DIR]
//! (`--keep DIR` writes the CSV there and leaves it, for profiling one side:
//! `bench-table --child recipe DIR/table.csv`.)

use anyhow::{bail, Context, Result};
use recipe::Dataset;
use recipe_tests::{peak_rss_mib, run_json, SplitMix};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const CLASSES: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];
const FEATURES: usize = 19;
const REPEATS: usize = 3;

/// A header and `rows` rows: `f0..f18` then `label`.
fn write_csv(path: &Path, rows: usize) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let header: Vec<String> = (0..FEATURES).map(|j| format!("f{j}")).collect();
    writeln!(out, "{},label", header.join(","))?;
    let mut rng = SplitMix(27);
    for _ in 0..rows {
        for j in 0..FEATURES {
            // Columns of different scales and precisions: -1.234567, 12.3456, 1234.5...
            let v = rng.normal() * 10f64.powi(j as i32 % 4);
            write!(out, "{v:.*},", 6 - (j % 4))?;
        }
        writeln!(out, "{}", CLASSES[rng.below(CLASSES.len())])?;
    }
    out.flush()?;
    Ok(())
}

/// The runtime's side: load `path` REPEATS times; one JSON object on stdout.
fn child(path: &str) -> Result<()> {
    let mut seconds = Vec::new();
    let mut shape = (0, 0);
    for _ in 0..REPEATS {
        let t = Instant::now();
        let d = Dataset::table(path).load()?;
        seconds.push(t.elapsed().as_secs_f64());
        shape = (d.len(), d.dim());
    }
    let out = json!({
        "seconds": seconds,
        "rows": shape.0,
        "features": shape.1,
        "peak_rss_mib": peak_rss_mib(),
    });
    println!("{out}");
    Ok(())
}

fn median(side: &Value) -> f64 {
    let mut s: Vec<f64> = side["seconds"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let mut python = String::from(".venv/bin/python");
    let mut rows = 1_000_000usize;
    let mut keep: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--child" => {
                let side = args.next().context("--child recipe PATH")?;
                let path = args.next().context("--child recipe PATH")?;
                if side != "recipe" {
                    bail!("--child takes `recipe`; pandas and pyarrow run in Python");
                }
                return child(&path);
            }
            "--python" => python = args.next().context("--python PATH")?,
            "--rows" => rows = args.next().context("--rows N")?.parse()?,
            "--keep" => keep = Some(args.next().context("--keep DIR")?.into()),
            other => bail!("unknown flag {other}"),
        }
    }
    let temp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| temp.path().to_path_buf());
    let path = dir.join("table.csv");
    let t = Instant::now();
    write_csv(&path, rows)?;
    let bytes = std::fs::metadata(&path)?.len();
    eprintln!(
        "wrote {} ({rows} rows x {} columns, {:.0} MB) in {:.1} s",
        path.display(),
        FEATURES + 1,
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let csv = path.to_string_lossy().into_owned();
    let me = std::env::current_exe()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let recipe = |threads: usize| {
        let mut child = Command::new(&me);
        child.args(["--child", "recipe", &csv]);
        run_json(child.env("RAYON_NUM_THREADS", threads.to_string()))
    };
    let ours = recipe(threads)?;
    let one_thread = recipe(1)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/table_bench.py");
    let pandas = run_json(Command::new(&python).args([script, "pandas", &csv]))?;
    let pyarrow = run_json(Command::new(&python).args([script, "pyarrow", &csv]))?;
    for side in [&ours, &pandas, &pyarrow] {
        if side["rows"] != json!(rows) {
            bail!("a side read {side}, not {rows} rows");
        }
    }
    if ours["features"] != json!(FEATURES) {
        bail!("the runtime loaded {ours}, not {FEATURES} features");
    }
    let base = median(&ours);
    let version = |side: &Value| side["version"].as_str().unwrap_or("?").to_string();
    println!("| loader | median of {REPEATS} (s) | its time / recipe's | peak memory (MiB) |");
    println!("|---|---|---|---|");
    for (name, side) in [
        (
            format!("recipe Dataset::table(..).load(), {threads} threads"),
            &ours,
        ),
        (
            "recipe Dataset::table(..).load(), 1 thread".to_string(),
            &one_thread,
        ),
        (format!("pandas {} read_csv", version(&pandas)), &pandas),
        (
            format!("pyarrow {} csv.read_csv", version(&pyarrow)),
            &pyarrow,
        ),
    ] {
        println!(
            "| {name} | {:.3} | {:.2}x | {:.0} |",
            median(side),
            median(side) / base,
            side["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "\n{rows} rows x {} columns, {:.0} MB of CSV; {threads} CPU threads",
        FEATURES + 1,
        bytes as f64 / 1e6,
    );
    Ok(())
}
