//! Text from a shell: `recipe data` shows a corpus as a reader looks at it, `recipe train`
//! fits the zoo's GPT on it (next-token prediction, bits per token, samples archived with the
//! run) and `recipe runs verify` reproduces its metrics and samples bit for bit.

use crate::{recipe, recipe_ok};

#[test]
fn issue_22_recipe_trains_a_gpt_on_a_text_file_and_verifies_metrics_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    // A small made-up play: 60 speeches, every fifth one "ROSA:", with a line of 'z's
    // only the test split holds (the vocabulary is the training split's).
    let mut text = String::new();
    for k in 0..60 {
        let who = if k % 5 == 0 { "ROSA" } else { "TOMAS" };
        text += &format!("{who}:\nThe bell rang {k} times at the gate of the town.\n\n");
    }
    text += "ROSA:\nzzzz\n";
    std::fs::write(dir.path().join("play.txt"), &text).unwrap();

    let shown = recipe_ok(
        dir.path(),
        &["data", "--data", "play.txt", "--context", "16"],
    );
    for expected in [
        "play: 3349 characters (test 335, train 2679, val 335)",
        "most frequent in train: space",
        "val/test characters outside the training vocabulary",
        "examples of shape [16]",
    ] {
        assert!(shown.contains(expected), "{expected}: {shown}");
    }
    for (args, expected) in [
        (
            vec!["data", "--data", "play.txt", "--target", "y"],
            "of the data choices it takes only --context",
        ),
        (vec!["data", "--context", "8"], "is not text"),
        (
            vec!["data", "--data", "play.txt", "--context", "4000"],
            "too few for a context of 4000",
        ),
        (
            vec![
                "train",
                "--data",
                "play.txt",
                "--config",
                r#"{"model": {"kind": "mlp", "hidden": [8]}}"#,
            ],
            "use ModelSpec::Gpt",
        ),
        (
            vec![
                "train",
                "--config",
                r#"{"model": {"kind": "gpt", "width": 30, "heads": 4, "layers": 1}}"#,
            ],
            "model.width (30) must be a multiple of model.heads (4)",
        ),
    ] {
        let out = recipe(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expected), "{expected}: {err}");
    }

    let config = r#"{"steps": 150, "eval_every": 50, "lr": 0.003,
        "model": {"kind": "gpt", "width": 32, "heads": 4, "layers": 1}}"#;
    let trained = recipe_ok(
        dir.path(),
        &[
            "train",
            "--quiet",
            "--data",
            "play.txt",
            "--context",
            "16",
            "--name",
            "play",
            "--config",
            config,
        ],
    );
    // ln(V) nats at init; a repetitive text is learned to well under a bit per character.
    assert!(trained.contains("check loss_at_init PASS"), "{trained}");
    let bits: f64 = trained
        .lines()
        .find_map(|l| l.trim().strip_prefix("test_bpt"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no test_bpt: {trained}"));
    assert!(bits < 1.5, "{trained}");
    let verified = recipe_ok(dir.path(), &["runs", "verify", "play"]);
    assert!(verified.contains("reproduced bit for bit"), "{verified}");
    assert!(
        verified.contains("3 archived samples identical"),
        "{verified}"
    );
}

#[test]
fn issue_22_the_word_list_loads_or_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = recipe(dir.path(), &["data", "--data", "words"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if std::path::Path::new("/usr/share/dict/words").exists() {
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.contains("examples of shape [16]"), "{stdout}");
        assert!(stdout.contains("most frequent in train: \\n"), "{stdout}");
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr.contains("apt-get install wamerican"), "{stderr}");
    }
}

#[test]
fn issue_22_the_gpt_trains_to_the_same_bits_on_one_thread_and_two() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"{"steps": 40, "eval_every": 20, "lr": 0.003, "dropout": 0.1,
        "model": {"kind": "gpt", "width": 32, "heads": 4, "layers": 2}}"#;
    for threads in ["2", "1"] {
        let out = std::process::Command::new(crate::bin("recipe"))
            .args([
                "train",
                "--quiet",
                "--data",
                "shakespeare",
                "--context",
                "32",
                "--name",
                "gpt",
                "--config",
                config,
                "--archive",
                "runs",
            ])
            .current_dir(dir.path())
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let archive = recipe_archive::Archive::open_existing(dir.path().join("runs")).unwrap();
    let runs = archive.runs().unwrap().value;
    let bits = |run| crate::metric_bits(&archive, run);
    assert_eq!(runs.len(), 2);
    assert_ne!(
        runs[0].run_id, runs[1].run_id,
        "the thread count is in the environment"
    );
    assert_eq!(bits(&runs[0]), bits(&runs[1]));
    // The samples, drawn from the same scores, are the same text.
    assert_eq!(runs[0].artifacts["samples"], runs[1].artifacts["samples"]);
}
