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
    let curves = |points: &[MetricPoint]| {
        let mut by_name: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
        for p in points {
            by_name
                .entry(p.name.clone())
                .or_default()
                .insert(p.step, p.value);
        }
        by_name
    };
    let (ca, cb) = (curves(a_points), curves(b_points));
    let names: BTreeSet<&String> = ca.keys().chain(cb.keys()).collect();
    let metrics = names
        .into_iter()
        .map(|name| {
            let (xa, xb) = (ca.get(name), cb.get(name));
            let last =
                |c: Option<&BTreeMap<i64, f64>>| c.and_then(|c| c.values().next_back().copied());
            let better = higher_is_better(name);
            let best = |c: Option<&BTreeMap<i64, f64>>| {
                c.and_then(|c| {
                    c.values().copied().filter(|v| !v.is_nan()).reduce(|x, y| {
                        if (y > x) == better {
                            y
                        } else {
                            x
                        }
                    })
                })
            };
            let common: Vec<(i64, f64, f64)> = match (xa, xb) {
                (Some(xa), Some(xb)) => xa
                    .iter()
                    .filter_map(|(s, va)| xb.get(s).map(|vb| (*s, *va, *vb)))
                    .collect(),
                _ => Vec::new(),
            };
            MetricDelta {
                name: name.clone(),
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
    fn score_names() {
        assert!(higher_is_better("test_acc"));
        assert!(!higher_is_better("val_loss"));
    }
}
