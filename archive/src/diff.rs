//! What changed between two runs: which identity components, which keys inside them, and
//! how every metric moved (final value, best value, and at the steps both logged).

use crate::identity::COMPONENTS;
use crate::records::{MetricPoint, RunRecord};
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
}

/// Whether a larger value of this metric is better: accuracies, F1, AUC, scores, rewards.
/// Everything else (losses, errors, perplexities) is better smaller.
pub fn higher_is_better(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
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
    RunDiff {
        a: a.key(),
        b: b.key(),
        changed_components,
        changes,
        metrics,
    }
}

/// A JSON value as `dotted.path -> leaf`.
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
    fn score_names() {
        assert!(higher_is_better("test_acc"));
        assert!(!higher_is_better("val_loss"));
    }
}
