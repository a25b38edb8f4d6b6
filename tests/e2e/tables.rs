//! Tables from a shell: `recipe data` and `recipe train` on a CSV with text, missing cells and
//! a categorical feature: its columns before a target is chosen (`--columns`), the choices'
//! flags (`--one-hot`, `--fill`, `--normalize`), and what was fitted on the training split in
//! the archived run, where a diff sees it.

use crate::{recipe, recipe_ok};
use serde_json::Value;

/// A command's table arguments followed by `more`.
fn with<'a>(table: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    let mut args = table.to_vec();
    args.extend(more);
    args
}

/// 60 rows: an id, a measurement with missing cells, a colour (one missing) and a species.
fn iris_like() -> String {
    let mut text = String::from("id,sepal,colour,species\n");
    for i in 0..60 {
        let species = ["setosa", "versicolor", "virginica"][i % 3];
        let sepal = if i % 11 == 4 {
            "NA".to_string()
        } else {
            format!("{}.{}", 4 + i % 3, i % 7)
        };
        let colour = match i {
            7 => "",
            _ if i % 3 == 0 => "red",
            _ => "blue",
        };
        text += &format!("{i},{sepal},{colour},{species}\n");
    }
    text
}

#[test]
fn issue_27_recipe_data_and_train_fit_encodings_on_the_training_split() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("iris.csv"), iris_like()).unwrap();
    let table = ["--data", "iris.csv", "--target", "species", "--drop", "id"];
    // Every column before a target is chosen, then with the choices' roles and classes.
    let shown = recipe_ok(dir.path(), &["data", "--data", "iris.csv", "--columns"]);
    assert!(
        shown.contains("iris.csv: 60 rows, 4 columns; no target yet")
            && shown.contains("which column is the target"),
        "{shown}"
    );
    let mut args = vec!["data", "--columns"];
    args.extend(with(&table, &["--one-hot", "colour"]));
    let shown = recipe_ok(dir.path(), &args);
    let sepal = shown.lines().find(|l| l.starts_with("sepal")).unwrap();
    let cells: Vec<&str> = sepal.split_whitespace().collect();
    assert_eq!(cells[..4], ["sepal", "Float64", "6", "21"], "{shown}");
    assert!(
        shown.contains("3 classes of \"species\": setosa 20, versicolor 20, virginica 20")
            && shown
                .lines()
                .any(|l| l.starts_with("colour") && l.ends_with("one-hot")),
        "{shown}"
    );
    let out = recipe(dir.path(), &["data", "--columns"]);
    assert_eq!(out.status.code(), Some(1), "digits is not a table file");

    // Without a choice about the missing cells: exit 1 and the three ways out.
    let mut args = vec!["data"];
    args.extend(with(&table, &["--one-hot", "colour"]));
    let out = recipe(dir.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sepal: 6 (first at row 5)")
            && err.contains("colour: 1 (first at row 8)")
            && err.contains("--drop-missing-rows")
            && err.contains("--fill mean|mode")
            && err.contains("--drop COLUMN"),
        "{err}"
    );
    // With them: the summary says what was fitted on which rows.
    let choices = ["--one-hot", "colour", "--fill", "mean", "--normalize"];
    let mut args = vec!["data"];
    args.extend(with(&table, &choices));
    let shown = recipe_ok(dir.path(), &args);
    for expected in [
        "iris.csv: 60 examples of shape [3]",
        "target column \"species\"; 3 features: sepal, colour=blue, colour=red",
        "colour: one-hot over the 2 categories of the training rows: blue, red",
        "sepal: 6 missing cells filled with",
        "colour: 1 missing cells filled with \"blue\", fitted on the 42 training rows",
        "features standardised with the mean and std of the 42 training rows",
    ] {
        assert!(shown.contains(expected), "{expected}: {shown}");
    }
    let out = recipe(
        dir.path(),
        &["data", "--data", "iris.csv", "--fill", "median"],
    );
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown fill");

    // Two runs, normalised or not: the archived data component holds the choices and the
    // values fitted, and a diff names them.
    let train = |name: &'static str, more: &[&'static str]| {
        let mut args = vec!["train", "--quiet", "--archive", "runs", "--name", name];
        args.extend(with(&table, more));
        args.extend(["--config", "{\"steps\": 20, \"eval_every\": 20}"]);
        recipe_ok(dir.path(), &args);
    };
    train("raw", &["--one-hot", "colour", "--fill", "mean"]);
    train("scaled", &choices);
    let show: Value = serde_json::from_str(&recipe_ok(
        dir.path(),
        &["runs", "show", "scaled", "--archive", "runs", "--json"],
    ))
    .unwrap();
    let data = show.to_string();
    for expected in [
        "\"normalize\":true",
        "\"one_hot\":[\"colour\"]",
        "\"categories\":{\"colour\":[\"blue\",\"red\"]}",
        "\"classes\":[\"setosa\",\"versicolor\",\"virginica\"]",
        "\"scaled\":{",
    ] {
        assert!(data.contains(expected), "{expected}: {data}");
    }
    let diff: Value = serde_json::from_str(&recipe_ok(
        dir.path(),
        &[
            "runs",
            "diff",
            "raw",
            "scaled",
            "--archive",
            "runs",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(diff["changed_components"], serde_json::json!(["data"]));
    let keys: Vec<&str> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"details.spec.normalize")
            && keys.contains(&"details.table.scaled.sepal.std"),
        "{keys:?}"
    );
}

#[test]
fn issue_27_recipe_data_reads_an_npz_and_refuses_table_choices_for_it() {
    use candle_core::{Device, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::from_vec(
        (0..12).map(|v| v as f32).collect::<Vec<_>>(),
        (6, 2),
        &Device::Cpu,
    )
    .unwrap();
    let y = Tensor::from_vec(vec![0i64, 1, 2, 0, 1, 2], 6, &Device::Cpu).unwrap();
    Tensor::write_npz(&[("x", &x), ("y", &y)], dir.path().join("d.npz")).unwrap();
    let shown = recipe_ok(dir.path(), &["data", "--data", "d.npz"]);
    assert!(shown.contains("d.npz: 6 examples of shape [2]"), "{shown}");
    let out = recipe(dir.path(), &["data", "--data", "d.npz", "--target", "y"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("choices about a table") && err.contains("d.npz is not one"),
        "{err}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly_not_with_a_panic() {
    // `recipe data --columns | head -c 8` on a table whose listing is far larger than a pipe
    // holds (3,000 columns): the command is still printing when the reader closes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.csv");
    let header: Vec<String> = (0..3000).map(|i| format!("feature_{i}")).collect();
    let row: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
    let text = format!(
        "{},label\n{},0\n{},1\n",
        header.join(","),
        row.join(","),
        row.join(",")
    );
    std::fs::write(&path, text).unwrap();
    let mut child = std::process::Command::new(crate::bin("recipe"))
        .args(["data", "--data", path.to_str().unwrap(), "--columns"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// 200 rows of a house-price-like table: area and rooms decide the price (in thousands),
/// plus noise from a fixed sequence; `kind` is text.
fn houses() -> String {
    let mut text = String::from("area,rooms,kind,price\n");
    for i in 0..200u64 {
        let area = 40 + (i * 37) % 160;
        let rooms = 1 + (i * 7) % 5;
        let noise = ((i * 7919) % 41) as f64 - 20.0;
        let price = 1.5 * area as f64 + 20.0 * rooms as f64 + noise + 0.25;
        let kind = ["flat", "house"][(i % 2) as usize];
        text += &format!("{area},{rooms},{kind},{price}\n");
    }
    text
}

#[test]
fn issue_27_recipe_train_regression_scores_r2_and_verifies_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("houses.csv"), houses()).unwrap();
    let table = [
        "--data",
        "houses.csv",
        "--target",
        "price",
        "--drop",
        "kind",
    ];
    // A fractional target without --regression: exit 1, saying how to ask for it.
    let mut args = vec!["data"];
    args.extend(with(&table, &[]));
    let out = recipe(dir.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--regression"), "{err}");

    // The summary of the regression: the target's view, standardised and in its own units.
    let mut args = vec!["data"];
    args.extend(with(&table, &["--regression", "--normalize"]));
    let shown = recipe_ok(dir.path(), &args);
    for expected in [
        "target column \"price\" (regression); 2 features: area, rooms",
        "target standardised with the training rows' mean",
        "regression target \"price\" over the training split",
    ] {
        assert!(shown.contains(expected), "{expected}: {shown}");
    }

    // Train: R² logged for val and test, the run verifies bit for bit.
    let mut args = vec!["train", "--quiet", "--archive", "runs", "--name", "price"];
    args.extend(with(&table, &["--regression", "--normalize"]));
    let config = r#"{"steps": 300, "eval_every": 100, "lr": 0.003, "init_bias_from_priors": true}"#;
    args.extend(["--config", config]);
    let trained = recipe_ok(dir.path(), &args);
    assert!(
        trained.contains("test_r2") && !trained.contains("test_acc"),
        "{trained}"
    );
    let show: Value = serde_json::from_str(&recipe_ok(
        dir.path(),
        &["runs", "show", "price", "--archive", "runs", "--json"],
    ))
    .unwrap();
    let r2 = show["summary"]["test_r2"].as_f64().unwrap();
    assert!(r2 > 0.8, "price from area and rooms: {show}");
    let data = &show["identity"]["data"]["value"]["details"];
    assert_eq!(data["regression_target"], "price", "{data}");
    let verified = recipe_ok(
        dir.path(),
        &["runs", "verify", "price", "--archive", "runs"],
    );
    assert!(verified.contains("reproduced bit for bit"), "{verified}");
}
