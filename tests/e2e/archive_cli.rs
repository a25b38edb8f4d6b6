//! `recipe runs ...` as a user drives it from a shell: tables, JSON, CSV, exports, and
//! one-line errors with a non-zero exit on bad input.

use crate::{recipe, recipe_ok, toy};
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
