//! `recipe runs ...` as a user drives it from a shell: tables, JSON, CSV, exports, and
//! one-line errors with a non-zero exit on bad input.

use crate::{killed_toy, recipe, recipe_ok, toy};
use serde_json::Value;

fn sweep(dir: &std::path::Path) {
    for seed in ["1", "2", "3"] {
        for lr in ["0.1", "0.01"] {
            toy(
                &dir.join("runs"),
                &[
                    "--lr",
                    lr,
                    "--seed-init",
                    seed,
                    "--steps",
                    "60",
                    "--sweep",
                    "lr",
                ],
            );
        }
    }
}

#[test]
fn issue_2_list_show_diff_export_from_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    sweep(dir.path());

    let list = recipe_ok(dir.path(), &["runs", "list"]);
    assert_eq!(
        list.lines().filter(|l| l.contains("completed")).count(),
        6,
        "{list}"
    );

    let runs: Vec<Value> =
        serde_json::from_str(&recipe_ok(dir.path(), &["runs", "list", "--json"])).unwrap();
    assert_eq!(runs.len(), 6);
    assert!(runs
        .iter()
        .all(|r| r["identity"]["seeds"]["value"]["init"].is_u64()));

    let csv = recipe_ok(
        dir.path(),
        &["runs", "list", "--csv", "--where", "config.lr=0.01"],
    );
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("run_id,attempt,name,"));

    let best = recipe_ok(
        dir.path(),
        &[
            "runs",
            "list",
            "--json",
            "--sort",
            "-summary.test_acc",
            "--limit",
            "1",
        ],
    );
    let best: Vec<Value> = serde_json::from_str(&best).unwrap();
    let top = best[0]["summary"]["test_acc"].as_f64().unwrap();
    assert!(runs
        .iter()
        .all(|r| r["summary"]["test_acc"].as_f64().unwrap() <= top));

    let (a, b) = (
        runs[0]["run_id"].as_str().unwrap(),
        runs[1]["run_id"].as_str().unwrap(),
    );
    let show = recipe_ok(dir.path(), &["runs", "show", &a[..10]]);
    assert!(show.contains(a) && show.contains("train_loss"), "{show}");

    // runs 0 and 1 differ in lr only.
    let diff: Value =
        serde_json::from_str(&recipe_ok(dir.path(), &["runs", "diff", a, b, "--json"])).unwrap();
    assert_eq!(diff["changed_components"], serde_json::json!(["config"]));
    assert_eq!(diff["changes"][0]["key"], "lr");

    let md = recipe_ok(dir.path(), &["runs", "export", "--metric", "test_acc"]);
    assert!(md.contains("| run | lr | test_acc ↑ | N |"), "{md}");
    assert_eq!(md.matches(" ± ").count(), 2, "{md}");
    for run in &runs {
        assert!(
            md.contains(&run["run_id"].as_str().unwrap()[..12]),
            "every run id is in the caption"
        );
    }
    let tex = recipe_ok(dir.path(), &["runs", "export", "--format", "latex"]);
    assert!(tex.contains("\\toprule") && tex.contains("$\\pm$") && tex.contains("\\caption{"));
    let svg = recipe_ok(dir.path(), &["runs", "plot", a, b, "--metric", "test_acc"]);
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert!(
        svg.contains(&a[..12]) && svg.contains(&b[..12]),
        "the caption names the runs"
    );
    let missing = crate::recipe(dir.path(), &["runs", "plot", a, "--metric", "nope"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no metric \"nope\""));

    let csv = recipe_ok(dir.path(), &["runs", "export", "--format", "csv"]);
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(
        header,
        ["group_id", "name", "config", "metric", "mean", "std", "stderr", "n", "run_ids"]
    );
    assert_eq!(csv.lines().count(), 1 + 2 * 2);
}

#[test]
fn issue_2_bad_input_gets_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = recipe(dir.path(), &["runs", "list"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.starts_with("error: no archive at runs") && err.lines().count() == 1,
        "{err}"
    );

    sweep(dir.path());
    for (args, expect) in [
        (vec!["runs", "show", "ffffffffff"], "no run matches"),
        (
            vec!["runs", "list", "--where", "nonsense"],
            "is not a condition",
        ),
        (vec!["runs", "show", "toy@x"], "attempt number"),
    ] {
        let out = recipe(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            err.contains(expect) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // A reused name means its latest run.
    let runs: Vec<serde_json::Value> =
        serde_json::from_str(&recipe_ok(dir.path(), &["runs", "list", "--json"])).unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    let latest = recipe_ok(dir.path(), &["runs", "show", "toy", "--json"]);
    assert!(latest.contains(ids[5]), "the most recent run named toy");

    let usage = recipe(dir.path(), &["runs", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn issue_2_damaged_files_are_named_and_the_rest_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    sweep(dir.path());
    let runs_dir = dir.path().join("runs");
    // Truncate one metrics chunk (a torn copy) and drop a foreign file into runs/.
    let metrics_day = std::fs::read_dir(runs_dir.join("metrics"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let chunk = std::fs::read_dir(&metrics_day)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, &bytes[..bytes.len() / 3]).unwrap();
    let runs_day = std::fs::read_dir(runs_dir.join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(runs_day.join("notes.parquet"), b"not parquet at all").unwrap();

    let out = recipe(dir.path(), &["runs", "list"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stdout.lines().filter(|l| l.contains("completed")).count(),
        6
    );
    assert!(stderr.contains("notes.parquet is damaged"), "{stderr}");

    let run_id = chunk
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .split("-a")
        .next()
        .unwrap()
        .to_string();
    let show = recipe(dir.path(), &["runs", "show", &run_id]);
    assert!(show.status.success());
    assert!(String::from_utf8_lossy(&show.stderr)
        .contains(chunk.file_name().unwrap().to_str().unwrap()));
}

/// The metrics chunk files of one run (`RUN-a1-c...parquet` under `runs/metrics/DAY/`).
fn chunks_of(archive: &std::path::Path, run_id: &str) -> Vec<std::path::PathBuf> {
    let mut chunks = Vec::new();
    for day in std::fs::read_dir(archive.join("metrics")).unwrap() {
        for file in std::fs::read_dir(day.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name.starts_with(&format!("{run_id}-a")) && name.ends_with(".parquet") {
                chunks.push(path);
            }
        }
    }
    chunks
}

#[test]
fn issue_21_diff_names_a_damaged_metrics_file_and_never_says_identical() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("runs");
    // The same identity twice: attempt 2 is a replicate, so every metric really is identical.
    toy(&archive, &["--steps", "60"]);
    toy(&archive, &["--steps", "60"]);
    let runs: Vec<Value> =
        serde_json::from_str(&recipe_ok(dir.path(), &["runs", "list", "--json"])).unwrap();
    let id = runs[0]["run_id"].as_str().unwrap();
    let (a, b) = (format!("{}@1", &id[..12]), format!("{}@2", &id[..12]));
    assert!(recipe_ok(dir.path(), &["runs", "diff", &a, &b]).contains("identical"));

    // Every chunk of attempt 2 torn: its curves cannot be read at all.
    let torn: Vec<_> = chunks_of(&archive, id)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().contains("-a2-"))
        .collect();
    assert!(!torn.is_empty());
    for chunk in &torn {
        let bytes = std::fs::read(chunk).unwrap();
        std::fs::write(chunk, &bytes[..bytes.len() / 3]).unwrap();
    }
    for json in [false, true] {
        let mut args = vec!["runs", "diff", &a, &b];
        if json {
            args.push("--json");
        }
        let out = recipe(dir.path(), &args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}\n{stderr}");
        let error = stderr.lines().last().unwrap_or_default();
        assert!(
            error.starts_with("error: ")
                && error.contains(&b)
                && error.contains(torn[0].file_name().unwrap().to_str().unwrap()),
            "the error names the run and the file: {stderr}"
        );
        assert!(!stdout.contains("identical"), "{stdout}");
        if json {
            let diff: Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(diff["unread"][0]["run"], format!("{id}@2"), "{diff}");
        } else {
            assert!(stdout.contains("could not be read"), "{stdout}");
        }
    }
}

#[test]
fn issue_21_diff_with_an_interrupted_run_says_the_runs_cover_different_steps() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("runs");
    toy(&archive, &["--steps", "200"]);
    killed_toy(&archive, 30);
    let runs: Vec<Value> =
        serde_json::from_str(&recipe_ok(dir.path(), &["runs", "list", "--json"])).unwrap();
    assert_eq!(runs[1]["status"], "interrupted");
    let last = runs[1]["last_step"].as_i64().unwrap();
    let (a, b) = (
        runs[0]["run_id"].as_str().unwrap(),
        runs[1]["run_id"].as_str().unwrap(),
    );
    let text = recipe_ok(dir.path(), &["runs", "diff", a, b]);
    assert!(
        text.contains("the runs cover different steps")
            && text.contains("a: steps 0 to 199")
            && text.contains(&format!("b: steps 0 to {last} (interrupted)")),
        "{text}"
    );
    let diff: Value =
        serde_json::from_str(&recipe_ok(dir.path(), &["runs", "diff", a, b, "--json"])).unwrap();
    assert_eq!(diff["steps_a"], serde_json::json!([0, 199]));
    assert_eq!(diff["steps_b"], serde_json::json!([0, last]));
}

#[test]
fn issue_21_unknown_fields_bad_conditions_and_unlogged_metrics_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    sweep(dir.path());
    for (args, expect) in [
        (
            vec!["runs", "list", "--where", "config.lrr=0.1"],
            vec!["config.lrr", "known fields", "config.lr"],
        ),
        (
            vec!["runs", "list", "--where", "summary.nope!=1"],
            vec!["summary.nope", "summary.test_acc"],
        ),
        (
            vec!["runs", "list", "--sort", "-summary.test_accuracy"],
            vec!["summary.test_accuracy", "summary.test_acc"],
        ),
        (
            vec!["runs", "export", "--where", "colour=red"],
            vec!["colour", "status", "config.…"],
        ),
        (
            vec!["runs", "list", "--where", "config.lr>>3"],
            vec!["is not a condition", "\">3\""],
        ),
        (
            vec![
                "runs", "export", "--metric", "test_acc", "--metric", "val_acc",
            ],
            vec!["val_acc", "test_acc", "train_loss"],
        ),
    ] {
        let out = recipe(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ")
                && err.lines().count() == 1
                && expect.iter().all(|e| err.contains(e)),
            "{args:?}: {err}"
        );
    }
    // Fields the runs have, and columns that no run fills in, still just select.
    let none = recipe(dir.path(), &["runs", "list", "--where", "parent_run=x"]);
    assert!(none.status.success() && String::from_utf8_lossy(&none.stdout).contains("match"));
    let all = recipe_ok(
        dir.path(),
        &["runs", "list", "--csv", "--where", "config.lr!=5"],
    );
    assert_eq!(all.lines().count(), 7, "{all}");
}

#[test]
fn issue_21_verify_of_an_interrupted_run_compares_up_to_its_last_committed_step() {
    const CONFIG: &str =
        r#"{"steps": 4000, "eval_every": 1000, "model": {"kind": "mlp", "hidden": [8]}}"#;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("runs");
    let mut child = std::process::Command::new(crate::bin("recipe"))
        .args([
            "train", "--quiet", "--subset", "300/100", "--config", CONFIG,
        ])
        .arg("--archive")
        .arg(&archive)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once its first chunk of metrics is committed, long before its last step.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let has_chunk = || {
        std::fs::read_dir(archive.join("metrics"))
            .into_iter()
            .flatten()
            .flat_map(|day| std::fs::read_dir(day.unwrap().path()).unwrap())
            .any(|f| {
                f.unwrap()
                    .path()
                    .extension()
                    .is_some_and(|e| e == "parquet")
            })
    };
    while !has_chunk() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(std::time::Instant::now() < deadline, "no chunk committed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let runs: Vec<Value> =
        serde_json::from_str(&recipe_ok(dir.path(), &["runs", "list", "--json"])).unwrap();
    assert_eq!(runs[0]["status"], "interrupted");
    let last = runs[0]["last_step"].as_i64().unwrap();
    assert!(last < 199_999, "killed at step {last}");

    let id = &runs[0]["run_id"].as_str().unwrap()[..12];
    let out = recipe(dir.path(), &["runs", "verify", id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("reproduced bit for bit")
            && stdout.contains(&format!(
                "up to step {last}, its last committed step (interrupted)"
            )),
        "{stdout}"
    );
}
