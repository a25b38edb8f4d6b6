//! Your own net: a model defined in a notebook cell, trained by the same `fit` as the zoo.
//!
//! A person writes their net the way candle-nn writes layers (a plain struct, a constructor
//! taking a `VarBuilder`), implements [`Model`] for it, and wraps its constructor:
//!
//! ```ignore
//! let spec = ModelSpec::custom("tiny-mlp", json!({"hidden": 32}), |vb, io| {
//!     TinyMlp::new(io.inputs(), 32, io.outputs, vb)
//! })?;
//! let config = TrainConfig { model: spec, ..TrainConfig::default() };
//! ```
//!
//! The `VarBuilder` is the runtime's seeded one (one stream per parameter name), so the net
//! starts from the same bits in every process and at every thread count. The name and the
//! hyperparameters go into the run's config (its identity); the code is in the identity
//! through the cell's hash and the hash of the session's cells before it.
//!
//! A builder is code, which an archive cannot hold. An archived run names its model, and
//! reloading it (predictions, ensembles, resume, verify in the notebook) takes the builder
//! that this session defined under that name, with the same hyperparameters; without one
//! the error says to run the defining cell first. This file is that one map and nothing
//! else: the zoo never reads it.

use crate::models::{Dropout, Model};
use crate::{Error, Result};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// What a builder knows about the data when it builds: the shape of one example, how many
/// outputs the task wants (one per class, or 1 for regression), and the run's dropout settings.
#[derive(Clone, Debug)]
pub struct ModelIo {
    /// One example's shape, e.g. `[1, 8, 8]` for an 8x8 grayscale image.
    pub shape: Vec<usize>,
    /// Number of outputs per example: the number of classes, or 1 for regression.
    pub outputs: usize,
    /// The config's dropout probability.
    pub dropout: f64,
    /// The run's dropout seed.
    pub dropout_seed: u64,
}

impl ModelIo {
    /// Values per example (the product of the shape): the input width of a first dense layer.
    pub fn inputs(&self) -> usize {
        self.shape.iter().product()
    }

    /// Dropout with the config's probability, its masks drawn from the run's dropout seed.
    /// Call [`Dropout::at_step`] from [`Model::reseed_dropout`] so a resumed run draws the
    /// masks an uninterrupted one would.
    pub fn dropout(&self) -> Result<Dropout> {
        Dropout::new(self.dropout, self.dropout_seed)
    }
}

type Builder = Arc<dyn Fn(VarBuilder<'static>, &ModelIo) -> Result<Box<dyn Model>> + Send + Sync>;

/// A model defined in a notebook: its name and hyperparameters (archived) and its builder
/// (this session's code). Two are equal when their name and hyperparameters are.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomModel {
    /// The name runs, tables and diffs show.
    pub name: String,
    /// Whatever the builder's choices are, as JSON (`null` when there are none).
    #[serde(default)]
    pub hyper: serde_json::Value,
    #[serde(skip)]
    build: Option<Builder>,
}

impl CustomModel {
    /// A model named `name` with hyperparameters `hyper`, built by `build`, remembered by
    /// this session under its name so archived runs of it can be reloaded.
    pub fn new<M, E, F>(name: &str, hyper: impl Serialize, build: F) -> Result<CustomModel>
    where
        M: Model + 'static,
        E: fmt::Display,
        F: Fn(VarBuilder<'static>, &ModelIo) -> std::result::Result<M, E> + Send + Sync + 'static,
    {
        if name.trim().is_empty() {
            return Err(Error::Invalid("a model needs a name".into()));
        }
        let hyper = serde_json::to_value(hyper)
            .map_err(|e| Error::Invalid(format!("hyperparameters of {name}: {e}")))?;
        let label = name.to_string();
        let build: Builder = Arc::new(move |vb, io| {
            build(vb, io)
                .map(|m| Box::new(m) as Box<dyn Model>)
                .map_err(|e| Error::Invalid(format!("building {label}: {e}")))
        });
        let model = CustomModel {
            name: name.into(),
            hyper,
            build: Some(build),
        };
        defined().insert(model.name.clone(), model.clone());
        Ok(model)
    }

    /// Build it for `io` from `vb`. A model read from an archive uses the builder this
    /// session defined under its name.
    pub fn build(&self, vb: VarBuilder<'static>, io: &ModelIo) -> Result<Box<dyn Model>> {
        match &self.build {
            Some(build) => build(vb, io),
            None => self.defined_here()?.build(vb, io),
        }
    }

    /// This session's definition of the model an archive names.
    fn defined_here(&self) -> Result<CustomModel> {
        let known = defined();
        let here = known.get(&self.name).ok_or_else(|| {
            Error::Invalid(format!(
                "the model {:?} was defined in a notebook cell, and this session has not \
                 defined it: run the cell that makes ModelSpec::custom({:?}, ..) first",
                self.name, self.name
            ))
        })?;
        if here.hyper != self.hyper {
            return Err(Error::Invalid(format!(
                "the model {:?} was trained with hyperparameters {}; this session defines \
                 it with {}: run the cell that defines it as it was",
                self.name, self.hyper, here.hyper
            )));
        }
        Ok(here.clone())
    }
}

impl PartialEq for CustomModel {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.hyper == other.hyper
    }
}

impl fmt::Debug for CustomModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomModel")
            .field("name", &self.name)
            .field("hyper", &self.hyper)
            .finish_non_exhaustive()
    }
}

/// The models this process has defined, by name; the latest definition wins (a cell run
/// again redefines its model).
fn defined() -> std::sync::MutexGuard<'static, BTreeMap<String, CustomModel>> {
    static DEFINED: Mutex<BTreeMap<String, CustomModel>> = Mutex::new(BTreeMap::new());
    // An insert or a clone cannot leave the map half-updated, so a poisoned lock is usable.
    DEFINED.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::load_run;
    use crate::checks::{run_all, CheckContext};
    use crate::train::testing::archived;
    use crate::{fit, Dataset, ModelSpec, Seeds, TrainConfig};
    use candle_core::{Module, Tensor};
    use candle_nn::{linear, Linear};
    use serde_json::json;

    /// A net as a notebook writes it: candle-nn layers, nothing from the zoo.
    struct TwoLayer {
        fc1: Linear,
        head: Linear,
        /// A planted bug: subtract the batch mean (mixes examples).
        mix_batch: bool,
    }

    impl TwoLayer {
        fn new(io: &ModelIo, hidden: usize, vb: VarBuilder) -> candle_core::Result<TwoLayer> {
            Ok(TwoLayer {
                fc1: linear(io.inputs(), hidden, vb.pp("fc1"))?,
                head: linear(hidden, io.outputs, vb.pp("head"))?,
                mix_batch: false,
            })
        }
    }

    impl Model for TwoLayer {
        fn forward(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
            let mut x = x.flatten_from(1)?; // (B, D)
            if self.mix_batch {
                x = x.broadcast_sub(&x.mean_keepdim(0)?)?;
            }
            self.head.forward(&self.fc1.forward(&x)?.relu()?) // (B, C)
        }
        fn first_weight(&self) -> Option<&str> {
            Some("fc1.weight")
        }
    }

    fn spec(name: &str, hidden: usize) -> ModelSpec {
        ModelSpec::custom(name, json!({ "hidden": hidden }), move |vb, io| {
            TwoLayer::new(io, hidden, vb)
        })
        .unwrap()
    }

    fn config(model: ModelSpec) -> TrainConfig {
        TrainConfig {
            model,
            lr: 1e-3,
            steps: 120,
            eval_every: 60,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn issue_22_a_net_of_your_own_trains_bit_for_bit_and_passes_the_recipes_checks() {
        let data = Dataset::digits().unwrap().subset(400, 200).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = config(spec("two-layer", 32));
        let first = fit(
            &data,
            &config,
            &Seeds::all(3),
            &archived(dir.path(), "mine"),
        )
        .unwrap();
        let again = fit(
            &data,
            &config,
            &Seeds::all(3),
            &archived(dir.path(), "mine"),
        )
        .unwrap();
        assert!(first.metric("test_acc").unwrap() > 0.5);
        assert_eq!(first.curves, again.curves, "same identity, same bits");
        let (a, b) = (first.run.clone().unwrap(), again.run.clone().unwrap());
        assert_eq!((&a.run_id, a.attempt), (&b.run_id, 1), "same identity");
        assert_eq!(
            (b.attempt, b.reproduced),
            (2, Some(true)),
            "a replicate, reproduced"
        );
        assert!(first.checks.iter().all(|c| c.passed), "{:?}", first.checks);

        // The name and hyperparameters are the config's; the kind says whose code it is.
        let archived_config = serde_json::to_value(&config).unwrap();
        assert_eq!(
            archived_config["model"],
            json!({"kind": "custom", "name": "two-layer", "hyper": {"hidden": 32}})
        );

        // Reloaded from the archive, it is rebuilt by this session's definition.
        let archive = recipe_archive::Archive::open(dir.path()).unwrap();
        let run = a.clone();
        let (model, _) = load_run(&archive, &run, &data).unwrap();
        let (x, _) = data.batch(&[0, 1], &candle_core::Device::Cpu).unwrap();
        let reloaded = model.forward(&x, false).unwrap().to_vec2::<f32>().unwrap();
        let trained = first
            .model
            .forward(&x, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(reloaded, trained);

        let findings = run_all(&CheckContext {
            data: &data,
            config: config.clone(),
            seeds: Seeds::all(3),
        })
        .unwrap();
        let failed: Vec<_> = findings.iter().filter(|f| !f.check.passed).collect();
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[test]
    fn issue_22_a_change_in_the_cells_before_the_training_cell_is_a_new_run_and_the_diff_says_so() {
        use crate::show::Show;
        let data = Dataset::digits().unwrap().subset(100, 50).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The same training cell after two versions of the cell that defines the net.
        let options = |history: &str| crate::RunOptions {
            cell_hash: Some("training-cell".into()),
            cell_history_hash: Some(history.into()),
            ..archived(dir.path(), "mine")
        };
        let config = TrainConfig {
            steps: 5,
            eval_every: 5,
            ..config(spec("defined-twice", 8))
        };
        let (v1, v2) = (blake3::hash(b"v1").to_hex(), blake3::hash(b"v2").to_hex());
        let a = fit(&data, &config, &Seeds::all(1), &options(&v1)).unwrap();
        let b = fit(&data, &config, &Seeds::all(1), &options(&v2)).unwrap();
        let (a, b) = (a.run.unwrap(), b.run.unwrap());
        assert_ne!(a.run_id, b.run_id, "not a replicate");
        assert_eq!((a.attempt, b.attempt), (1, 1));
        let archive = recipe_archive::Archive::open(dir.path()).unwrap();
        let text = crate::reports::diff(&archive, &a, &b).unwrap().text();
        assert!(text.contains("identity: code changed"), "{text}");
        assert!(text.contains("a cell run before it changed"), "{text}");
        // Hashes show as their first 12 digits: enough to tell them apart, one line each.
        assert!(
            text.contains(&format!("{}…", &v1[..12])) && !text.contains(v1.as_str()),
            "{text}"
        );
    }

    #[test]
    fn issue_22_a_net_of_your_own_resumes_bit_for_bit_and_ensembles_from_the_archive() {
        use crate::analysis::ensemble_runs;
        use crate::train::resume;
        let data = Dataset::digits().unwrap().subset(300, 100).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig {
            steps: 60,
            eval_every: 30,
            checkpoint_every: Some(30),
            ..config(spec("resumable", 16))
        };
        let straight = fit(
            &data,
            &config,
            &Seeds::all(4),
            &archived(dir.path(), "straight"),
        )
        .unwrap();
        let half = TrainConfig {
            steps: 30,
            ..config.clone()
        };
        let half = fit(&data, &half, &Seeds::all(4), &archived(dir.path(), "half")).unwrap();
        let archive = recipe_archive::Archive::open(dir.path()).unwrap();
        let resumed = resume(
            &data,
            half.run.as_ref().unwrap(),
            &archive,
            60,
            &archived(dir.path(), "resumed"),
        )
        .unwrap();
        let tail = |t: &crate::Trained| -> Vec<(i64, u64)> {
            (t.curves["train_loss"].iter())
                .filter(|(s, _)| *s >= 30)
                .map(|(s, v)| (*s, v.to_bits()))
                .collect()
        };
        assert_eq!(tail(&straight).len(), 30);
        assert_eq!(tail(&straight), tail(&resumed));

        // Two archived seeds of it, reloaded by this session's definition, as one ensemble.
        let other = fit(
            &data,
            &config,
            &Seeds::all(5),
            &archived(dir.path(), "seed-5"),
        )
        .unwrap();
        let runs = [straight.run.clone().unwrap(), other.run.clone().unwrap()];
        let ensemble = ensemble_runs(&archive, &runs, &data, "test").unwrap();
        assert_eq!(ensemble.members.len(), 2);
        let member = |t: &crate::Trained| t.metric("test_acc").unwrap();
        assert_eq!(ensemble.members[0].1.to_bits(), member(&straight).to_bits());
        assert_eq!(ensemble.members[1].1.to_bits(), member(&other).to_bits());
    }

    #[test]
    fn issue_22_a_net_whose_parameters_get_no_gradient_fails_at_its_first_step() {
        // candle-nn's LayerNorm runs a fused kernel without a backward pass: nothing before
        // it would ever learn, and the run would look like a run.
        struct Cut {
            fc1: Linear,
            norm: candle_nn::LayerNorm,
            head: Linear,
        }
        impl Model for Cut {
            fn forward(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
                let h = self.norm.forward(&self.fc1.forward(&x.flatten_from(1)?)?)?;
                self.head.forward(&h)
            }
        }
        let data = Dataset::digits().unwrap().subset(100, 50).unwrap();
        let cut = ModelSpec::custom(
            "cut-off",
            json!(null),
            |vb, io| -> candle_core::Result<Cut> {
                Ok(Cut {
                    fc1: linear(io.inputs(), 8, vb.pp("fc1"))?,
                    norm: candle_nn::layer_norm(8, 1e-5, vb.pp("norm"))?,
                    head: linear(8, io.outputs, vb.pp("head"))?,
                })
            },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = fit(
            &data,
            &config(cut),
            &Seeds::all(1),
            &archived(dir.path(), "cut"),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("no gradient reaches fc1.bias, fc1.weight, norm.bias, norm.weight"),
            "{err}"
        );
        assert!(err.contains("layer_norm_slow"), "{err}");
        let runs = recipe_archive::Archive::open(dir.path())
            .unwrap()
            .runs()
            .unwrap()
            .value;
        assert_eq!(runs[0].status, recipe_archive::Status::Failed);
    }

    #[test]
    fn issue_22_the_backprop_dependency_check_catches_a_net_of_your_own_that_mixes_the_batch() {
        let data = Dataset::digits().unwrap().subset(100, 50).unwrap();
        let mixing = ModelSpec::custom("mixes-batch", json!(null), |vb, io| {
            TwoLayer::new(io, 8, vb).map(|net| TwoLayer {
                mix_batch: true,
                ..net
            })
        })
        .unwrap();
        let check = crate::checks::BackpropDependency {
            batch: 4,
            example: 1,
        };
        let ctx = |model: ModelSpec| CheckContext {
            data: &data,
            config: config(model),
            seeds: Seeds::all(1),
        };
        use crate::checks::RecipeCheck;
        let finding = check.run(&ctx(mixing)).unwrap();
        assert!(!finding.check.passed, "{:?}", finding.check);
        assert_eq!(finding.check.measured, json!([0, 1, 2, 3]));
        assert!(check.run(&ctx(spec("clean", 8))).unwrap().check.passed);
    }

    #[test]
    fn issue_22_an_archived_net_needs_its_definition_with_the_same_hyperparameters() {
        let data = Dataset::digits().unwrap().subset(100, 50).unwrap();
        spec("redefined", 8);
        let archived = |hyper: serde_json::Value| {
            TrainConfig::from_value(json!({
                "model": {"kind": "custom", "name": "redefined", "hyper": hyper}
            }))
            .unwrap()
        };
        // As defined: builds, and equals the definition.
        let same = archived(json!({"hidden": 8}));
        assert_eq!(same.model, spec("redefined", 8));
        assert!(same.build_model(&data, &Seeds::all(1)).is_ok());
        // Other hyperparameters, or a name never defined here: an error that says what to run.
        let err = archived(json!({"hidden": 9}))
            .build_model(&data, &Seeds::all(1))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("trained with hyperparameters {\"hidden\":9}"),
            "{err}"
        );
        let unknown =
            TrainConfig::from_value(json!({"model": {"kind": "custom", "name": "never"}}))
                .unwrap()
                .build_model(&data, &Seeds::all(1))
                .err()
                .unwrap()
                .to_string();
        assert!(
            unknown.contains("run the cell that makes ModelSpec::custom(\"never\", ..)"),
            "{unknown}"
        );
        // A typo in an archived or hand-written config is still refused.
        let typo = TrainConfig::from_value(json!({"model": {"kind": "custom", "nmae": "x"}}));
        assert!(typo.is_err());
    }

    #[test]
    fn issue_22_a_net_that_returns_the_wrong_shape_is_named_before_training() {
        let data = Dataset::digits().unwrap().subset(100, 50).unwrap();
        let wrong = ModelSpec::custom("three-outputs", json!(null), |vb, io| {
            TwoLayer::new(
                &ModelIo {
                    outputs: 3,
                    ..io.clone()
                },
                8,
                vb,
            )
        })
        .unwrap();
        let err = wrong.summary(&data).err().unwrap().to_string();
        assert!(
            err.contains("returns shape [2, 3]") && err.contains("needs [2, 10]"),
            "{err}"
        );
        let summary = spec("summarised", 8).summary(&data).unwrap();
        assert_eq!(summary.total, 64 * 8 + 8 + 8 * 10 + 10);
    }
}
