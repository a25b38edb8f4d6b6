//! Runs that share everything but their seeds form a group (same `group_id`); a group's
//! metrics are summarised as mean, sample standard deviation, standard error and N, with the
//! run of every number kept.
//!
//! Replicates (attempts of one identity) that reproduced each other bit for bit add no
//! information, so they count once; the attempts of a nondeterministic identity are samples
//! like any seed.

use crate::records::{RunRecord, Status};
use serde::Serialize;
use std::collections::BTreeMap;

/// mean ± std over the samples of one metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub mean: f64,
    /// Sample standard deviation (N - 1); 0 for a single sample.
    pub std: f64,
    /// std / sqrt(N).
    pub stderr: f64,
    pub n: usize,
    /// `run_id@attempt` of every sample, in order.
    pub runs: Vec<String>,
}

impl Stats {
    pub fn of(samples: &[(String, f64)]) -> Option<Stats> {
        let n = samples.len();
        if n == 0 {
            return None;
        }
        let mean = samples.iter().map(|(_, v)| v).sum::<f64>() / n as f64;
        let var = if n > 1 {
            samples.iter().map(|(_, v)| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let std = var.sqrt();
        Some(Stats {
            mean,
            std,
            stderr: std / (n as f64).sqrt(),
            n,
            runs: samples.iter().map(|(r, _)| r.clone()).collect(),
        })
    }
}

/// One group of runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    pub group_id: String,
    /// The name of its runs (the first run's, when they differ).
    pub name: String,
    pub config: serde_json::Value,
    /// Seeds of every sample, as `source=value` lists.
    pub seeds: Vec<String>,
    pub metrics: BTreeMap<String, Stats>,
}

/// Group completed runs by identity-minus-seeds, in the order groups first appear.
pub fn group_runs(runs: &[RunRecord]) -> Vec<Group> {
    let mut order: Vec<&str> = Vec::new();
    let mut members: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    // One sample per identity, unless its attempts disagree (then each attempt is one).
    let mut counted: std::collections::BTreeSet<&str> = Default::default();
    for run in runs {
        let is_sample = run.status == Status::Completed
            && (run.reproduced == Some(false) || counted.insert(run.run_id.as_str()));
        if is_sample {
            if !members.contains_key(&*run.group_id) {
                order.push(&run.group_id);
            }
            members.entry(&run.group_id).or_default().push(run);
        }
    }
    order
        .into_iter()
        .map(|group_id| {
            let runs = &members[&group_id];
            let mut samples: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
            for run in runs {
                for (metric, value) in &run.summary {
                    samples
                        .entry(metric.to_string())
                        .or_default()
                        .push((run.key(), *value));
                }
            }
            Group {
                name: runs[0].name.clone(),
                config: runs[0].config().clone(),
                seeds: runs.iter().map(|r| seeds_text(&r.components[1])).collect(),
                metrics: samples
                    .iter()
                    .filter_map(|(m, s)| Stats::of(s).map(|st| (m.clone(), st)))
                    .collect(),
                group_id: group_id.to_string(),
            }
        })
        .collect()
}

fn seeds_text(seeds: &serde_json::Value) -> String {
    match seeds {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_run as run;

    #[test]
    fn replicates_count_once_unless_they_disagree() {
        // A reproduced identity counts once, whichever attempt the selection holds.
        let g = group_runs(&[
            run("a", 2, Some(true), 0.9),
            run("a", 3, Some(true), 0.9),
            run("b", 1, None, 0.8),
        ]);
        assert_eq!(g[0].metrics["acc"].n, 2);
        assert_eq!(g[0].metrics["acc"].runs, vec!["a@2", "b@1"]);
        // A nondeterministic one contributes every attempt.
        let g = group_runs(&[
            run("a", 1, Some(false), 0.9),
            run("a", 2, Some(false), 0.91),
        ]);
        assert_eq!(g[0].metrics["acc"].n, 2);
    }

    #[test]
    fn stats_match_numpy() {
        // numpy: x = [0.91, 0.93, 0.92]; x.mean(), x.std(ddof=1), x.std(ddof=1)/sqrt(3)
        // -> 0.92, 0.01, 0.005773502691896...
        let s = Stats::of(&[("a".into(), 0.91), ("b".into(), 0.93), ("c".into(), 0.92)]).unwrap();
        assert!((s.mean - 0.92).abs() < 1e-12);
        assert!((s.std - 0.01).abs() < 1e-12);
        assert!((s.stderr - 0.005773502691896).abs() < 1e-12);
        assert_eq!(s.n, 3);
        assert_eq!(Stats::of(&[("a".into(), 1.0)]).unwrap().std, 0.0);
        assert!(Stats::of(&[]).is_none());
    }
}
