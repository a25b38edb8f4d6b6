//! The trainer from a shell: runs reproduce bit for bit across processes and thread counts,
//! a different seed is a different run of the same config, and `recipe runs verify`
//! re-runs an archived run and finds every metric identical.

use crate::{bin, recipe_ok};
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

fn bits(archive: &Archive, run: &recipe_archive::RunRecord) -> Vec<(String, i64, u64)> {
    archive
        .metrics(run)
        .unwrap()
        .value
        .into_iter()
        .map(|p| (p.name, p.step, p.value.to_bits()))
        .collect()
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
            "--config is not a TrainConfig",
        ),
        (
            vec!["train", "--config", "{\"batch_size\": 0}"],
            "batch_size and eval_every must be at least 1",
        ),
    ] {
        let out = crate::recipe(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
