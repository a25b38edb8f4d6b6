//! recipe's end-to-end tests: one binary, a small harness, one module per area. Tests are
//! named after the issue whose promise they hold (`issue_2_...`).
//!
//! They drive the real binaries (`recipe`, and the `toy-trainer` that writes real runs) as
//! separate processes, and read the archive back with pyarrow and DuckDB from the test
//! virtualenv that `scripts/test` makes.

mod archive_cli;
mod crash_and_concurrency;
mod images;
mod other_engines;
mod tables;
mod text;
mod trainer;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder holding the workspace's built binaries (target/<profile>).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// A built binary of the workspace; fails with what to run when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --release --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// Run `recipe` with arguments in `dir`; returns the output whatever the exit status.
pub fn recipe(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("recipe"))
        .args(args)
        .current_dir(dir)
        .env_remove("RECIPE_ARCHIVE")
        .output()
        .expect("run recipe")
}

/// Every metric point of `run` as (name, step, bits of the value): what bit-for-bit compares.
pub fn metric_bits(
    archive: &recipe_archive::Archive,
    run: &recipe_archive::RunRecord,
) -> Vec<(String, i64, u64)> {
    let points = archive.metrics(run).unwrap().value.into_iter();
    points
        .map(|p| (p.name, p.step, p.value.to_bits()))
        .collect()
}

/// Run `recipe` and insist on success; returns stdout.
pub fn recipe_ok(dir: &Path, args: &[&str]) -> String {
    let out = recipe(dir, args);
    assert!(
        out.status.success(),
        "recipe {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Train one toy run into `archive` to completion.
pub fn toy(archive: &Path, args: &[&str]) {
    let out = Command::new(bin("toy-trainer"))
        .arg("--archive")
        .arg(archive)
        .args(args)
        .output()
        .expect("run toy-trainer");
    assert!(
        out.status.success(),
        "toy-trainer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A long toy run killed with SIGKILL (no destructor, no flush, no finish) once it has
/// announced a committed step of at least `step`; returns the last step it announced.
pub fn killed_toy(archive: &Path, step: i64) -> i64 {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin("toy-trainer"))
        .args([
            "--steps",
            "100000",
            "--commit-every",
            "5",
            "--sleep-ms",
            "2",
        ])
        .arg("--archive")
        .arg(archive)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run toy-trainer");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut committed = -1i64;
    while committed < step {
        let line = lines.next().expect("toy-trainer ended early").unwrap();
        committed = line.strip_prefix("committed ").unwrap().parse().unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    committed
}

/// The Python of the test virtualenv (with pyarrow and DuckDB): `$RECIPE_PYTHON`, else
/// `.venv/bin/python` at the workspace root.
pub fn python() -> PathBuf {
    let path = std::env::var_os("RECIPE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: scripts/test makes the virtualenv with pyarrow and duckdb",
        path.display()
    );
    path
}
