//! The trainer from a shell: runs reproduce bit for bit across processes and thread counts,
//! a different seed is a different run of the same config, and `recipe runs verify`
//! re-runs an archived run and finds every metric identical. Nothing fails silently: a
//! config that cannot be right is refused before any run is archived, a diverging run ends
//! `diverged`, a failing one `failed` with its reason, and each exits non-zero.

use crate::{bin, metric_bits as bits, recipe_ok};
use recipe_archive::{Archive, Status};
use std::path::Path;
use std::process::Command;

const CONFIG: &str = r#"{"steps": 150, "eval_every": 50, "lr": 0.001, "model": {"kind": "mlp", "hidden": [32]}, "dropout": 0.1}"#;

fn train(dir: &Path, seed: &str, threads: &str) {
    let out = Command::new(bin("recipe"))
        .args([
            "train",
            "--quiet",
            "--name",
            "mlp",
            "--config",
            CONFIG,
            "--seed",
            seed,
            "--archive",
            "runs",
        ])
        .current_dir(dir)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn issue_3_same_config_same_run_id_and_bits_across_processes_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    train(dir.path(), "1", "2");
    train(dir.path(), "1", "2");
    train(dir.path(), "1", "1");
    train(dir.path(), "2", "2");
    let archive = Archive::open_existing(dir.path().join("runs")).unwrap();
    let runs = archive.runs().unwrap().value;
    assert_eq!(runs.len(), 4);
    let (a, b, one_thread, other_seed) = (&runs[0], &runs[1], &runs[2], &runs[3]);

    // Two processes, same everything: one identity, the second a replicate that reproduced.
    assert_eq!(
        (a.run_id.as_str(), b.attempt, b.reproduced),
        (b.run_id.as_str(), 2, Some(true))
    );
    assert_eq!(bits(&archive, a), bits(&archive, b));
    // One thread instead of two: the environment differs, the metrics do not.
    assert_ne!(one_thread.run_id, a.run_id);
    assert_eq!(one_thread.component_hashes[..4], a.component_hashes[..4]);
    assert_eq!(bits(&archive, one_thread), bits(&archive, a));
    // Another seed: another run of the same config.
    assert_ne!(other_seed.run_id, a.run_id);
    assert_eq!(other_seed.component_hashes[0], a.component_hashes[0]);
    assert_ne!(bits(&archive, other_seed), bits(&archive, a));
    assert!(runs
        .iter()
        .all(|r| r.status == Status::Completed && r.artifacts.contains_key("weights")));

    let verified = recipe_ok(dir.path(), &["runs", "verify", &a.run_id[..12]]);
    assert!(verified.contains("reproduced bit for bit"), "{verified}");
}

#[test]
fn issue_3_bad_training_input_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    for (args, expect) in [
        (vec!["train", "--data", "missing.csv"], "missing.csv"),
        (
            vec!["train", "--config", "{\"steps\": \"many\"}"],
            "--config: not a TrainConfig",
        ),
        (
            vec!["train", "--config", "{\"batch_size\": 0}"],
            "batch_size must be at least 1",
        ),
    ] {
        let out = crate::recipe(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

/// `recipe train --quiet --archive runs` with this config: (exit code, stderr).
fn train_config(dir: &Path, config: &str) -> (Option<i32>, String) {
    let out = crate::recipe(
        dir,
        &["train", "--quiet", "--archive", "runs", "--config", config],
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The runs archived in `dir/runs`; none when the folder was never made.
fn archived_runs(dir: &Path) -> Vec<recipe_archive::RunRecord> {
    if !dir.join("runs").exists() {
        return Vec::new();
    }
    Archive::open_existing(dir.join("runs"))
        .unwrap()
        .runs()
        .unwrap()
        .value
}

#[test]
fn issue_21_a_typo_in_the_config_names_the_field_it_meant() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = train_config(dir.path(), r#"{"stepz": 5}"#);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unknown field `stepz`"), "{err}");
    assert!(err.contains("did you mean steps?"), "{err}");
    let (code, err) = train_config(dir.path(), r#"{"model": {"kind": "mlp", "hiden": [8]}}"#);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("did you mean hidden?"), "{err}");
    assert!(archived_runs(dir.path()).is_empty());
}

#[test]
fn issue_21_a_config_that_cannot_train_exits_1_with_its_reason_and_archives_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (config, reason) in [
        (
            r#"{"steps": 20, "checkpoint_every": 0}"#,
            "checkpoint_every must be at least 1",
        ),
        (
            r#"{"steps": 20, "model": {"kind": "conv_net", "channels": [0, 4], "hidden": 8}}"#,
            "model.channels must each be at least 1, not [0, 4]",
        ),
        (r#"{"lr": -0.1}"#, "lr must be finite and above 0"),
        (r#"{"dropout": 1.5}"#, "dropout must be in [0, 1)"),
    ] {
        let (code, err) = train_config(dir.path(), config);
        assert_eq!(code, Some(1), "{config}: {err}");
        assert_eq!(err.lines().count(), 1, "{config}: one line, not {err}");
        assert!(
            err.starts_with("error: ") && err.contains(reason),
            "{config}: {err}"
        );
        assert!(archived_runs(dir.path()).is_empty(), "{config}");
    }
}

#[test]
fn issue_21_a_diverging_run_is_archived_diverged_at_its_step_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = train_config(dir.path(), r#"{"lr": 1e9, "steps": 300}"#);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the run ended diverged"), "{err}");
    let runs = archived_runs(dir.path());
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, Status::Diverged);
    let step = runs[0].last_step.unwrap();
    assert!(step < 50, "caught when it happens: step {step}");
    let reason = runs[0].error.clone().unwrap();
    assert!(
        reason.contains(&format!("diverged at step {step}")),
        "{reason}"
    );
    assert!(err.contains(&reason), "{err}");
}

#[test]
fn issue_21_a_failure_after_the_run_began_is_archived_failed_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A checkpoint the archive does not hold: loading it fails after the run has begun.
    let missing = format!(r#"{{"steps": 20, "resume_from": "{}"}}"#, "00".repeat(32));
    let (code, err) = train_config(dir.path(), &missing);
    assert_eq!(code, Some(1), "{err}");
    let runs = archived_runs(dir.path());
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, Status::Failed);
    let reason = runs[0].error.clone().unwrap();
    assert!(!reason.contains("dropped before finish"), "{reason}");
    assert!(
        err.contains(&reason),
        "the archived reason is the error printed: {err}"
    );
}

#[test]
fn issue_27_a_table_trains_on_the_target_it_names_and_refuses_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    // The common layout, label first; the old loader took the last pixel as the label and
    // trained a one-class model to accuracy 1.0.
    let mut text = String::from("label,p0,p1,p2\n");
    for i in 0..60 {
        let class = i % 3;
        text.push_str(&format!("{class},{},{},0\n", class * 2 + i % 2, 5 - class));
    }
    std::fs::write(dir.path().join("first.csv"), &text).unwrap();
    let train = |more: &[&str]| {
        let mut args = vec!["train", "--quiet", "--archive", "runs"];
        args.extend(more);
        args.extend(["--config", "{\"steps\": 30, \"eval_every\": 30}"]);
        crate::recipe(dir.path(), &args)
    };
    let show = |run: &str| {
        recipe_ok(
            dir.path(),
            &["runs", "show", run, "--archive", "runs", "--json"],
        )
    };
    assert!(train(&["--data", "first.csv", "--name", "table"])
        .status
        .success());
    let listed: Vec<serde_json::Value> = serde_json::from_str(&recipe_ok(
        dir.path(),
        &["runs", "list", "--json", "--archive", "runs"],
    ))
    .unwrap();
    assert_eq!(listed[0]["status"], "completed");
    let shown = show("table");
    let data: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let details = &data["identity"]["data"]["value"]["details"];
    assert_eq!(
        details["spec"],
        serde_json::json!({"kind": "csv", "path": "first.csv"}),
        "no choice, no field: {shown}"
    );
    assert_eq!(
        details["table"]["target"], "label",
        "the target found by its name is recorded"
    );

    // A table with no target column named like one is refused, naming its columns, and
    // trains once the target is named. (Its last column differs too: the same numbers under
    // another name are the same data, and so a replicate of the first run.)
    let named = text.replace("label,", "kind,").replace(",0\n", ",1\n");
    std::fs::write(dir.path().join("named.csv"), named).unwrap();
    let out = train(&["--data", "named.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("which column is the target") && err.contains("kind, p0, p1, p2"),
        "{err}"
    );
    let out = train(&["--data", "named.csv", "--target", "kind", "--name", "named"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = show("named");
    assert!(
        shown.contains("\"target\": \"kind\""),
        "the choice is in the data spec: {shown}"
    );
}
