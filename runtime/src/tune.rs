//! Tune: seeded random search, every trial a run of one sweep, the best chosen by a metric.

use crate::config::{Seeds, TrainConfig};
use crate::data::Dataset;
use crate::models::ModelSpec;
use crate::rng::Rng;
use crate::show::{html_table, Show};
use crate::train::{fit, RunOptions, Trained};
use crate::{show_in_jupyter, Error, Result};
use serde::{Deserialize, Serialize};

/// Where random search draws from. Learning rates and weight decays are drawn log-uniformly
/// (they matter by orders of magnitude), dropout uniformly, models from a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchSpace {
    /// (low, high) for a log-uniform learning rate.
    pub lr: (f64, f64),
    /// (low, high) for a log-uniform weight decay; `None` keeps the base config's.
    pub weight_decay: Option<(f64, f64)>,
    /// (low, high) for a uniform dropout; `None` keeps the base config's.
    pub dropout: Option<(f64, f64)>,
    /// Models to pick from; empty keeps the base config's.
    pub models: Vec<ModelSpec>,
}

impl SearchSpace {
    /// Draw one trial's config from `base`.
    pub fn draw(&self, base: &TrainConfig, rng: &mut Rng) -> TrainConfig {
        let log_uniform = |rng: &mut Rng, (lo, hi): (f64, f64)| {
            (lo.ln() + (hi.ln() - lo.ln()) * rng.uniform()).exp()
        };
        let mut c = base.clone();
        c.lr = log_uniform(rng, self.lr);
        if let Some(range) = self.weight_decay {
            c.weight_decay = log_uniform(rng, range);
        }
        if let Some((lo, hi)) = self.dropout {
            c.dropout = lo + (hi - lo) * rng.uniform();
        }
        if !self.models.is_empty() {
            c.model = self.models[rng.below(self.models.len())].clone();
        }
        c
    }
}

/// The trials of a search and the best of them.
pub struct Sweep {
    pub name: String,
    pub metric: String,
    pub trials: Vec<Trained>,
    /// Index of the best trial by `metric`.
    pub best: usize,
}

impl Sweep {
    pub fn best(&self) -> &Trained {
        &self.trials[self.best]
    }
}

/// A random search: how many trials, drawn from which space with which search seed, and the
/// metric that picks the best.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Search {
    pub space: SearchSpace,
    pub trials: usize,
    /// Seeds the draws of configs (not the training inside each trial).
    pub seed: u64,
    /// Maximised if it reads as a score (accuracy...), else minimised.
    pub metric: String,
}

/// Random search: `search.trials` configs drawn from its space with its seed, each trained
/// with `seeds` as a run of the sweep `options.sweep` (default: the run name).
pub fn random_search(
    data: &Dataset,
    base: &TrainConfig,
    search: &Search,
    seeds: &Seeds,
    options: &RunOptions,
) -> Result<Sweep> {
    let Search {
        space,
        trials,
        seed,
        metric,
    } = search;
    let (trials, seed, metric) = (*trials, *seed, metric.as_str());
    if trials == 0 {
        return Err(Error::Invalid(
            "random search needs at least one trial".into(),
        ));
    }
    let sweep = options
        .sweep
        .clone()
        .unwrap_or_else(|| options.name.clone());
    let mut rng = Rng::stream(seed, "random_search");
    let mut done = Vec::new();
    for k in 0..trials {
        let config = space.draw(base, &mut rng);
        let opts = RunOptions {
            name: format!("{}-trial{k}", options.name),
            sweep: Some(sweep.clone()),
            ..options.clone()
        };
        done.push(fit(data, &config, seeds, &opts)?);
    }
    let higher = recipe_archive::diff::higher_is_better(metric);
    let score = |t: &Trained| t.summary.get(metric).copied().unwrap_or(f64::NAN);
    let best = (0..done.len())
        .filter(|&i| score(&done[i]).is_finite())
        .reduce(|a, b| {
            if (score(&done[b]) > score(&done[a])) == higher && score(&done[b]) != score(&done[a]) {
                b
            } else {
                a
            }
        })
        .ok_or_else(|| Error::Invalid(format!("no trial reported a finite {metric:?}")))?;
    Ok(Sweep {
        name: sweep,
        metric: metric.into(),
        trials: done,
        best,
    })
}

impl Sweep {
    fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let headers = [
            "trial",
            "run",
            "model",
            "lr",
            "weight decay",
            "dropout",
            &self.metric,
        ]
        .map(String::from)
        .to_vec();
        let rows = self
            .trials
            .iter()
            .enumerate()
            .map(|(i, t)| {
                vec![
                    format!("{i}{}", if i == self.best { " ★" } else { "" }),
                    t.run_id().chars().take(12).collect(),
                    t.config.model.label(),
                    format!("{:.2e}", t.config.lr),
                    format!("{:.2e}", t.config.weight_decay),
                    format!("{:.2}", t.config.dropout),
                    t.summary
                        .get(&self.metric)
                        .map_or("–".into(), |v| format!("{v:.4}")),
                ]
            })
            .collect();
        (headers, rows)
    }
}

impl Show for Sweep {
    fn text(&self) -> String {
        let (h, rows) = self.table();
        let mut out = format!(
            "sweep {}: {} trials, best by {} is trial {}\n{}\n",
            self.name,
            self.trials.len(),
            self.metric,
            self.best,
            h.join(" | ")
        );
        for r in rows {
            out += &r.join(" | ");
            out += "\n";
        }
        out
    }
    fn html(&self) -> String {
        let (h, rows) = self.table();
        format!(
            "<p>sweep <b>{}</b>: best by {} is trial {}</p>{}",
            crate::show::escape(&self.name),
            self.metric,
            self.best,
            html_table(&h, &rows)
        )
    }
}

show_in_jupyter!(Sweep);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_search_is_seeded_and_archives_one_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::digits().unwrap().subset(400, 100).unwrap();
        let base = TrainConfig {
            steps: 100,
            eval_every: 50,
            ..TrainConfig::default()
        };
        let space = SearchSpace {
            lr: (1e-4, 1e-2),
            weight_decay: None,
            dropout: Some((0.0, 0.3)),
            models: vec![
                ModelSpec::Mlp { hidden: vec![16] },
                ModelSpec::Mlp { hidden: vec![64] },
            ],
        };
        let options =
            RunOptions::in_archive(recipe_archive::Archive::open(dir.path()).unwrap(), "search")
                .quiet();
        let search = Search {
            space: space.clone(),
            trials: 3,
            seed: 9,
            metric: "val_acc".into(),
        };
        let sweep = random_search(&data, &base, &search, &Seeds::all(1), &options).unwrap();
        assert_eq!(sweep.trials.len(), 3);
        let best = sweep.best().metric("val_acc").unwrap();
        assert!(sweep
            .trials
            .iter()
            .all(|t| t.metric("val_acc").unwrap() <= best));
        let lrs: Vec<f64> = sweep.trials.iter().map(|t| t.config.lr).collect();
        assert!(lrs.iter().all(|lr| (1e-4..=1e-2).contains(lr)));
        // Same search seed, same draws.
        let mut r1 = Rng::stream(9, "random_search");
        assert_eq!(space.draw(&base, &mut r1).lr, lrs[0]);
        let runs = recipe_archive::Archive::open(dir.path())
            .unwrap()
            .runs()
            .unwrap()
            .value;
        assert!(runs.len() == 3 && runs.iter().all(|r| r.sweep.as_deref() == Some("search")));
    }
}
