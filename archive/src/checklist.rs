//! The reproducibility checklist of a set of runs, as papers' checklists ask for it: how many
//! runs and which, the seeds, the compute, the hardware and software, the data and its
//! splits, the hyperparameters (their ranges where they vary), the code and the recipe
//! checks. Everything comes from the runs' archived identity, nothing from the notebook; a
//! fact that differs between runs names the runs of each value, so every line traces to run
//! ids.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::diff::flatten;
use crate::export::{format_number, TextTable};
use crate::records::RunRecord;
use crate::report::compact_json;
use crate::{Error, Result};

/// The checklist of `runs` as a two-column table (item, value) whose caption lists every
/// run id. Fails on an empty list.
pub fn checklist(runs: &[RunRecord]) -> Result<TextTable> {
    if runs.is_empty() {
        return Err(Error::NotFound(
            "a checklist needs runs; none were given".into(),
        ));
    }
    let mut table = TextTable::new(&["item", "value"]);
    let mut item = |name: &str, value: String| table.push(vec![name.into(), value]);

    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for run in runs {
        *statuses.entry(run.status.as_str()).or_default() += 1;
    }
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} {s}")).collect();
    item(
        "runs",
        format!(
            "{} ({}); ids in the caption",
            runs.len(),
            statuses.join(", ")
        ),
    );
    item("seeds", seeds(runs));
    item("compute", compute(runs));
    item(
        "hardware",
        by_value(runs, |r| {
            let env = r.env();
            format!(
                "{}, {} threads, {}",
                text(&env["cpu_model"]),
                text(&env["threads"]),
                text(&env["device"])
            )
        }),
    );
    item(
        "software",
        by_value(runs, |r| {
            let env = r.env();
            format!(
                "{}; candle-core {}; recipe {}",
                text(&env["rustc"]),
                text(&env["crates"]["candle-core"]),
                text(&env["crates"]["recipe"])
            )
        }),
    );
    item(
        "data",
        by_value(runs, |r| {
            let details = &r.data()["details"];
            let splits: Vec<String> = (details["split_sizes"].as_object())
                .map(|sizes| sizes.iter().map(|(k, v)| format!("{k} {v}")).collect())
                .unwrap_or_default();
            format!(
                "{} ({} examples; {}), fingerprint {}",
                compact_json(&details["spec"]),
                text(&details["examples"]),
                splits.join(", "),
                &r.data_fingerprint()[..12.min(r.data_fingerprint().len())]
            )
        }),
    );
    let (varying, fixed) = hyperparameters(runs);
    item("hyperparameters varied", varying);
    item("hyperparameters fixed", fixed);
    item(
        "code",
        by_value(runs, |r| {
            let code = r.code();
            let commit = match code["commit"].as_str() {
                Some(c) => format!("commit {}", &c[..12.min(c.len())]),
                None => "outside git".into(),
            };
            let dirty = match code["diff_hash"].as_str() {
                Some(h) if code["dirty"] == Value::Bool(true) => {
                    format!(" + uncommitted diff {}", &h[..12.min(h.len())])
                }
                _ => String::new(),
            };
            format!("{commit}{dirty}")
        }),
    );
    item("recipe checks", checks(runs));

    let ids: Vec<String> = runs.iter().map(RunRecord::short).collect();
    table.caption = Some(format!(
        "Reproducibility checklist of {} runs, from their archived identity. Runs: {}.",
        runs.len(),
        ids.join(", ")
    ));
    Ok(table)
}

/// A JSON value as plain text: strings without quotes, `?` when absent.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "?".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One value when every run has it; otherwise each value with the runs that have it.
fn by_value(runs: &[RunRecord], fact: impl Fn(&RunRecord) -> String) -> String {
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for run in runs {
        values.entry(fact(run)).or_default().push(run.short());
    }
    if values.len() == 1 {
        return values.into_keys().next().unwrap_or_default();
    }
    values
        .into_iter()
        .map(|(value, ids)| format!("{value} (runs {})", ids.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Each source's seeds, or one list when every run uses one seed for all its sources.
fn seeds(runs: &[RunRecord]) -> String {
    let mut per_source: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut one_seed_each = true;
    for run in runs {
        let Some(seeds) = run.seeds().as_object() else {
            continue;
        };
        let distinct: BTreeSet<String> = seeds.values().map(text).collect();
        one_seed_each &= distinct.len() == 1;
        for (source, seed) in seeds {
            per_source
                .entry(source.clone())
                .or_default()
                .insert(text(seed));
        }
    }
    if per_source.is_empty() {
        return "none recorded".into();
    }
    let sources: Vec<&str> = per_source.keys().map(String::as_str).collect();
    if one_seed_each {
        let all: BTreeSet<&String> = per_source.values().flatten().collect();
        let all: Vec<&str> = all.into_iter().map(String::as_str).collect();
        return format!(
            "{}, one per run, the same for every source ({})",
            all.join(", "),
            sources.join(", ")
        );
    }
    per_source
        .iter()
        .map(|(source, seeds)| {
            let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
            format!("{source} {}", seeds.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Training time summed over the runs, and the longest.
fn compute(runs: &[RunRecord]) -> String {
    let seconds: Vec<f64> = runs
        .iter()
        .filter_map(|r| {
            r.summary
                .get("train_seconds")
                .copied()
                .or_else(|| r.seconds())
        })
        .collect();
    if seconds.is_empty() {
        return "no run has ended".into();
    }
    let longest = seconds.iter().copied().fold(0.0, f64::max);
    format!(
        "{} s of training over {} runs (longest {} s)",
        format_number(seconds.iter().sum()),
        seconds.len(),
        format_number(longest)
    )
}

/// The config keys whose value differs between runs (with their range or values), and
/// those every run shares.
fn hyperparameters(runs: &[RunRecord]) -> (String, String) {
    let flat: Vec<BTreeMap<String, Value>> = runs.iter().map(|r| flatten(r.config())).collect();
    let keys: BTreeSet<&String> = flat.iter().flat_map(|f| f.keys()).collect();
    let (mut varying, mut fixed) = (Vec::new(), Vec::new());
    for key in keys {
        let values: Vec<&Value> = flat
            .iter()
            .map(|f| f.get(key).unwrap_or(&Value::Null))
            .collect();
        let distinct: BTreeSet<String> = values.iter().map(|v| compact_json(v)).collect();
        if distinct.len() == 1 {
            if !values[0].is_null() {
                fixed.push(format!("{key} {}", compact_json(values[0])));
            }
            continue;
        }
        let numbers: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
        if numbers.len() == values.len() && distinct.len() > 3 {
            let (lo, hi) = numbers
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            varying.push(format!(
                "{key} {} to {} ({} values)",
                format_number(lo),
                format_number(hi),
                distinct.len()
            ));
        } else {
            let listed: Vec<String> = distinct.into_iter().collect();
            varying.push(format!("{key} {}", listed.join(" / ")));
        }
    }
    let none = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join("; ")
        }
    };
    (none(varying), none(fixed))
}

/// Each recipe check and in how many of the runs that ran it it passed.
fn checks(runs: &[RunRecord]) -> String {
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for check in runs.iter().flat_map(|r| &r.checks) {
        let (passed, ran) = counts.entry(&check.name).or_default();
        *ran += 1;
        *passed += usize::from(check.passed);
    }
    if counts.is_empty() {
        return "none recorded".into();
    }
    counts
        .iter()
        .map(|(name, (passed, ran))| format!("{name} passed in {passed} of {ran}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_run;
    use std::sync::Arc;

    fn run(id: &str, seed: u64, lr: f64, dropout: f64) -> RunRecord {
        let mut r = test_run(id, 1, None, 0.9);
        r.components[0] = Arc::new(serde_json::json!({"lr": lr, "dropout": dropout, "steps": 100}));
        r.components[1] = Arc::new(serde_json::json!({"init": seed, "data_order": seed}));
        r.components[4] =
            Arc::new(serde_json::json!({"cpu_model": "Xeon", "threads": 2, "device": "cpu"}));
        r.summary.insert("train_seconds".into(), 1.5);
        r
    }

    #[test]
    fn a_checklist_says_what_varied_and_traces_what_differs_to_run_ids() {
        let mut runs: Vec<RunRecord> = (1..=4)
            .map(|i| run(&format!("{i}aaaaaaaaaaaaaaa"), i, 1e-3 * i as f64, 0.0))
            .collect();
        runs[3].components[0] =
            Arc::new(serde_json::json!({"lr": 4e-3, "dropout": 0.2, "steps": 100}));
        runs[3].components[4] =
            Arc::new(serde_json::json!({"cpu_model": "Epyc", "threads": 2, "device": "cpu"}));
        let table = checklist(&runs).unwrap();
        let value = |name: &str| {
            table
                .rows
                .iter()
                .find(|r| r[0] == name)
                .map(|r| r[1].clone())
                .unwrap()
        };
        assert_eq!(value("runs"), "4 (4 completed); ids in the caption");
        assert_eq!(
            value("seeds"),
            "1, 2, 3, 4, one per run, the same for every source (data_order, init)"
        );
        assert_eq!(
            value("compute"),
            "6.000 s of training over 4 runs (longest 1.500 s)"
        );
        assert_eq!(
            value("hyperparameters varied"),
            "dropout 0.0 / 0.2; lr 0.001000 to 0.004000 (4 values)"
        );
        assert_eq!(value("hyperparameters fixed"), "steps 100");
        assert_eq!(
            value("hardware"),
            "Epyc, 2 threads, cpu (runs 4aaaaaaaaaaa); Xeon, 2 threads, cpu (runs 1aaaaaaaaaaa, \
             2aaaaaaaaaaa, 3aaaaaaaaaaa)"
        );
        let caption = table.caption.clone().unwrap();
        assert!(caption.contains("Runs: 1aaaaaaaaaaa, 2aaaaaaaaaaa, 3aaaaaaaaaaa, 4aaaaaaaaaaa."));
        assert!(table.to_latex().contains("\\toprule"));
    }

    #[test]
    fn no_runs_is_an_error() {
        assert!(checklist(&[]).is_err());
    }
}
