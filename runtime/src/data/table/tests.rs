//! The table loader's choices through `Dataset::table`: encodings, fills and scales fitted
//! on the training split only, recorded, and the errors that say what to choose. The
//! expected values are computed here from the split's own rows, the way numpy would:
//! `x[train].mean()`, `x[train].std()` (population).

use crate::data::{seeded_splits, Dataset, Table, SPLITS};
use crate::show::Show;

/// `text` written to `name` in a fresh folder, loaded with `choose`; the error text if it
/// fails. The folder lives as long as the test.
fn load(
    dir: &tempfile::TempDir,
    name: &str,
    text: &str,
    choose: impl Fn(Table) -> Table,
) -> Result<Dataset, String> {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    choose(Dataset::table(&path))
        .load()
        .map_err(|e| e.to_string())
}

/// The rows of each split for a table of `n` rows with nothing left out.
fn split_rows(n: usize) -> (Vec<usize>, Vec<usize>) {
    let splits = seeded_splits(n, &SPLITS);
    let train = splits["train"].clone();
    let mut others: Vec<usize> = (0..n).filter(|r| !train.contains(r)).collect();
    others.sort();
    (train, others)
}

/// 20 rows: `x` = row number, missing in the first val/test row and in one training row;
/// `colour` red/blue by row parity, missing in one training row, and `green` in one val/test
/// row only; `flat` always 7; `species` one of three names.
fn fixture() -> (String, Vec<usize>, Vec<usize>) {
    let (train, others) = split_rows(20);
    let mut text = String::from("id,x,colour,flat,species\n");
    for r in 0..20 {
        let x = if r == others[0] || r == train[0] {
            "NA".to_string()
        } else {
            r.to_string()
        };
        let colour = match r {
            _ if r == train[1] => "",
            _ if r == others[1] => "green",
            _ if r % 2 == 0 => "red",
            _ => "blue",
        };
        let species = ["setosa", "versicolor", "virginica"][r % 3];
        text += &format!("{r},{x},{colour},7,{species}\n");
    }
    (text, train, others)
}

#[test]
fn issue_27_one_hot_and_fill_are_fitted_on_the_training_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    let (text, train, others) = fixture();
    let d = load(&dir, "t.csv", &text, |t| {
        t.target("species")
            .drop(["id"])
            .one_hot(["colour"])
            .fill_mean()
    })
    .unwrap();
    let fitted = d.table.clone().unwrap();
    assert_eq!(d.len(), 20, "nothing left out");
    assert_eq!(d.splits["train"], train, "the splits fitting used");
    assert_eq!(d.classes(), ["setosa", "versicolor", "virginica"]);
    assert_eq!(
        fitted.features,
        ["x", "colour=blue", "colour=red", "flat"],
        "green is in no training row"
    );
    assert_eq!(fitted.categories["colour"], ["blue", "red"]);
    assert_eq!(fitted.unseen["colour"], 1);
    // x's fill is the mean of the training rows that have one: not the mean of all rows.
    let present: Vec<f64> = train[1..].iter().map(|&r| r as f64).collect();
    let mean = present.iter().sum::<f64>() / present.len() as f64;
    assert_eq!(
        serde_json::json!(fitted.filled["x"]),
        serde_json::json!({"value": mean, "cells": 2})
    );
    assert_eq!(d.example(others[0]).unwrap()[0], mean as f32);
    assert_eq!(d.example(others[2]).unwrap()[0], others[2] as f32);
    // colour's fill is the training rows' most frequent value; green is all zeros.
    let coloured: Vec<usize> = train.iter().copied().filter(|&r| r != train[1]).collect();
    let reds = coloured.iter().filter(|&&r| r % 2 == 0).count();
    let mode = if 2 * reds > coloured.len() {
        "red"
    } else {
        "blue"
    };
    assert_eq!(
        serde_json::json!(fitted.filled["colour"]),
        serde_json::json!({"value": mode, "cells": 1})
    );
    let filled_colour = if mode == "red" {
        [0.0, 1.0]
    } else {
        [1.0, 0.0]
    };
    assert_eq!(d.example(train[1]).unwrap()[1..3], filled_colour);
    assert_eq!(d.example(others[1]).unwrap()[1..3], [0.0, 0.0]);
    assert_eq!(d.example(others[2]).unwrap()[3], 7.0);
    // Everything fitted is in the data component, and the summary says it.
    let details = d.fingerprint().details;
    assert_eq!(details["table"]["filled"]["x"]["value"], mean);
    assert_eq!(
        details["table"]["categories"]["colour"],
        serde_json::json!(["blue", "red"])
    );
    assert_eq!(details["spec"]["one_hot"], serde_json::json!(["colour"]));
    assert_eq!(details["spec"]["fill"], "mean");
    let summary = d.summary().unwrap().text();
    assert!(
        summary.contains("target column \"species\"")
            && summary.contains("colour: 1 val/test rows hold a category the training rows do not")
            && summary.contains("all zeros")
            && summary.contains("x: 2 missing cells filled with"),
        "{summary}"
    );
    // The spec loads the same bits again.
    assert_eq!(d.spec.load().unwrap().fingerprint(), d.fingerprint());
}

#[test]
fn issue_27_normalize_uses_the_training_rows_mean_and_std() {
    let dir = tempfile::tempdir().unwrap();
    let (text, train, _) = fixture();
    let choose = |t: Table| {
        t.target("species")
            .drop(["id"])
            .one_hot(["colour"])
            .fill_mode()
    };
    let plain = load(&dir, "t.csv", &text, choose).unwrap();
    let d = load(&dir, "t.csv", &text, |t| choose(t).normalize()).unwrap();
    let fitted = d.table.clone().unwrap();
    for (j, feature) in fitted.features.iter().enumerate() {
        // The oracle: numpy's mean and std of the column over the training rows.
        let column: Vec<f64> = train
            .iter()
            .map(|&r| plain.example(r).unwrap()[j] as f64)
            .collect();
        let mean = column.iter().sum::<f64>() / column.len() as f64;
        let var = column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / column.len() as f64;
        let std = if var > 0.0 { var.sqrt() } else { 1.0 };
        let scale = fitted.scaled[feature];
        assert!(
            (scale.mean - mean).abs() < 1e-12 && (scale.std - std).abs() < 1e-12,
            "{feature}: {scale:?} against {mean} {std}"
        );
        for r in 0..d.len() {
            let expected = ((plain.example(r).unwrap()[j] as f64 - mean) / std) as f32;
            assert!((d.example(r).unwrap()[j] - expected).abs() < 1e-6);
        }
    }
    assert_eq!(fitted.constant, ["flat"], "std 1, not a division by 0");
    assert!(d.example(3).unwrap()[3] == 0.0);
    // x's fill is now the training rows' most frequent value: all are once, so the smallest.
    let smallest = train[1..].iter().min().copied().unwrap() as f64;
    assert_eq!(
        serde_json::json!(fitted.filled["x"].value),
        serde_json::json!(smallest)
    );
    // Another choice, another dataset: the fingerprint and its details tell them apart.
    assert_ne!(d.fingerprint().hash, plain.fingerprint().hash);
    assert_eq!(d.fingerprint().details["spec"]["normalize"], true);
    assert_eq!(d.fingerprint().details["spec"]["fill"], "mode");
    let summary = d.summary().unwrap().text();
    assert!(
        summary.contains("standardised")
            && summary.contains("divided by 1 instead of a std of 0: flat"),
        "{summary}"
    );
}

#[test]
fn issue_27_missing_cells_name_three_ways_out_and_a_target_is_never_filled() {
    let dir = tempfile::tempdir().unwrap();
    let (text, train, others) = fixture();
    let message = load(&dir, "t.csv", &text, |t| {
        t.target("species").drop(["id"]).one_hot(["colour"])
    })
    .unwrap_err();
    for expected in [
        &format!("x: 2 (first at row {})", train[0].min(others[0]) + 1),
        "colour: 1",
        ".drop_missing_rows()",
        ".fill_mean() or .fill_mode()",
        "`--fill mean|mode`",
        ".drop([\"x\", \"colour\"])",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
    // Rows left out: three of them, and the summary says so.
    let d = load(&dir, "t.csv", &text, |t| {
        t.target("species")
            .drop(["id"])
            .one_hot(["colour"])
            .drop_missing_rows()
    })
    .unwrap();
    assert_eq!((d.len(), d.table.as_ref().unwrap().rows_left_out), (17, 3));
    assert!(d.summary().unwrap().text().contains("3 rows left out"));
    // A missing target is refused even with a fill, and left out with drop_missing_rows.
    let unlabelled = text.replacen(",setosa\n", ",NA\n", 1);
    let message = load(&dir, "u.csv", &unlabelled, |t| {
        t.target("species")
            .drop(["id"])
            .one_hot(["colour"])
            .fill_mean()
    })
    .unwrap_err();
    assert!(
        message.contains("missing cells in the target, species: 1 (first at row 1)")
            && message.contains("a target is never filled"),
        "{message}"
    );
    let d = load(&dir, "u.csv", &unlabelled, |t| {
        t.target("species")
            .drop(["id"])
            .one_hot(["colour"])
            .fill_mean()
            .drop_missing_rows()
    })
    .unwrap();
    let fitted = d.table.clone().unwrap();
    assert_eq!((d.len(), fitted.rows_left_out), (19, 1));
    assert!(fitted.filled.contains_key("x") && fitted.filled.contains_key("colour"));
}

#[test]
fn issue_27_choices_that_cannot_work_are_refused_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let (text, _, others) = fixture();
    let refused = |choose: &dyn Fn(Table) -> Table| {
        load(&dir, "t.csv", &text, |t| choose(t.target("species"))).unwrap_err()
    };
    let message = refused(&|t| t.drop(["id"]).fill_mean());
    assert!(
        message.contains("colour (Utf8)")
            && message.contains(".drop([\"colour\"])")
            && message.contains(".one_hot([\"colour\"])"),
        "{message}"
    );
    let message = refused(&|t| t.one_hot(["hue"]));
    assert!(
        message.contains("no column \"hue\" to one-hot encode") && message.contains("id, x"),
        "{message}"
    );
    let message = refused(&|t| t.one_hot(["colour"]).drop(["colour"]));
    assert!(
        message.contains("both dropped and one-hot encoded"),
        "{message}"
    );
    let message = refused(&|t| t.one_hot(["species"]));
    assert!(message.contains("cannot be one-hot encoded"), "{message}");
    // A column with no value in any training row has nothing to fill from.
    let mut sparse = String::from("z,label\n");
    for r in 0..20 {
        let z = if r == others[0] { "1.5" } else { "" };
        sparse += &format!("{z},{}\n", r % 2);
    }
    let message = load(&dir, "s.csv", &sparse, Table::fill_mean).unwrap_err();
    assert!(
        message.contains("column \"z\" has no value in any of the 14 training rows")
            && message.contains(".drop([\"z\"])"),
        "{message}"
    );
    // An infinite value has no mean or scale: refused with its row.
    let message = load(&dir, "i.csv", "z,label\n1,0\ninf,1\n", |t| t).unwrap_err();
    assert!(
        message.contains("column \"z\" holds inf at row 2"),
        "{message}"
    );
}

#[test]
fn issue_27_dates_and_number_codes_one_hot_in_their_own_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("when,grade,label\n");
    for r in 0..30 {
        text += &format!("2024-01-0{},{},{}\n", 1 + r % 3, [2, 10, 1][r % 3], r % 2);
    }
    let d = load(&dir, "d.csv", &text, |t| t.one_hot(["when", "grade"])).unwrap();
    let fitted = d.table.clone().unwrap();
    assert_eq!(
        fitted.categories["when"],
        ["2024-01-01", "2024-01-02", "2024-01-03"]
    );
    assert_eq!(
        fitted.categories["grade"],
        ["1", "2", "10"],
        "numbers by value, not as text"
    );
    assert_eq!(d.dim(), 6);
    // Row 1: 2024-01-02 and grade 10.
    assert_eq!(d.example(1).unwrap(), [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn issue_27_columns_show_every_column_before_a_target_is_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let (text, _, _) = fixture();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, &text).unwrap();
    // No target yet: every column, and what to do next.
    let c = Dataset::table(&path).columns().unwrap();
    assert_eq!((c.rows, c.columns.len(), c.target.clone()), (20, 5, None));
    assert!(
        c.no_classes
            .as_deref()
            .is_some_and(|why| why.contains("which column is the target")),
        "{:?}",
        c.no_classes
    );
    let by_name = |name: &str| c.columns.iter().find(|s| s.name == name).unwrap().clone();
    let id = by_name("id");
    assert_eq!(
        (
            id.kind.as_str(),
            id.missing,
            id.distinct,
            id.numbers,
            id.role
        ),
        ("Int64", 0, 20, Some((0.0, 9.5, 19.0)), "feature")
    );
    let x = by_name("x");
    assert_eq!((x.missing, x.distinct), (2, 18));
    let colour = by_name("colour");
    let reds = text.matches(",red,").count();
    assert_eq!(
        (colour.missing, colour.distinct, colour.role),
        (1, 3, "drop or one-hot")
    );
    assert_eq!(colour.frequent[2], ("green".to_string(), 1));
    assert_eq!(colour.frequent.iter().map(|f| f.1).sum::<usize>(), 19);
    assert!(colour.frequent.contains(&("red".to_string(), reds)));
    assert_eq!(by_name("flat").distinct, 1);
    assert_eq!(by_name("species").frequent[0], ("setosa".to_string(), 7));
    // With choices: the roles they give, the target's classes with their counts.
    let c = Dataset::table(&path)
        .target("species")
        .drop(["id"])
        .one_hot(["colour"])
        .columns()
        .unwrap();
    let roles: Vec<&str> = c.columns.iter().map(|s| s.role).collect();
    assert_eq!(
        roles,
        ["dropped", "feature", "one-hot", "feature", "target"]
    );
    assert_eq!(
        c.classes,
        [("setosa", 7), ("versicolor", 7), ("virginica", 6)].map(|(n, k)| (n.to_string(), k))
    );
    let shown = c.text();
    assert!(
        shown.contains("t.csv: 20 rows, 5 columns; target \"species\""),
        "{shown}"
    );
    assert!(
        shown.contains("most frequent")
            && shown.contains("3 classes of \"species\": setosa 7, versicolor 7, virginica 6"),
        "{shown}"
    );
    assert!(c.html().contains("<table>") && c.html().contains("one-hot"));
    // A fractional target has no classes, and says why.
    let price = dir.path().join("p.csv");
    std::fs::write(&price, "x,target\n1,2.5\n2,3\n").unwrap();
    let c = Dataset::table(&price).columns().unwrap();
    assert!(c.no_classes.unwrap().contains("regression") && c.target.as_deref() == Some("target"));
}

#[test]
fn issue_27_a_type_only_late_rows_show_is_read_from_every_row() {
    // Types are first inferred from 10,000 rows; what only row 10,500 shows must still count.
    let dir = tempfile::tempdir().unwrap();
    let late = |header: &str, early: &str, late: &str| {
        let mut text = format!("{header},label\n");
        for r in 0..10_600 {
            let cell = if r == 10_500 { late } else { early };
            text += &format!("{cell},{}\n", r % 2);
        }
        text
    };
    // Whole numbers, then a fraction: a column of numbers, the fraction kept.
    let d = load(&dir, "a.csv", &late("x", "3", "1.5"), |t| t).unwrap();
    assert_eq!(d.example(10_500).unwrap(), [1.5]);
    // Numbers, then a stray word: the column is text, and the error names the row.
    let message = load(&dir, "b.csv", &late("x", "3", "?"), |t| t).unwrap_err();
    assert!(
        message.contains("x (Utf8: row 10501 holds \"?\" where most cells are numbers)"),
        "{message}"
    );
    // Dates, then a date with a time: timestamps, not dates cut short.
    let c = Dataset::table(dir.path().join("c.csv"));
    std::fs::write(
        dir.path().join("c.csv"),
        late("when", "2024-01-02", "2024-01-02T10:30:00"),
    )
    .unwrap();
    let when = c.columns().unwrap().columns[0].clone();
    assert!(when.kind.starts_with("Timestamp"), "{}", when.kind);
    assert_eq!(when.distinct, 2, "the time of day is kept");
    // Empty, then a number: a column of numbers with missing cells, not a column of nothing.
    let message = load(&dir, "d.csv", &late("x", "", "4"), |t| t).unwrap_err();
    assert!(message.contains("x: 10599 (first at row 1)"), "{message}");
}

/// 20 rows: `x` = row number, `price` = 100 + 10 x + 0.5 (fractional), `rooms` = x mod 4
/// (whole numbers), `kind` a text column.
fn prices() -> String {
    let mut text = String::from("x,rooms,kind,price\n");
    for r in 0..20 {
        let kind = ["flat", "house"][r % 2];
        text += &format!("{r},{},{kind},{}.5\n", r % 4, 100 + 10 * r);
    }
    text
}

#[test]
fn issue_27_a_number_target_is_a_regression_when_asked_and_classes_never_by_accident() {
    use crate::data::Target;
    use crate::task::Task;
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = split_rows(20);

    // A fractional target without .regression(): refused, saying how to ask.
    let refused = load(&dir, "p.csv", &prices(), |t| {
        t.target("price").drop(["kind"])
    })
    .unwrap_err();
    assert!(
        refused.contains("100.5") && refused.contains(".regression()"),
        "{refused}"
    );

    // With it: the values as they are, the task a regression, no classes.
    let d = load(&dir, "p.csv", &prices(), |t| {
        t.target("price").drop(["kind"]).regression()
    })
    .unwrap();
    assert_eq!(
        (d.task(), d.num_classes(), d.dim()),
        (Task::Regression, 0, 2)
    );
    let Target::Values { values, name } = &d.target else {
        panic!("a regression target")
    };
    assert_eq!((name.as_str(), values[3]), ("price", 130.5));
    assert!(d
        .labels("a confusion matrix")
        .unwrap_err()
        .to_string()
        .contains("needs classes"));

    // A whole-number column is classes by default, values when asked.
    let classes = load(&dir, "p.csv", &prices(), |t| {
        t.target("rooms").drop(["kind"])
    })
    .unwrap();
    assert_eq!(classes.classes(), ["0", "1", "2", "3"]);
    let rooms = load(&dir, "p.csv", &prices(), |t| {
        t.target("rooms").drop(["kind"]).regression()
    })
    .unwrap();
    assert_eq!(rooms.task(), Task::Regression);

    // With .normalize(), the target is standardised with the training rows' mean and std
    // (numpy: y[train].mean(), y[train].std()), and the scale is recorded.
    let scaled = load(&dir, "p.csv", &prices(), |t| {
        t.target("price").drop(["kind"]).regression().normalize()
    })
    .unwrap();
    let y: Vec<f64> = train.iter().map(|&r| 100.5 + 10.0 * r as f64).collect();
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let std = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
    let scale = scaled.table.as_ref().unwrap().target_scale.unwrap();
    assert!((scale.mean - mean).abs() < 1e-9 && (scale.std - std).abs() < 1e-9);
    let Target::Values { values, .. } = &scaled.target else {
        panic!("a regression target")
    };
    assert!((values[3] as f64 - (130.5 - mean) / std).abs() < 1e-6);
    let summary = scaled.summary().unwrap().text();
    assert!(
        summary.contains("(regression)") && summary.contains("standardised"),
        "{summary}"
    );
    assert!(summary.contains("regression target \"price\""), "{summary}");
    let in_units = format!("mean {}", recipe_archive::export::format_number(mean));
    assert!(
        summary.contains(&in_units),
        "the target's view in its own units: {summary}"
    );
    assert_ne!(
        scaled.fingerprint().hash,
        d.fingerprint().hash,
        "the choice is in the data"
    );

    // Many classes from whole numbers read like a quantity: the summary says how to ask.
    let grams = Dataset::penguins()
        .target("body_mass_g")
        .one_hot(["species", "island", "sex"])
        .drop_missing_rows()
        .load()
        .unwrap();
    let summary = grams.summary().unwrap().text();
    assert!(
        summary.contains("93 classes from a column of whole numbers"),
        "{summary}"
    );
    assert!(!classes.summary().unwrap().text().contains("whole numbers"));

    // A text target cannot be regressed.
    let text = load(&dir, "p.csv", &prices(), |t| t.target("kind").regression()).unwrap_err();
    assert!(text.contains("must be numbers"), "{text}");
}
