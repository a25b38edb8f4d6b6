//! Writes never corrupt: a writer killed with SIGKILL loses no committed chunk and reads
//! back as interrupted; several processes appending at once lose no row; compaction running
//! beside writers and readers breaks neither.

use crate::{bin, killed_toy, recipe_ok};
use recipe_archive::{Archive, Status};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn issue_2_kill_9_loses_no_committed_chunk_and_reads_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("runs");
    let committed = killed_toy(&archive_dir, 60);

    let archive = Archive::open_existing(&archive_dir).unwrap();
    let runs = archive.runs().unwrap();
    assert!(runs.damaged.is_empty(), "{:?}", runs.damaged);
    let run = &runs.value[0];
    assert_eq!(run.status, Status::Interrupted);
    let last = run.last_step.unwrap();
    assert!(
        last >= committed,
        "last flushed step {last} < announced {committed}"
    );
    assert!(run
        .error
        .as_deref()
        .unwrap_or("")
        .contains("killed or crashed"));

    let points = archive.metrics(run).unwrap().value;
    let mut count: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for p in &points {
        *count.entry((p.name.clone(), p.step)).or_default() += 1;
    }
    for name in ["test_acc", "train_loss"] {
        for step in 0..=last {
            assert_eq!(
                count.get(&(name.to_string(), step)),
                Some(&1),
                "{name} at step {step}"
            );
        }
    }

    // The CLI agrees, and compaction finalises the row as interrupted for other engines.
    let listed = recipe_ok(dir.path(), &["runs", "list"]);
    assert!(listed.contains("interrupted"), "{listed}");
    recipe_ok(dir.path(), &["runs", "compact"]);
    let raw = Archive::open_existing(&archive_dir)
        .unwrap()
        .runs()
        .unwrap()
        .value;
    assert_eq!(
        (raw[0].status, raw[0].last_step),
        (Status::Interrupted, Some(last))
    );
    assert_eq!(archive.metrics(&raw[0]).unwrap().value.len(), points.len());
}

#[test]
fn issue_2_concurrent_writers_compaction_and_readers_lose_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("runs");
    const STEPS: i64 = 150;
    // Three processes share one identity (they must get attempts 1, 2, 3), three differ by seed.
    let seeds = ["1", "1", "1", "2", "3", "4"];
    let writers: Vec<_> = seeds
        .iter()
        .map(|seed| {
            Command::new(bin("toy-trainer"))
                .args([
                    "--steps",
                    &STEPS.to_string(),
                    "--commit-every",
                    "3",
                    "--sleep-ms",
                    "3",
                    "--seed-init",
                    seed,
                ])
                .arg("--archive")
                .arg(&archive_dir)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();

    // Meanwhile: compact over and over, and read after every compaction.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut compactions = 0;
    let mut writers = writers;
    while writers.iter_mut().any(|w| w.try_wait().unwrap().is_none()) {
        assert!(Instant::now() < deadline, "writers did not finish");
        if let Ok(archive) = Archive::open_existing(&archive_dir) {
            if let Ok(plan) = recipe_archive::compact::plan(&archive) {
                if recipe_archive::compact::execute(&archive, &plan).is_ok() {
                    compactions += 1;
                }
            }
            let runs = archive.runs().unwrap();
            assert!(runs.damaged.is_empty(), "{:?}", runs.damaged);
            for run in &runs.value {
                let points = archive.metrics(run).unwrap().value;
                let unique: std::collections::BTreeSet<_> =
                    points.iter().map(|p| (&p.name, p.step)).collect();
                assert_eq!(
                    unique.len(),
                    points.len(),
                    "a reader saw a point twice during compaction"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for mut w in writers {
        assert!(w.wait().unwrap().success());
    }
    assert!(compactions > 0);
    recipe_ok(dir.path(), &["runs", "compact"]);

    let archive = Archive::open_existing(&archive_dir).unwrap();
    let runs = archive.runs().unwrap().value;
    assert_eq!(runs.len(), 6);
    let mut attempts: Vec<u32> = runs
        .iter()
        .filter(|r| r.run_id == runs.iter().find(|x| x.attempt == 3).unwrap().run_id)
        .map(|r| r.attempt)
        .collect();
    attempts.sort();
    assert_eq!(attempts, vec![1, 2, 3]);
    for run in &runs {
        assert_eq!(run.status, Status::Completed);
        let points = archive.metrics(run).unwrap().value;
        assert_eq!(points.len(), 2 * STEPS as usize, "{}", run.key());
        let unique: std::collections::BTreeSet<_> =
            points.iter().map(|p| (&p.name, p.step)).collect();
        assert_eq!(unique.len(), points.len());
    }
    // The same identity trained three times by one deterministic program reproduces.
    let verdicts: Vec<_> = runs
        .iter()
        .map(|r| (r.attempt, r.reproduced, r.diverged_step))
        .collect();
    assert!(
        runs.iter()
            .filter(|r| r.attempt > 1)
            .all(|r| r.reproduced == Some(true)),
        "{verdicts:?}"
    );
}

/// Counts another engine sees in an archive, read by DuckDB straight from the Parquet globs:
/// metric rows, distinct (run, attempt, step, name), run rows, distinct (run, attempt).
fn duckdb_counts(archive: &std::path::Path) -> [u64; 4] {
    const SCRIPT: &str = r#"
import json, sys, duckdb
root = sys.argv[1]
con = duckdb.connect()
def one(sql):
    return con.execute(sql).fetchone()[0]
metrics = f"read_parquet('{root}/metrics/*/*.parquet')"
runs = f"read_parquet('{root}/runs/*/*.parquet')"
print(json.dumps([
    one(f"SELECT count(*) FROM {metrics}"),
    one(f"SELECT count(*) FROM (SELECT DISTINCT run_id, attempt, step, name FROM {metrics})"),
    one(f"SELECT count(*) FROM {runs}"),
    one(f"SELECT count(*) FROM (SELECT DISTINCT run_id, attempt FROM {runs})"),
]))
"#;
    let out = Command::new(crate::python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `recipe` in `dir` with `RECIPE_FAULT` set to `fault`.
fn recipe_with_fault(dir: &std::path::Path, fault: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin("recipe"))
        .args(args)
        .current_dir(dir)
        .env_remove("RECIPE_ARCHIVE")
        .env("RECIPE_FAULT", fault)
        .output()
        .unwrap()
}

#[test]
fn issue_21_a_compaction_killed_at_any_step_never_shows_duckdb_a_row_twice() {
    // The steps of a replacement (see archive/src/replace.rs): after the merged file is
    // committed under _pending, after the first source is deleted, after all are, and after
    // the merged file is renamed into place.
    for step in ["pending", "source", "sources", "renamed"] {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("runs");
        for seed in ["1", "2"] {
            crate::toy(
                &archive,
                &["--seed-init", seed, "--steps", "40", "--commit-every", "5"],
            );
        }
        let before = duckdb_counts(&archive);
        assert_eq!(before[0], before[1], "{step}: duplicates before compaction");
        assert_eq!(before[2], 2, "{step}");

        let out = recipe_with_fault(dir.path(), &format!("replace:{step}"), &["runs", "compact"]);
        assert!(
            !out.status.success(),
            "{step}: the compaction was not stopped at the step: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let crashed = duckdb_counts(&archive);
        assert_eq!(
            crashed[0], crashed[1],
            "{step}: DuckDB sees a metric row twice"
        );
        assert_eq!(
            crashed[2], crashed[3],
            "{step}: DuckDB sees a run row twice"
        );
        assert!(crashed[0] <= before[0], "{step}: {crashed:?} vs {before:?}");

        // The next open finishes the interrupted replacement: every row, once.
        recipe_ok(dir.path(), &["runs", "list"]);
        assert_eq!(
            duckdb_counts(&archive),
            before,
            "{step}: after the next open"
        );
        let pending = archive.join("_pending");
        let left: Vec<_> = std::fs::read_dir(&pending)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{step}: {left:?} left in _pending");

        // And a compaction after it merges the rest, losing and doubling nothing.
        recipe_ok(dir.path(), &["runs", "compact"]);
        assert_eq!(duckdb_counts(&archive), before, "{step}: after compaction");
        let listed: Vec<serde_json::Value> =
            serde_json::from_str(&recipe_ok(dir.path(), &["runs", "list", "--json"])).unwrap();
        assert_eq!(listed.len(), 2, "{step}");
    }
}

#[test]
fn issue_21_a_dead_runs_final_row_is_in_the_parquet_files_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("runs");
    let committed = killed_toy(&archive_dir, 30);

    // One run, so one row file: no merge of rows is due, yet compaction settles it.
    recipe_ok(dir.path(), &["runs", "compact"]);
    let ours: Vec<serde_json::Value> =
        serde_json::from_str(&recipe_ok(dir.path(), &["runs", "list", "--json"])).unwrap();
    assert_eq!(ours[0]["status"], "interrupted");
    const SCRIPT: &str = r#"
import json, sys, duckdb
rows = duckdb.connect().execute(
    f"SELECT status, last_step, summary, error FROM read_parquet('{sys.argv[1]}/runs/*/*.parquet')"
).fetchall()
print(json.dumps([[s, l, json.loads(m), e] for s, l, m, e in rows]))
"#;
    let out = Command::new(crate::python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(&archive_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.as_array().unwrap().len(), 1, "{theirs}");
    let row = &theirs[0];
    assert_eq!(row[0], "interrupted", "{theirs}");
    assert_eq!(row[1], ours[0]["last_step"], "{theirs}");
    assert!(row[1].as_i64().unwrap() >= committed, "{theirs}");
    assert_eq!(row[2], ours[0]["summary"], "{theirs}");
    assert!(row[2]["train_loss"].is_number(), "{theirs}");
    assert!(
        row[3].as_str().unwrap_or("").contains("killed or crashed"),
        "{theirs}"
    );
}

#[test]
fn issue_21_a_full_disk_names_the_file_and_the_run_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("runs");
    // Every metrics file is written to /dev/full, which refuses it as a full disk does.
    let out = Command::new(bin("toy-trainer"))
        .args(["--steps", "40", "--commit-every", "5"])
        .arg("--archive")
        .arg(&archive_dir)
        .env("RECIPE_FAULT", "full:metrics")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run did not fail: {stderr}");
    assert!(
        stderr.contains("metrics/day=") && stderr.contains("-c000001.parquet"),
        "the error names no file: {stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&recipe_ok(dir.path(), &["runs", "list", "--json"])).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "failed", "{:?}", listed[0]);
    let reason = listed[0]["error"].as_str().unwrap_or("");
    assert!(
        reason.contains("the disk was full") && reason.contains("-c000001.parquet"),
        "{reason}"
    );
}
