//! What changed between two runs: which identity components, which keys inside them, and
//! how every metric moved (final value, best value, and at the steps both logged).
//!
//! A diff also says what it did not see: the metrics files of either run that could not be
//! read ([`RunDiff::note_unread`]), and runs that cover different steps (an interrupted run
//! against a finished one), whose deltas are over the common steps only
//! ([`RunDiff::caveats`]).

use crate::identity::COMPONENTS;
use crate::records::{MetricPoint, RunRecord};
use crate::Error;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One key that differs; `None` where a side lacks it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub component: &'static str,
    pub key: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

/// How one metric differs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricDelta {
    pub name: String,
    pub final_a: Option<f64>,
    pub final_b: Option<f64>,
    /// Best is the minimum, or the maximum for names that read as scores (see [`higher_is_better`]).
    pub best_a: Option<f64>,
    pub best_b: Option<f64>,
    /// Steps that both runs logged.
    pub common_steps: usize,
    /// Largest |b - a| over the common steps.
    pub max_abs_delta: Option<f64>,
    /// The first common step where the values differ bit for bit.
    pub first_different_step: Option<i64>,
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDiff {
    pub a: String,
    pub b: String,
    /// Components whose hash differs, in identity order.
    pub changed_components: Vec<&'static str>,
    pub changes: Vec<Change>,
    pub metrics: Vec<MetricDelta>,
    /// Each run's status (`interrupted` explains a shorter curve).
    pub status_a: &'static str,
    pub status_b: &'static str,
    /// The first and last step each run has metric points at; `None` for a run with none.
    pub steps_a: Option<(i64, i64)>,
    pub steps_b: Option<(i64, i64)>,
    /// Metrics files of either run that could not be read: the deltas leave their points out.
    pub unread: Vec<Unread>,
}

/// A metrics file of one side of a diff that could not be read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Unread {
    /// `run_id@attempt` of the run the file belongs to (its name says).
    pub run: String,
    pub file: String,
    pub reason: String,
}

impl RunDiff {
    /// Note the files among `damaged` (what reading the two runs' metrics met, see
    /// [`crate::archive::Loaded::damaged`]) and which run each belongs to, by its name
    /// (`RUN-aN-c...`). A file of neither run is noted under both.
    pub fn note_unread(&mut self, damaged: &[Error], a: &RunRecord, b: &RunRecord) {
        for error in damaged {
            let (file, reason) = match error {
                Error::Damaged { path, reason } => (path.display().to_string(), reason.clone()),
                Error::SchemaVersion { path, found } => (
                    path.display().to_string(),
                    format!("written with archive schema version {found}"),
                ),
                Error::Io { path, source } => (path.display().to_string(), source.to_string()),
                other => (String::new(), other.to_string()),
            };
            let name = file.rsplit(['/', '\\']).next().unwrap_or_default();
            let owns =
                |run: &RunRecord| name.starts_with(&format!("{}-a{}-c", run.run_id, run.attempt));
            let owners: Vec<&RunRecord> = match (owns(a), owns(b)) {
                (true, _) => vec![a],
                (false, true) => vec![b],
                (false, false) => vec![a, b],
            };
            for run in owners {
                self.unread.push(Unread {
                    run: run.key(),
                    file: file.clone(),
                    reason: reason.clone(),
                });
            }
        }
    }

    /// What the metric deltas do not cover, one sentence each: files that could not be read,
    /// runs with no points, runs that cover different steps.
    pub fn caveats(&self) -> Vec<String> {
        let short = crate::export::short_key;
        let side = |key: &str| if key == self.a { "a" } else { "b" };
        let mut out: Vec<String> = self
            .unread
            .iter()
            .map(|u| {
                format!(
                    "the metrics of {} ({}) could not be read: {} ({}); its curves leave those points out",
                    side(&u.run),
                    short(&u.run),
                    u.file,
                    u.reason
                )
            })
            .collect();
        let covers = |name: &str, steps: Option<(i64, i64)>, status: &str| {
            let status = match status {
                "completed" => String::new(),
                other => format!(" ({other})"),
            };
            match steps {
                Some((first, last)) => format!("{name}: steps {first} to {last}{status}"),
                None => format!("{name}: no metric points{status}"),
            }
        };
        if self.steps_a != self.steps_b {
            out.push(format!(
                "the runs cover different steps ({}; {}): deltas are over the steps both logged",
                covers("a", self.steps_a, self.status_a),
                covers("b", self.steps_b, self.status_b)
            ));
        }
        out
    }
}

/// Whether a larger value of this metric is better: accuracies, F1, AUC, scores, rewards,
/// R² (`r2` as a whole word: `test_r2`, not `layer2`). Everything else (losses, errors such
/// as RMSE, perplexities) is better smaller.
pub fn higher_is_better(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word == "r2")
    {
        return true;
    }
    [
        "acc",
        "f1",
        "auc",
        "score",
        "reward",
        "precision",
        "recall",
        "map",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// Compare two runs and their curves.
pub fn diff_runs(
    a: &RunRecord,
    a_points: &[MetricPoint],
    b: &RunRecord,
    b_points: &[MetricPoint],
) -> RunDiff {
    let mut changed_components = Vec::new();
    let mut changes = Vec::new();
    for (i, component) in COMPONENTS.iter().enumerate() {
        if a.component_hashes[i] != b.component_hashes[i] {
            changed_components.push(*component);
            let (fa, fb) = (flatten(&a.components[i]), flatten(&b.components[i]));
            for key in fa.keys().chain(fb.keys()).collect::<BTreeSet<_>>() {
                let (va, vb) = (fa.get(key), fb.get(key));
                if va != vb {
                    changes.push(Change {
                        component,
                        key: key.clone(),
                        a: va.cloned(),
                        b: vb.cloned(),
                    });
                }
            }
        }
    }
    let (ca, cb) = (curves(a_points), curves(b_points));
    let names: BTreeSet<&str> = ca.keys().chain(cb.keys()).copied().collect();
    let metrics = names
        .into_iter()
        .map(|name| {
            let (xa, xb) = (ca.get(name), cb.get(name));
            let last = |c: Option<&Curve>| c.and_then(|c| c.last()).map(|(_, v)| *v);
            let better = higher_is_better(name);
            let best = |c: Option<&Curve>| {
                c.and_then(|c| {
                    c.iter()
                        .map(|(_, v)| *v)
                        .filter(|v| !v.is_nan())
                        .reduce(|x, y| if (y > x) == better { y } else { x })
                })
            };
            let common = match (xa, xb) {
                (Some(xa), Some(xb)) => common_steps(xa, xb),
                _ => Vec::new(),
            };
            MetricDelta {
                name: name.to_string(),
                final_a: last(xa),
                final_b: last(xb),
                best_a: best(xa),
                best_b: best(xb),
                common_steps: common.len(),
                max_abs_delta: common
                    .iter()
                    .map(|(_, x, y)| (y - x).abs())
                    .reduce(f64::max),
                first_different_step: common
                    .iter()
                    .find(|(_, x, y)| x.to_bits() != y.to_bits())
                    .map(|(s, _, _)| *s),
            }
        })
        .collect();
    let steps = |points: &[MetricPoint]| {
        let steps = points.iter().map(|p| p.step);
        Some((steps.clone().min()?, steps.max()?))
    };
    RunDiff {
        a: a.key(),
        b: b.key(),
        changed_components,
        changes,
        metrics,
        status_a: a.status.as_str(),
        status_b: b.status.as_str(),
        steps_a: steps(a_points),
        steps_b: steps(b_points),
        unread: Vec::new(),
    }
}

/// One metric's points: (step, value) by step, the last value logged at a step kept.
type Curve = Vec<(i64, f64)>;

/// Each metric's curve.
fn curves(points: &[MetricPoint]) -> BTreeMap<&str, Curve> {
    let mut by_name: BTreeMap<&str, Curve> = BTreeMap::new();
    for p in points {
        by_name.entry(&p.name).or_default().push((p.step, p.value));
    }
    for curve in by_name.values_mut() {
        // Stable: of the points logged at one step, the last stays last.
        curve.sort_by_key(|(step, _)| *step);
        let mut kept: Curve = Vec::with_capacity(curve.len());
        for point in curve.drain(..) {
            match kept.last_mut() {
                Some(last) if last.0 == point.0 => *last = point,
                _ => kept.push(point),
            }
        }
        *curve = kept;
    }
    by_name
}

/// (step, a, b) at every step both curves have, in step order.
fn common_steps(a: &Curve, b: &Curve) -> Vec<(i64, f64, f64)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push((a[i].0, a[i].1, b[j].1));
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// A JSON value as `dotted.path -> leaf` (arrays and empty objects are leaves).
pub fn flatten(value: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    walk(&join(k), v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_nested_objects() {
        let f = flatten(&json!({"opt": {"lr": 1, "wd": 0}, "layers": [1, 2]}));
        assert_eq!(
            f.keys().collect::<Vec<_>>(),
            vec!["layers", "opt.lr", "opt.wd"]
        );
    }

    #[test]
    fn curves_compare_at_common_steps_the_last_point_of_a_step_kept() {
        let point = |step, name: &str, value| MetricPoint {
            step,
            name: name.into(),
            value,
            wall_time: chrono::Utc::now(),
        };
        // Out of order, a step logged twice (the second counts), steps only one run has.
        let a = vec![
            point(2, "loss", 0.5),
            point(0, "loss", 2.0),
            point(1, "loss", 9.0),
            point(1, "loss", 1.0),
            point(3, "loss", 0.25),
            point(0, "acc", 0.1),
        ];
        let b = vec![
            point(0, "loss", 2.0),
            point(1, "loss", 1.5),
            point(2, "loss", 0.5),
        ];
        let curves = |points: &[MetricPoint]| {
            curves(points)
                .into_iter()
                .map(|(n, c)| (n.to_string(), c))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            curves(&a)["loss"],
            vec![(0, 2.0), (1, 1.0), (2, 0.5), (3, 0.25)]
        );
        let (ca, cb) = (curves(&a), curves(&b));
        assert_eq!(
            common_steps(&ca["loss"], &cb["loss"]),
            vec![(0, 2.0, 2.0), (1, 1.0, 1.5), (2, 0.5, 0.5)]
        );
        let run = crate::records::test_run("ab", 1, None, 0.5);
        let diff = diff_runs(&run, &a, &run, &b);
        let loss = diff.metrics.iter().find(|m| m.name == "loss").unwrap();
        assert_eq!(
            (loss.final_a, loss.final_b, loss.best_a, loss.best_b),
            (Some(0.25), Some(0.5), Some(0.25), Some(0.5))
        );
        assert_eq!(
            (
                loss.common_steps,
                loss.max_abs_delta,
                loss.first_different_step
            ),
            (3, Some(0.5), Some(1))
        );
        let acc = diff.metrics.iter().find(|m| m.name == "acc").unwrap();
        assert_eq!(
            (acc.final_a, acc.final_b, acc.common_steps),
            (Some(0.1), None, 0)
        );
    }

    #[test]
    fn a_diff_says_what_it_did_not_see() {
        let point = |step, value| MetricPoint {
            step,
            name: "loss".into(),
            value,
            wall_time: chrono::Utc::now(),
        };
        let a = crate::records::test_run("aaaa", 1, None, 0.5);
        let mut b = crate::records::test_run("bbbb", 1, None, 0.5);
        b.status = crate::Status::Interrupted;
        let full: Vec<MetricPoint> = (0..10).map(|s| point(s, 1.0)).collect();
        let same = diff_runs(&a, &full, &a, &full);
        assert!(same.caveats().is_empty(), "{:?}", same.caveats());

        // An interrupted run covers fewer steps.
        let mut diff = diff_runs(&a, &full, &b, &full[..4]);
        assert_eq!((diff.steps_a, diff.steps_b), (Some((0, 9)), Some((0, 3))));
        assert_eq!(
            diff.caveats(),
            vec![
                "the runs cover different steps (a: steps 0 to 9; b: steps 0 to 3 \
                  (interrupted)): deltas are over the steps both logged"
            ]
        );

        // A damaged chunk is told to the run whose name it bears.
        let damaged = |name: &str| Error::Damaged {
            path: std::path::Path::new("runs/metrics/2024-01-01").join(name),
            reason: "truncated".into(),
        };
        diff.note_unread(&[damaged("bbbb-a1-c2-2.parquet")], &a, &b);
        assert_eq!(
            diff.unread,
            vec![Unread {
                run: "bbbb@1".into(),
                file: "runs/metrics/2024-01-01/bbbb-a1-c2-2.parquet".into(),
                reason: "truncated".into()
            }]
        );
        assert!(diff.caveats()[0].starts_with(
            "the metrics of b (bbbb) could not be read: runs/metrics/2024-01-01/bbbb-a1-c2-2.parquet (truncated)"
        ));
        // No points at all: every metric is "not compared" rather than identical.
        let empty = diff_runs(&a, &full, &b, &[]);
        assert_eq!(empty.steps_b, None);
        assert_eq!(empty.metrics[0].common_steps, 0);
        let text = crate::report::diff_text(&empty);
        assert!(
            !text.contains("identical") && text.contains("b: no metric points"),
            "{text}"
        );
    }

    #[test]
    fn score_names() {
        assert!(higher_is_better("test_acc"));
        assert!(!higher_is_better("val_loss"));
        assert!(higher_is_better("test_r2") && higher_is_better("summary.val_r2"));
        assert!(!higher_is_better("layer2_loss") && !higher_is_better("test_rmse"));
    }
}
