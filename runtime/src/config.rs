//! The typed training config, every default in one place with its reason, and the seeds:
//! one per source of randomness. Both are part of the run's identity, fixed before the first
//! step.
//!
//! A config that cannot be right is refused before a run begins: read from JSON, an unknown
//! field (at any depth) is an error naming the nearest known one; [`TrainConfig::validate`]
//! gives a one-line reason for a value that cannot train. The nearest name is a plain edit
//! distance over the names serde's own error lists, written here (a dozen lines) rather than
//! added as a dependency that every notebook kernel would compile.

use crate::models::ModelSpec;
use crate::optim::Schedule;
use crate::task::Task;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A run has diverged when its training loss is not finite, or when it stays above
/// `DIVERGENCE_FACTOR` times the loss at init for `DIVERGENCE_STEPS` consecutive steps.
/// The loss at init is the larger of its expected value (-ln(1/C), or the prior entropy with
/// `init_bias_from_priors`; for regression the targets' mean square, or variance) and the one
/// measured before the first step. Healthy runs stay
/// far below: their training loss falls from the loss at init within a few steps, and a
/// spike of a bad batch lasts one step, not ten.
pub const DIVERGENCE_FACTOR: f64 = 10.0;
/// See [`DIVERGENCE_FACTOR`].
pub const DIVERGENCE_STEPS: usize = 10;

/// How to train. `TrainConfig::default()` is the recipe's starting point.
///
/// Read from JSON (`recipe train --config`, an archived run), a field this struct does not
/// have is an error that names the nearest one (`stepz`: "did you mean steps?"), so a typo
/// never trains with the default silently. `fit` refuses a config that [`validate`] rejects
/// before the run is archived, and ends a run whose loss diverges (the rule is at
/// [`DIVERGENCE_FACTOR`]) with status `diverged` at that step.
///
/// [`validate`]: TrainConfig::validate
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// A small MLP (one hidden layer of 64): the skeleton to beat before anything bigger.
    pub model: ModelSpec,
    /// Adam at 3e-4: "the safest" default of the recipe.
    pub lr: f64,
    /// Constant: any decay is an explicit choice, made late.
    pub schedule: Schedule,
    /// Adam moments (PyTorch's defaults).
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay; 0 until the regularize step.
    pub weight_decay: f64,
    /// Examples per step.
    pub batch_size: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Evaluate on the whole validation split every this many steps (and at the end).
    pub eval_every: usize,
    /// Clip the global gradient norm to this value; none by default.
    pub grad_clip: Option<f64>,
    /// Stop when validation loss has not improved for this many evaluations; off by default.
    pub early_stopping: Option<usize>,
    /// Dropout probability (0 = off until the regularize step).
    pub dropout: f64,
    /// Random 1-pixel shifts of training images; off by default.
    pub augment: bool,
    /// Initialise the final bias well: the log class priors, or for regression the mean
    /// target ("init well"); off by default so that the loss-at-init check sees the plain
    /// -ln(1/C) (regression: the targets' mean square).
    pub init_bias_from_priors: bool,
    /// Replace every input by zeros: the input-independent baseline.
    pub zero_inputs: bool,
    /// Save params and optimizer state as a blob every this many steps (and at the end).
    pub checkpoint_every: Option<usize>,
    /// The checkpoint blob (blake3 hex) this run resumed from, if any.
    pub resume_from: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelSpec::default(),
            lr: 3e-4,
            schedule: Schedule::Constant {},
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            batch_size: 64,
            steps: 1000,
            eval_every: 100,
            grad_clip: None,
            early_stopping: None,
            dropout: 0.0,
            augment: false,
            init_bias_from_priors: false,
            zero_inputs: false,
            checkpoint_every: None,
            resume_from: None,
        }
    }
}

impl TrainConfig {
    /// A config from JSON text, with only the fields that differ from the default; an
    /// unknown field or model/schedule kind is an error naming the nearest known one.
    pub fn from_json(text: &str) -> Result<TrainConfig> {
        serde_json::from_str(text).map_err(|e| not_a_config(&e))
    }

    /// A config from a JSON value (an archived run's), as [`TrainConfig::from_json`].
    pub fn from_value(value: serde_json::Value) -> Result<TrainConfig> {
        serde_json::from_value(value).map_err(|e| not_a_config(&e))
    }

    /// The config an archived run of the built-in trainer was made with; a run logged by
    /// other code is an error that says so.
    pub fn of_run(run: &recipe_archive::RunRecord) -> Result<TrainConfig> {
        Self::from_value(run.config().clone()).map_err(|e| {
            Error::Data(format!(
                "run {} was not made by the built-in trainer ({e})",
                run.short()
            ))
        })
    }

    /// Refuse a config that cannot train, with a one-line reason naming the field: rates,
    /// counts and widths that must be positive, probabilities in their range, a schedule that
    /// fits the run. `fit` calls it before the run is archived.
    pub fn validate(&self) -> Result<()> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let unit = |x: f64| (0.0..1.0).contains(&x);
        let mut rules: Vec<(bool, String)> = vec![
            (
                positive(self.lr),
                format!("lr must be finite and above 0, not {}", self.lr),
            ),
            (
                unit(self.beta1),
                format!("beta1 must be in [0, 1), not {}", self.beta1),
            ),
            (
                unit(self.beta2),
                format!("beta2 must be in [0, 1), not {}", self.beta2),
            ),
            (
                positive(self.eps),
                format!("eps must be finite and above 0, not {}", self.eps),
            ),
            (
                self.weight_decay.is_finite() && self.weight_decay >= 0.0,
                format!(
                    "weight_decay must be finite and at least 0, not {}",
                    self.weight_decay
                ),
            ),
            (
                unit(self.dropout),
                format!("dropout must be in [0, 1), not {}", self.dropout),
            ),
            (
                self.batch_size >= 1,
                "batch_size must be at least 1, not 0".into(),
            ),
            (self.steps >= 1, "steps must be at least 1, not 0".into()),
            (
                self.eval_every >= 1,
                "eval_every must be at least 1, not 0".into(),
            ),
            (
                self.checkpoint_every != Some(0),
                "checkpoint_every must be at least 1 (or null for none), not 0".into(),
            ),
            (
                self.early_stopping != Some(0),
                "early_stopping must be at least 1 evaluation (or null for none), not 0".into(),
            ),
            (
                self.grad_clip.is_none_or(positive),
                format!(
                    "grad_clip must be finite and above 0 (or null for none), not {:?}",
                    self.grad_clip
                ),
            ),
        ];
        rules.extend(match &self.model {
            ModelSpec::Mlp { hidden } => vec![(
                !hidden.contains(&0),
                format!("model.hidden widths must each be at least 1, not {hidden:?}"),
            )],
            ModelSpec::ConvNet { channels, hidden } => vec![
                (
                    !channels.contains(&0),
                    format!("model.channels must each be at least 1, not {channels:?}"),
                ),
                (
                    *hidden >= 1,
                    "model.hidden must be at least 1, not 0".into(),
                ),
            ],
            ModelSpec::ResNet { channels, .. } => vec![(
                *channels >= 1,
                "model.channels must be at least 1, not 0".into(),
            )],
            ModelSpec::Gpt {
                width,
                heads,
                layers,
            } => vec![
                (
                    *heads >= 1 && *width >= 1 && width % heads == 0,
                    format!(
                        "model.width ({width}) must be a multiple of model.heads ({heads}), \
                         both at least 1"
                    ),
                ),
                (
                    *layers >= 1,
                    "model.layers must be at least 1, not 0".into(),
                ),
            ],
            // A net of the notebook's own checks its choices when it is built.
            ModelSpec::Custom(_) => vec![],
        });
        rules.extend(match self.schedule {
            Schedule::Constant {} => vec![],
            Schedule::Cosine { warmup, min_factor } => vec![
                (
                    warmup < self.steps,
                    format!(
                        "schedule.warmup ({warmup}) must be shorter than steps ({})",
                        self.steps
                    ),
                ),
                (
                    (0.0..=1.0).contains(&min_factor),
                    format!("schedule.min_factor must be in [0, 1], not {min_factor}"),
                ),
            ],
            Schedule::Step { every, factor } => vec![
                (
                    every >= 1,
                    "schedule.every must be at least 1, not 0".into(),
                ),
                (
                    positive(factor),
                    format!("schedule.factor must be finite and above 0, not {factor}"),
                ),
            ],
        });
        match rules.into_iter().find(|(ok, _)| !ok) {
            Some((_, reason)) => Err(Error::Invalid(format!("invalid config: {reason}"))),
            None => Ok(()),
        }
    }

    /// The model this config describes, for `data`, with parameters drawn from the init
    /// seed and dropout masks from the dropout seed.
    pub fn build_model(
        &self,
        data: &crate::Dataset,
        seeds: &Seeds,
    ) -> crate::Result<(Box<dyn crate::Model>, std::sync::Arc<crate::params::Params>)> {
        let task = data.task();
        let zoo = !matches!(self.model, ModelSpec::Custom(_));
        if zoo && self.model.is_sequence_model() != matches!(task, Task::NextToken { .. }) {
            let wants = if self.model.is_sequence_model() {
                "windows of text"
            } else {
                "one output per example"
            };
            return Err(crate::Error::Invalid(format!(
                "{} is for {wants}, but {} asks for {}: use ModelSpec::Gpt (or a sequence \
                 model of your own) for text, and the MLP, ConvNet or ResNet for classes and \
                 regression",
                self.model.label(),
                data.name,
                task.describe()
            )));
        }
        let params = crate::params::Params::new(seeds.init);
        let model = self.model.build(
            &data.shape,
            data.task().outputs(),
            self.dropout,
            seeds.dropout,
            &params,
        )?;
        Ok((model, params))
    }
}

/// A JSON error as a one-line reason, with "did you mean ...?" when serde names an unknown
/// field or kind and lists the known ones (`unknown field `stepz`, expected one of ...`).
fn not_a_config(e: &serde_json::Error) -> Error {
    let message = e.to_string();
    let hint = nearest_known(&message)
        .map(|name| format!("; did you mean {name}?"))
        .unwrap_or_default();
    Error::Invalid(format!("not a TrainConfig: {message}{hint}"))
}

/// The known name nearest the unknown one in serde's message, when it is near enough to be
/// a typo: at most a third of the name's letters (and at least one) edited.
fn nearest_known(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (unknown, expected) = rest.split_once('`')?;
    // The known names are the quoted ones: every second piece between backticks.
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|known| (edit_distance(unknown, known), known))
        .min()
        .filter(|(distance, _)| *distance <= (unknown.chars().count() / 3).max(1))
        .map(|(_, known)| known)
}

/// Levenshtein distance: the fewest single-letter insertions, deletions and substitutions
/// that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // row[j]: the distance between the prefix of `a` read so far and b[..j].
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// One seed per source of randomness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeds {
    /// Initial weights.
    pub init: u64,
    /// The order examples are visited in.
    pub data_order: u64,
    /// Dropout masks.
    pub dropout: u64,
    /// Augmentation draws.
    pub augmentation: u64,
    /// The tokens a text model's samples draw (the samples archived with its run).
    pub sampling: u64,
}

impl Seeds {
    /// The same seed for every source.
    pub fn all(seed: u64) -> Seeds {
        Seeds {
            init: seed,
            data_order: seed,
            dropout: seed,
            augmentation: seed,
            sampling: seed,
        }
    }

    /// As the archive stores them.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            ("augmentation".to_string(), self.augmentation),
            ("data_order".to_string(), self.data_order),
            ("dropout".to_string(), self.dropout),
            ("init".to_string(), self.init),
            ("sampling".to_string(), self.sampling),
        ])
    }

    /// Back from an archived seeds component (missing sources read as 0).
    pub fn from_json(value: &serde_json::Value) -> Seeds {
        let get = |k: &str| value.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        Seeds {
            init: get("init"),
            data_order: get("data_order"),
            dropout: get("dropout"),
            augmentation: get("augmentation"),
            sampling: get("sampling"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(json: &str) -> String {
        let config = TrainConfig::from_json(json).expect("reads as a config");
        match config.validate() {
            Err(Error::Invalid(reason)) => reason,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn issue_21_an_unknown_field_names_the_nearest_known_one() {
        let e = TrainConfig::from_json(r#"{"stepz": 5}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `stepz`"), "{e}");
        assert!(e.ends_with("did you mean steps?"), "{e}");
        // Nested specs too: the model's fields and kinds, the schedule's.
        let nested = [
            (
                r#"{"model": {"kind": "mlp", "hiden": [8]}}"#,
                "did you mean hidden?",
            ),
            (
                r#"{"model": {"kind": "convnet", "hidden": 8}}"#,
                "did you mean conv_net?",
            ),
            (
                r#"{"schedule": {"kind": "step", "every": 5, "factr": 0.5}}"#,
                "did you mean factor?",
            ),
        ];
        for (json, expect) in nested {
            let e = TrainConfig::from_json(json).unwrap_err().to_string();
            assert!(e.contains(expect), "{json}: {e}");
        }
        // A field given to the constant schedule, which has none, is refused too.
        let e = TrainConfig::from_json(r#"{"schedule": {"kind": "constant", "warmup": 5}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `warmup`"), "{e}");
        assert_eq!(
            serde_json::to_string(&Schedule::Constant {}).unwrap(),
            r#"{"kind":"constant"}"#,
            "the archived form (and so every run id) is unchanged"
        );
        // Far from every known name: no guess.
        let e = TrainConfig::from_json(r#"{"epochs": 5}"#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("did you mean"), "{e}");
        // Known fields still read, and a default config survives a round trip.
        let json = serde_json::to_string(&TrainConfig::default()).unwrap();
        assert_eq!(
            TrainConfig::from_json(&json).unwrap(),
            TrainConfig::default()
        );
    }

    #[test]
    fn issue_21_a_config_that_cannot_train_is_refused_with_a_one_line_reason() {
        assert!(TrainConfig::default().validate().is_ok());
        for (json, expect) in [
            (r#"{"lr": 0}"#, "lr must be finite and above 0"),
            (r#"{"lr": -1e-3}"#, "lr must be finite and above 0"),
            (r#"{"dropout": 1.0}"#, "dropout must be in [0, 1)"),
            (r#"{"batch_size": 0}"#, "batch_size must be at least 1"),
            (r#"{"steps": 0}"#, "steps must be at least 1"),
            (r#"{"eval_every": 0}"#, "eval_every must be at least 1"),
            (
                r#"{"checkpoint_every": 0}"#,
                "checkpoint_every must be at least 1",
            ),
            (
                r#"{"early_stopping": 0}"#,
                "early_stopping must be at least 1",
            ),
            (
                r#"{"grad_clip": 0}"#,
                "grad_clip must be finite and above 0",
            ),
            (r#"{"beta2": 1}"#, "beta2 must be in [0, 1)"),
            (
                r#"{"model": {"kind": "conv_net", "channels": [0, 4], "hidden": 8}}"#,
                "model.channels must each be at least 1",
            ),
            (
                r#"{"model": {"kind": "mlp", "hidden": [16, 0]}}"#,
                "model.hidden widths must each be at least 1",
            ),
            (
                r#"{"model": {"kind": "res_net", "channels": 0, "blocks": 1}}"#,
                "model.channels must be at least 1",
            ),
            (
                r#"{"steps": 10, "schedule": {"kind": "cosine", "warmup": 10, "min_factor": 0.1}}"#,
                "schedule.warmup (10) must be shorter than steps (10)",
            ),
            (
                r#"{"schedule": {"kind": "step", "every": 0, "factor": 0.5}}"#,
                "schedule.every must be at least 1",
            ),
        ] {
            let reason = reason(json);
            assert!(reason.starts_with("invalid config: "), "{json}: {reason}");
            assert!(reason.contains(expect), "{json}: {reason}");
            assert!(!reason.contains('\n'), "{json}: {reason}");
        }
    }

    #[test]
    fn edit_distance_counts_single_letter_edits() {
        assert_eq!(edit_distance("stepz", "steps"), 1);
        assert_eq!(edit_distance("hiden", "hidden"), 1);
        assert_eq!(edit_distance("", "lr"), 2);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
