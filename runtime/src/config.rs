//! The typed training config, every default in one place with its reason, and the seeds:
//! one per source of randomness. Both are part of the run's identity, fixed before the first
//! step.

use crate::models::ModelSpec;
use crate::optim::Schedule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How to train. `TrainConfig::default()` is the recipe's starting point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Set the final bias to log class priors ("init well"); off by default so that the
    /// loss-at-init check sees the plain -ln(1/C).
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
            schedule: Schedule::Constant,
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
    /// The model this config describes, for `data`, with parameters drawn from the init
    /// seed and dropout masks from the dropout seed.
    pub fn build_model(
        &self,
        data: &crate::Dataset,
        seeds: &Seeds,
    ) -> crate::Result<(Box<dyn crate::Model>, std::sync::Arc<crate::params::Params>)> {
        let params = crate::params::Params::new(seeds.init);
        let model = self.model.build(
            &data.shape,
            data.num_classes(),
            self.dropout,
            seeds.dropout,
            &params,
        )?;
        Ok((model, params))
    }
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
}

impl Seeds {
    /// The same seed for every source.
    pub fn all(seed: u64) -> Seeds {
        Seeds {
            init: seed,
            data_order: seed,
            dropout: seed,
            augmentation: seed,
        }
    }

    /// As the archive stores them.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            ("augmentation".to_string(), self.augmentation),
            ("data_order".to_string(), self.data_order),
            ("dropout".to_string(), self.dropout),
            ("init".to_string(), self.init),
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
        }
    }
}
