//! The trainer: seeded, archived as it goes, stoppable, resumable.
//!
//! `fit` does, in order:
//! 1. refuses a config that cannot train ([`TrainConfig::validate`]) before anything is
//!    archived; fingerprints the data and begins the run with its identity (config, seeds,
//!    data, code, environment) before the first step; the archive commits it with the first
//!    chunk of metrics or after a second, whichever comes first. From here on, an error ends
//!    the run as `failed` with the error as its reason;
//! 2. builds the model from the init seed (and, if asked, initialises its final bias well:
//!    the log class priors, or the mean target of a regression) and records the loss at init
//!    against its expected value;
//! 3. trains: batches in a seeded order that is a pure function of (seed, step), so a resumed
//!    run sees the very batches an uninterrupted one would; logs every step; evaluates on the
//!    whole validation split every `eval_every` steps; checkpoints; stops early, on request
//!    (interrupted) or when the loss diverges (a NaN/inf loss, or one that stays far above
//!    the loss at init: the rule is at [`DIVERGENCE_FACTOR`]);
//! 4. evaluates on the whole test split and finishes the run.
//!
//! The dataset's [`Task`] decides the loss and the metrics logged (see [`crate::task`]).

use crate::batches::augment;
pub use crate::batches::batch_indices;
use crate::checks::{expected_init_loss, loss_at_init_check};
use crate::config::{Seeds, TrainConfig, DIVERGENCE_FACTOR, DIVERGENCE_STEPS};
use crate::data::Dataset;
use crate::models::Model;
use crate::optim::{gradients, AdamW};
use crate::params::Params;
use crate::progress::Progress;
use crate::sample::{Sample, Samples, TRAINING_SAMPLE_TOKENS};
use crate::task::{Scores, Tally, Task};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use recipe_archive::{Archive, Check, RunRecord, RunSpec, RunWriter, Status};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Stop requests so far. A fit stops when the count moves past what it was when the fit
/// began, so a request made while nothing trains does not stop the next fit.
static STOP_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Ask every running trainer to stop at its next step; the kernel's interrupt calls this.
/// Each run is archived as interrupted and the model trained so far returned.
pub fn request_stop() {
    STOP_REQUESTS.fetch_add(1, Ordering::SeqCst);
}

/// What a fit (or a tracked loop) watches to know it should stop.
#[derive(Clone, Debug)]
pub(crate) enum StopWatch {
    Global(u64),
    Token(Arc<AtomicBool>),
}

impl StopWatch {
    /// Watch `token` when there is one, else the stop requests made from now on.
    pub(crate) fn new(token: &Option<Arc<AtomicBool>>) -> StopWatch {
        match token {
            Some(t) => StopWatch::Token(t.clone()),
            None => StopWatch::Global(STOP_REQUESTS.load(Ordering::SeqCst)),
        }
    }
    /// Whether a stop was requested since the watch began.
    pub(crate) fn stop(&self) -> bool {
        match self {
            StopWatch::Global(start) => STOP_REQUESTS.load(Ordering::SeqCst) != *start,
            StopWatch::Token(t) => t.load(Ordering::SeqCst),
        }
    }
}

/// Who a run is and where it goes.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub name: String,
    pub recipe_step: Option<String>,
    pub parent: Option<String>,
    pub sweep: Option<String>,
    /// The archive to write to; `None` trains without archiving (what `verify` does).
    pub archive: Option<Archive>,
    /// No progress line.
    pub quiet: bool,
    /// Kernel provenance: session, cell execution count, history hash, cell hash.
    pub session_id: Option<String>,
    pub cell_execution: Option<i64>,
    pub cell_history_hash: Option<String>,
    pub cell_hash: Option<String>,
    /// A private stop flag; `None` obeys [`request_stop`].
    pub stop: Option<Arc<AtomicBool>>,
}

impl RunOptions {
    /// A run named `name` archived in the default archive (`$RECIPE_ARCHIVE` or `./runs`).
    pub fn named(name: &str) -> Result<RunOptions> {
        Ok(RunOptions {
            name: name.into(),
            archive: Some(Archive::open(Archive::default_root())?),
            ..RunOptions::default()
        })
    }

    /// A run named `name` archived in `archive`.
    pub fn in_archive(archive: Archive, name: &str) -> RunOptions {
        RunOptions {
            name: name.into(),
            archive: Some(archive),
            ..RunOptions::default()
        }
    }

    pub fn step(mut self, recipe_step: &str) -> Self {
        self.recipe_step = Some(recipe_step.into());
        self
    }

    pub fn parent(mut self, parent: &RunRecord) -> Self {
        self.parent = Some(parent.key());
        self
    }

    pub fn sweep(mut self, sweep: &str) -> Self {
        self.sweep = Some(sweep.into());
        self
    }

    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    pub fn unarchived(mut self) -> Self {
        self.archive = None;
        self
    }
}

/// A trained model and what training produced.
pub struct Trained {
    pub model: Box<dyn Model>,
    pub params: Arc<Params>,
    pub config: TrainConfig,
    pub seeds: Seeds,
    /// The archived run, when archived.
    pub run: Option<RunRecord>,
    pub status: Status,
    /// Every logged metric: name -> [(step, value)].
    pub curves: BTreeMap<String, Vec<(i64, f64)>>,
    /// Final values (test loss and metrics among them).
    pub summary: BTreeMap<String, f64>,
    pub checks: Vec<Check>,
    /// The last checkpoint blob (params + optimizer state), when checkpointing.
    pub checkpoint: Option<String>,
    /// A text model's samples, one per evaluation (archived as the artifact `samples`).
    pub samples: Samples,
}

impl Trained {
    /// A final metric, e.g. `test_acc`.
    pub fn metric(&self, name: &str) -> Result<f64> {
        self.summary.get(name).copied().ok_or_else(|| {
            Error::Invalid(format!(
                "no metric {name:?}; there are {}",
                self.summary.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The archived run; an error for a run trained with `RunOptions::unarchived()`.
    pub fn record(&self) -> Result<&RunRecord> {
        self.run.as_ref().ok_or_else(|| {
            Error::Invalid("this run was not archived (RunOptions::unarchived)".into())
        })
    }

    /// The run id (or "(unarchived)").
    pub fn run_id(&self) -> String {
        self.run
            .as_ref()
            .map_or_else(|| "(unarchived)".into(), |r| r.key())
    }
}

/// Cross-entropy (mean over the batch) of logits (B, C) against labels (B,).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, labels)
}

/// One optimizer step on a batch: forward, the task's loss, backward, gradient norm (and
/// clipping to `clip`), AdamW update. Returns (loss, gradient norm), or `None` without
/// updating when the loss is NaN or infinite.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: &dyn Model,
    params: &Params,
    opt: &mut AdamW,
    task: Task,
    x: &Tensor,
    y: &Tensor,
    lr: f64,
    clip: Option<f64>,
) -> Result<Option<(f64, f64)>> {
    crate::process::prepare();
    crate::process::on_worker(|| {
        let loss = task.loss(&model.forward(x, true)?, y)?;
        let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            return Ok(None);
        }
        let vars = params.vars();
        let grads = gradients(&vars, &loss.backward()?)?;
        if opt.step == 0 && grads.values.len() < vars.len() {
            return Err(no_gradient(&vars, &grads));
        }
        let scale = match clip {
            Some(max) if grads.norm > max => max / grads.norm,
            _ => 1.0,
        };
        opt.update(&vars, &grads, lr, scale)?;
        Ok(Some((loss_value, grads.norm)))
    })
}

/// The error for parameters that no gradient reaches, found at the first step: training
/// would leave them as initialised without a word.
fn no_gradient(vars: &[(String, candle_core::Var)], grads: &crate::optim::Gradients) -> Error {
    let missing: Vec<&str> = (vars.iter().enumerate())
        .filter(|(k, _)| !grads.values.iter().any(|(i, _)| i == k))
        .map(|(_, (name, _))| name.as_str())
        .collect();
    Error::Invalid(format!(
        "no gradient reaches {}: training would never change them. Either the model does \
         not use them, or a layer without a backward pass cuts them off: candle-nn's fused \
         layer_norm and softmax_last_dim have none (use candle_nn::ops::layer_norm_slow and \
         candle_nn::ops::softmax)",
        missing.join(", ")
    ))
}

/// Mean loss and the task's metrics (accuracy; or RMSE, MAE and R²) of a model on a whole
/// split, in chunks.
pub fn evaluate(
    model: &dyn Model,
    data: &Dataset,
    split: &str,
    zero_inputs: bool,
) -> Result<Scores> {
    crate::process::prepare();
    crate::process::on_worker(|| {
        let mut tally = Tally::new(data.task());
        for chunk in data.split(split)?.chunks(512) {
            let (mut x, y) = data.batch(chunk, &Device::Cpu)?;
            if zero_inputs {
                x = x.zeros_like()?;
            }
            tally.add(&model.forward(&x, false)?, &y)?;
        }
        Ok(tally.finish())
    })
}

/// Early stopping, decided from the validation losses so far (pure): stop when the best is
/// `patience` or more evaluations old.
pub fn should_stop_early(val_losses: &[f64], patience: usize) -> bool {
    let Some(best) = val_losses
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
    else {
        return false;
    };
    val_losses.len() - 1 - best >= patience
}

/// The divergence rule of [`DIVERGENCE_FACTOR`], decided one training loss at a time.
#[derive(Clone, Debug)]
pub struct DivergenceWatch {
    at_init: f64,
    steps_above: usize,
}

impl DivergenceWatch {
    pub fn new(loss_at_init: f64) -> DivergenceWatch {
        DivergenceWatch {
            at_init: loss_at_init,
            steps_above: 0,
        }
    }

    /// This step's training loss; the reason the run has diverged, if it has.
    pub fn observe(&mut self, step: usize, loss: f64) -> Option<String> {
        if !loss.is_finite() {
            return Some(format!(
                "training loss became NaN or infinite at step {step}; lower the learning rate or clip gradients"
            ));
        }
        let limit = DIVERGENCE_FACTOR * self.at_init;
        self.steps_above = if loss > limit {
            self.steps_above + 1
        } else {
            0
        };
        (self.steps_above >= DIVERGENCE_STEPS).then(|| {
            format!(
                "training loss diverged at step {step}: {loss:.3e}, above {DIVERGENCE_FACTOR}x the loss at init ({:.3}) for {DIVERGENCE_STEPS} steps in a row; lower the learning rate or clip gradients",
                self.at_init
            )
        })
    }
}

/// Initialise a model's final bias well ("init well"): for classes, the log class priors of
/// the training split (minus their mean), so the loss at init is the entropy of the priors
/// instead of ln(C) (for text, the log unigram frequencies of the next tokens); for regression, the training split's mean target, so the loss at init is
/// the targets' variance instead of their mean square.
pub fn init_bias_from_priors(model: &dyn Model, params: &Params, data: &Dataset) -> Result<()> {
    let bias: Vec<f32> = match data.task() {
        Task::Classification { .. } | Task::NextToken { .. } => {
            let priors = data.class_priors("train")?;
            let logs: Vec<f32> = priors.iter().map(|p| p.max(1e-12).ln() as f32).collect();
            let mean = logs.iter().sum::<f32>() / logs.len().max(1) as f32;
            logs.iter().map(|l| l - mean).collect()
        }
        Task::Regression => vec![target_mean(data, "train")? as f32],
    };
    let n = bias.len();
    params
        .get(model.final_bias())?
        .set(&Tensor::from_vec(bias, n, &Device::Cpu)?)?;
    Ok(())
}

/// The mean regression target of a split.
pub(crate) fn target_mean(data: &Dataset, split: &str) -> Result<f64> {
    let values = data.values("a mean target")?;
    let indices = data.split(split)?;
    Ok(indices.iter().map(|&i| values[i] as f64).sum::<f64>() / indices.len().max(1) as f64)
}

/// Train a model from the config and seeds on `data`, archiving the run as `options` say.
pub fn fit(
    data: &Dataset,
    config: &TrainConfig,
    seeds: &Seeds,
    options: &RunOptions,
) -> Result<Trained> {
    fit_inner(data, config, seeds, options, None)
}

/// Continue an archived run from its last checkpoint up to `config.steps` (which must be
/// larger): the new run names the old one as parent and its checkpoint in its config.
pub fn resume(
    data: &Dataset,
    from: &RunRecord,
    archive: &Archive,
    steps: usize,
    options: &RunOptions,
) -> Result<Trained> {
    let checkpoint = from.artifacts.get("checkpoint").ok_or_else(|| {
        Error::Invalid(format!(
            "run {} has no checkpoint; train it with checkpoint_every set",
            from.short()
        ))
    })?;
    let mut config = TrainConfig::from_value(from.config().clone()).map_err(|e| {
        Error::Data(format!(
            "run {} has a config this runtime cannot read: {e}",
            from.short()
        ))
    })?;
    let done = from.last_step.map_or(0, |s| s as usize + 1);
    if steps <= done {
        return Err(Error::Invalid(format!(
            "resume run {} to {steps} steps: it has trained {done} already; `steps` is the new total",
            from.short()
        )));
    }
    config.steps = steps;
    config.resume_from = Some(checkpoint.clone());
    let seeds = Seeds::from_json(&from.components[1]);
    let mut options = options.clone();
    options.parent.get_or_insert_with(|| from.key());
    fit_inner(data, &config, &seeds, &options, Some(archive))
}

/// Train without archiving, resolving a `resume_from` checkpoint in `archive` (what verify
/// does).
pub fn fit_unarchived_from(
    data: &Dataset,
    config: &TrainConfig,
    seeds: &Seeds,
    archive: &Archive,
) -> Result<Trained> {
    fit_inner(
        data,
        config,
        seeds,
        &RunOptions::default().unarchived().quiet(),
        Some(archive),
    )
}

/// What one fit trains on, checked before its run begins.
struct Plan<'a> {
    data: &'a Dataset,
    config: &'a TrainConfig,
    seeds: &'a Seeds,
    options: &'a RunOptions,
    train: Vec<usize>,
    /// "val" when the data has a validation split, else "test".
    eval_split: &'static str,
}

fn fit_inner(
    data: &Dataset,
    config: &TrainConfig,
    seeds: &Seeds,
    options: &RunOptions,
    resume_archive: Option<&Archive>,
) -> Result<Trained> {
    // 1. A config that cannot train is refused before anything is archived.
    config.validate()?;
    let train = data.split("train")?.to_vec();
    if train.is_empty() {
        return Err(Error::Invalid(format!(
            "{} has an empty train split",
            data.name
        )));
    }
    let eval_split = if data.splits.get("val").is_some_and(|v| !v.is_empty()) {
        "val"
    } else {
        "test"
    };
    let plan = Plan {
        data,
        config,
        seeds,
        options,
        train,
        eval_split,
    };

    // Identity first: the run begins before the first step.
    let mut writer: Option<RunWriter> = match &options.archive {
        Some(archive) => Some(archive.begin_run(run_spec(data, config, seeds, options)?)?),
        None => None,
    };
    train_run(&plan, resume_archive, &mut writer).inspect_err(|e| {
        // A run that began and then failed is archived as failed, with the error as its
        // reason. Should the archive refuse even that, the caller still gets the real error
        // and the run reads back as interrupted.
        if let Some(w) = writer.take() {
            let _ = w.finish(Status::Failed, Some(e.to_string()));
        }
    })
}

/// Steps 2 to 4 of a fit whose run has begun; finishes `writer` (taking it) on success.
fn train_run(
    plan: &Plan,
    resume_archive: Option<&Archive>,
    writer: &mut Option<RunWriter>,
) -> Result<Trained> {
    let (data, config, seeds, options) = (plan.data, plan.config, plan.seeds, plan.options);
    let (train, eval_split) = (&plan.train, plan.eval_split);
    let stop = StopWatch::new(&options.stop);

    // 2. Model, init, loss at init.
    let (model, params) = config.build_model(data, seeds)?;
    if config.init_bias_from_priors {
        init_bias_from_priors(model.as_ref(), &params, data)?;
    }
    let mut opt = AdamW::new(config.beta1, config.beta2, config.eps, config.weight_decay);
    let mut start = 0;
    if let Some(hash) = &config.resume_from {
        let archive = resume_archive.or(options.archive.as_ref()).ok_or_else(|| {
            Error::Invalid("resuming needs the archive that holds the checkpoint".into())
        })?;
        start = crate::checkpoint::load_checkpoint(
            &archive.blob(&recipe_archive::canonical::Hash::from_hex(hash)?)?,
            &params,
            &mut opt,
        )?;
    }
    let mut checks = Vec::new();
    if start == 0 {
        checks.push(loss_at_init_check(model.as_ref(), data, config)?);
    }
    let expected_at_init = expected_init_loss(data, config.init_bias_from_priors)?;
    let measured_at_init = checks.first().and_then(|c| c.measured.as_f64());
    let mut divergence = DivergenceWatch::new(
        measured_at_init.map_or(expected_at_init, |m| m.max(expected_at_init)),
    );
    let mut curves: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    let mut log =
        |writer: &mut Option<RunWriter>, step: usize, values: &[(String, f64)]| -> Result<()> {
            for (name, value) in values {
                curves
                    .entry(name.clone())
                    .or_default()
                    .push((step as i64, *value));
            }
            if let Some(w) = writer {
                let named: Vec<(&str, f64)> =
                    values.iter().map(|(n, v)| (n.as_str(), *v)).collect();
                w.log_all(step as i64, &named)?;
            }
            Ok(())
        };

    // 3. Train.
    let started = Instant::now();
    let mut progress = (!options.quiet).then(|| Progress::new(&options.name, config.steps));
    let mut val_losses = Vec::new();
    let mut samples = Vec::new();
    let mut status = Status::Completed;
    let mut error = None;
    let mut checkpoint = None;
    let mut step = start;
    while step < config.steps {
        if stop.stop() {
            status = Status::Interrupted;
            error = Some(format!("stopped on request at step {step}"));
            break;
        }
        model.reseed_dropout(step);
        let indices = batch_indices(train, config.batch_size, seeds.data_order, step);
        let (x, y) = data.batch(&indices, &Device::Cpu)?;
        let x = if config.zero_inputs {
            x.zeros_like()?
        } else if config.augment {
            let mut values = x.flatten_all()?.to_vec1::<f32>()?;
            augment(&mut values, &data.shape, seeds.augmentation, step);
            Tensor::from_vec(values, x.dims(), &Device::Cpu)?
        } else {
            x
        };
        let lr = config.schedule.lr(config.lr, step, config.steps);
        let Some((loss_value, norm)) = train_step(
            model.as_ref(),
            &params,
            &mut opt,
            data.task(),
            &x,
            &y,
            lr,
            config.grad_clip,
        )?
        else {
            log(writer, step, &[("train_loss".into(), f64::NAN)])?;
            status = Status::Diverged;
            error = divergence.observe(step, f64::NAN);
            break;
        };
        log(
            writer,
            step,
            &[
                ("train_loss".into(), loss_value),
                ("grad_norm".into(), norm),
            ],
        )?;
        if let Some(reason) = divergence.observe(step, loss_value) {
            status = Status::Diverged;
            error = Some(reason);
            break;
        }
        let last = step + 1 == config.steps;
        let evaluates = (step + 1) % config.eval_every == 0 || last;
        if evaluates {
            let scores = evaluate(model.as_ref(), data, eval_split, config.zero_inputs)?;
            log(writer, step, &scores.logged(eval_split))?;
            val_losses.push(scores.loss);
            if matches!(data.task(), Task::NextToken { .. }) {
                samples.push(training_sample(model.as_ref(), data, seeds, step)?);
            }
            if config
                .early_stopping
                .is_some_and(|p| should_stop_early(&val_losses, p))
                && !last
            {
                error = Some(format!(
                    "early stop at step {step}: no {eval_split} loss improvement in {} evaluations",
                    config.early_stopping.unwrap_or(0)
                ));
                step += 1;
                break;
            }
        }
        if let (Some(every), Some(w)) = (config.checkpoint_every, writer.as_mut()) {
            if (step + 1) % every == 0 || last {
                checkpoint = Some(
                    w.put_artifact(
                        "checkpoint",
                        &crate::checkpoint::checkpoint_bytes(&params, &opt, step + 1)?,
                    )?
                    .to_hex(),
                );
            }
        }
        if let Some(p) = progress.as_mut() {
            p.train_loss(step, loss_value);
            if let Some(&val_loss) = val_losses.last().filter(|_| evaluates) {
                p.val_loss(step, val_loss);
            }
            p.show_now_and_then(last);
        }
        step += 1;
    }
    if let Some(p) = progress.as_mut() {
        p.finish();
    }

    // 4. Test, summarise, finish.
    let mut summary = BTreeMap::new();
    if status != Status::Diverged {
        let scores = evaluate(model.as_ref(), data, "test", config.zero_inputs)?;
        log(writer, step.saturating_sub(1), &scores.logged("test"))?;
    }
    for (name, points) in &curves {
        if let Some((_, v)) = points.last() {
            summary.insert(name.clone(), *v);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let run = match writer.take() {
        Some(mut w) => {
            w.put_artifact("weights", &params.to_safetensors()?)?;
            if !samples.is_empty() {
                let json = serde_json::to_vec(&samples)
                    .map_err(|e| Error::Invalid(format!("samples as JSON: {e}")))?;
                w.put_artifact("samples", &json)?;
            }
            for c in &checks {
                w.add_check(c.clone());
            }
            w.set_summary("train_seconds", seconds);
            w.set_summary(
                "steps_per_second",
                (step - start) as f64 / seconds.max(1e-9),
            );
            Some(w.finish(status, error)?)
        }
        None => None,
    };
    if status == Status::Interrupted {
        // Said in the cell's output, whatever the cell shows next: the variables survive.
        let archived = run.as_ref().map_or("not archived".to_string(), |r| {
            format!("run {} archived as interrupted", r.short())
        });
        println!(
            "{} interrupted at step {step} of {}; {archived}",
            options.name, config.steps
        );
    }
    Ok(Trained {
        model,
        params,
        config: config.clone(),
        seeds: *seeds,
        run,
        status,
        curves,
        summary,
        checks,
        checkpoint,
        samples: Samples(samples),
    })
}

/// The sample a text run draws after `step`: [`TRAINING_SAMPLE_TOKENS`] tokens at
/// temperature 1 after a newline, from the stream `samples/{step}` of the sampling seed.
fn training_sample(
    model: &dyn Model,
    data: &Dataset,
    seeds: &Seeds,
    step: usize,
) -> Result<Sample> {
    let mut rng = crate::rng::Rng::stream(seeds.sampling, &format!("samples/{step}"));
    Ok(Sample {
        step: Some(step),
        temperature: 1.0,
        seed: seeds.sampling,
        prompt: String::new(),
        text: crate::sample::draw(model, data, "", TRAINING_SAMPLE_TOKENS, 1.0, &mut rng)?,
    })
}

/// The identity of a run of the built-in trainer: see [`run_spec_of`].
pub fn run_spec(
    data: &Dataset,
    config: &TrainConfig,
    seeds: &Seeds,
    options: &RunOptions,
) -> Result<RunSpec> {
    let config_json =
        serde_json::to_value(config).map_err(|e| Error::Invalid(format!("config: {e}")))?;
    run_spec_of(data, config_json, seeds, options)
}

/// The identity of a run, whoever trains it (`fit`, or a loop of one's own under
/// [`crate::track::track`]): the config as JSON, the seeds, the data fingerprint (whose
/// details carry the spec that reloads it), the code with the runtime's version, Cargo.lock
/// and, inside the kernel, the cell running now, and the environment with candle's version.
/// Explicit cell provenance in `options` wins over the kernel's.
pub fn run_spec_of(
    data: &Dataset,
    config: serde_json::Value,
    seeds: &Seeds,
    options: &RunOptions,
) -> Result<RunSpec> {
    let mut spec = RunSpec::capture(&options.name, config, seeds.to_map(), data.fingerprint())?;
    let code = &mut spec.identity.code;
    code.runtime
        .insert("recipe".into(), env!("CARGO_PKG_VERSION").into());
    code.runtime.insert(
        "cargo_lock".into(),
        blake3::hash(CARGO_LOCK).to_hex().to_string(),
    );
    // Inside the kernel, the cell running now; explicit options win.
    let cell = crate::notebook::current_cell();
    code.cell_hash = options
        .cell_hash
        .clone()
        .or_else(|| cell.as_ref().map(|c| c.code_hash.clone()));
    code.history_hash = options
        .cell_history_hash
        .clone()
        .or_else(|| cell.as_ref().map(|c| c.history_hash.clone()));
    spec.identity
        .env
        .crates
        .insert("candle-core".into(), CANDLE_VERSION.into());
    spec.identity
        .env
        .crates
        .insert("recipe".into(), env!("CARGO_PKG_VERSION").into());
    spec.recipe_step = options.recipe_step.clone();
    spec.parent_run = options.parent.clone();
    spec.sweep = options.sweep.clone();
    spec.session_id = options
        .session_id
        .clone()
        .or_else(|| cell.as_ref().map(|c| c.session_id.clone()));
    spec.cell_execution = options
        .cell_execution
        .or_else(|| cell.as_ref().map(|c| c.execution_count));
    spec.cell_history_hash = options
        .cell_history_hash
        .clone()
        .or_else(|| cell.as_ref().map(|c| c.history_hash.clone()));
    Ok(spec)
}

/// The workspace lock file the runtime was built with: part of the code identity.
static CARGO_LOCK: &[u8] = include_bytes!("../../Cargo.lock");
/// candle's version, pinned in the workspace.
const CANDLE_VERSION: &str = "0.11.1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stopping_decides_from_val_losses() {
        assert!(!should_stop_early(&[1.0, 0.9, 0.8], 2));
        assert!(!should_stop_early(&[1.0, 0.8, 0.9], 2));
        assert!(should_stop_early(&[1.0, 0.8, 0.9, 0.85], 2));
    }
}

/// What the runtime's tests share: a small MLP config, quiet archived runs, and the
/// embedded penguins made ready to train.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::models::ModelSpec;

    /// The penguins with `species` as the target, island and sex one-hot, missing cells
    /// filled with the training mean, features standardised.
    pub fn penguins() -> Dataset {
        Dataset::penguins()
            .target("species")
            .one_hot(["island", "sex"])
            .fill_mean()
            .normalize()
            .load()
            .unwrap()
    }

    /// The penguins with `body_mass_g` as a regression target (standardised with the
    /// training split's mean and std, like the features), species, island and sex one-hot.
    pub fn penguins_mass() -> Dataset {
        Dataset::penguins()
            .target("body_mass_g")
            .regression()
            .one_hot(["species", "island", "sex"])
            .fill_mean()
            .drop_missing_rows()
            .normalize()
            .load()
            .unwrap()
    }

    /// An MLP of `hidden` units whose head starts small (weights from N(0, 0.01), bias 0),
    /// as the recipe's "init well" has it: the zoo MLP's Kaiming head makes confident first
    /// guesses, which a regression's loss at init shows as a mean square several times the
    /// targets'.
    pub fn small_head(hidden: usize) -> ModelSpec {
        use candle_nn::{Init, Linear, Module};
        struct SmallHead {
            fc1: Linear,
            head: Linear,
        }
        impl crate::Model for SmallHead {
            fn forward(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
                let h = self.fc1.forward(&x.flatten_from(1)?)?.relu()?; // (B, hidden)
                self.head.forward(&h) // (B, outputs)
            }
        }
        let hyper = serde_json::json!({ "hidden": hidden, "head_std": 0.01 });
        ModelSpec::custom("small-head", hyper, move |vb, io| {
            let head = vb.pp("head");
            let small = Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            };
            Ok::<_, candle_core::Error>(SmallHead {
                fc1: candle_nn::linear(io.inputs(), hidden, vb.pp("fc1"))?,
                head: Linear::new(
                    head.get_with_hints((io.outputs, hidden), "weight", small)?,
                    Some(head.get_with_hints(io.outputs, "bias", Init::Const(0.0))?),
                ),
            })
        })
        .unwrap()
    }

    /// An MLP with 32 hidden units at lr 1e-3: learns the digits in a few hundred steps.
    pub fn small_mlp(steps: usize, eval_every: usize) -> TrainConfig {
        TrainConfig {
            model: ModelSpec::Mlp { hidden: vec![32] },
            lr: 1e-3,
            steps,
            eval_every,
            ..TrainConfig::default()
        }
    }

    /// A quiet run named `name` archived in `dir`.
    pub fn archived(dir: &std::path::Path, name: &str) -> RunOptions {
        RunOptions::in_archive(Archive::open(dir).unwrap(), name).quiet()
    }
}

#[cfg(test)]
mod training_tests {
    use super::testing::archived;
    use super::*;

    fn small() -> TrainConfig {
        testing::small_mlp(200, 50)
    }

    #[test]
    fn issue_22_a_gpt_learns_shakespeare_samples_it_and_verifies_bit_for_bit() {
        let data = crate::Dataset::shakespeare().context(32).load().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig {
            model: crate::ModelSpec::Gpt {
                width: 32,
                heads: 4,
                layers: 2,
            },
            lr: 3e-3,
            batch_size: 16,
            steps: 150,
            eval_every: 75,
            ..TrainConfig::default()
        };
        let started = std::time::Instant::now();
        let t = fit(&data, &config, &Seeds::all(1), &archived(dir.path(), "gpt")).unwrap();
        eprintln!(
            "150 steps in {:.1} s: {:?}",
            started.elapsed().as_secs_f64(),
            t.summary
        );
        // Loss at init is ln(62) = 4.13 nats = 5.95 bits; the unigram entropy is 4.3 bits.
        assert!(t.checks[0].passed, "{:?}", t.checks[0]);
        let unigram = crate::checks::expected_init_loss(&data, true).unwrap();
        let bits = t.metric("test_bpt").unwrap();
        assert!(
            bits < 0.9 * unigram / std::f64::consts::LN_2,
            "{unigram} {:?}",
            t.summary
        );
        assert!((bits - t.metric("test_loss").unwrap() / std::f64::consts::LN_2).abs() < 1e-12);
        // One sample per evaluation, archived with the run and drawn again the same.
        assert_eq!(t.samples.len(), 2);
        let archive = Archive::open(dir.path()).unwrap();
        let run = t.run.clone().unwrap();
        let archived_samples = crate::sample::Samples::of_run(&archive, &run).unwrap();
        assert_eq!(archived_samples, t.samples);
        let last = t.samples.last().unwrap();
        assert_eq!(
            last.text.chars().count(),
            crate::sample::TRAINING_SAMPLE_TOKENS
        );
        eprintln!("{}", last.text);
        let v = crate::verify::verify(&archive, &run).unwrap();
        assert!(v.reproduced && v.samples_compared == 2, "{v:?}");
        use crate::show::Show;
        assert!(
            v.text().contains("2 archived samples identical"),
            "{}",
            v.text()
        );
        // Samples from the notebook: seeded, prompt first; temperature 0 is the argmax.
        let a = crate::sample::sample(t.model.as_ref(), &data, "ROMEO:", 40, 0.8, 7).unwrap();
        let b = crate::sample::sample(t.model.as_ref(), &data, "ROMEO:", 40, 0.8, 7).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.text.chars().count(), 40);
        let err = crate::sample::sample(t.model.as_ref(), &data, "Ω", 4, 1.0, 7).unwrap_err();
        assert!(err.to_string().contains("not in the vocabulary"), "{err}");
    }

    #[test]
    fn issue_22_a_regression_trains_scores_archives_and_verifies_bit_for_bit() {
        let data = testing::penguins_mass();
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig {
            model: crate::ModelSpec::Mlp { hidden: vec![32] },
            init_bias_from_priors: true,
            lr: 3e-3,
            steps: 300,
            eval_every: 100,
            ..TrainConfig::default()
        };
        let t = fit(
            &data,
            &config,
            &Seeds::all(1),
            &archived(dir.path(), "mass"),
        )
        .unwrap();
        let r2 = t.metric("test_r2").unwrap();
        assert!(
            r2 > 0.6,
            "body mass from species, sex and size: {:?}",
            t.summary
        );
        let (loss, rmse) = (
            t.metric("test_loss").unwrap(),
            t.metric("test_rmse").unwrap(),
        );
        assert!((rmse * rmse - loss).abs() < 1e-9 && t.metric("test_mae").unwrap() < rmse);
        assert!(t.metric("test_acc").is_err() && t.curves.contains_key("val_r2"));
        assert!(
            t.summary.keys().all(|k| !k.contains("acc")),
            "{:?}",
            t.summary
        );

        // Predictions score what the trainer logged; the archived weights give them again.
        let p = t.predictions(&data, "test").unwrap();
        assert!((p.score() - r2).abs() < 1e-5, "{} vs {r2}", p.score());
        use crate::show::Show;
        assert!(p.text().starts_with("R² ") && p.html().contains("target→predicted"));
        // Standardised for the model, shown in grams: a mean of about 4,200 g.
        let rmse_grams = rmse * data.target_scale().unwrap().std;
        let headline = format!("RMSE {}", recipe_archive::export::format_number(rmse_grams));
        assert!(p.text().contains(&headline), "{headline}: {}", p.text());
        let archive = Archive::open(dir.path()).unwrap();
        let run = t.run.clone().unwrap();
        let again = crate::analysis::predictions_of_run(&archive, &run, &data, "test").unwrap();
        assert_eq!(again.outputs, p.outputs);
        assert!(crate::analysis::human_baseline(
            &data,
            "test",
            &[0],
            &[0],
            "me",
            &archived(dir.path(), "h")
        )
        .unwrap_err()
        .to_string()
        .contains("needs classes"));

        // The archived spec loads the same regression, and the run reproduces bit for bit.
        let spec: crate::DataSpec =
            serde_json::from_value(run.components[2]["details"]["spec"].clone()).unwrap();
        assert_eq!(spec.load().unwrap().fingerprint(), data.fingerprint());
        let v = crate::verify::verify(&archive, &run).unwrap();
        assert!(v.reproduced && v.points_compared > 300, "{v:?}");

        // The loss at init is checked against the targets' variance (init well).
        let at_init = &t.checks[0];
        let variance = crate::checks::expected_init_loss(&data, true).unwrap();
        assert_eq!(at_init.expected, serde_json::json!(variance));
    }

    #[test]
    fn a_small_mlp_learns_digits_and_beats_its_input_independent_baseline() {
        let data = Dataset::digits().unwrap();
        let config = TrainConfig {
            steps: 600,
            ..small()
        };
        let quiet = RunOptions::default().unarchived().quiet();
        let real = fit(&data, &config, &Seeds::all(1), &quiet).unwrap();
        let zero = fit(
            &data,
            &TrainConfig {
                zero_inputs: true,
                ..config
            },
            &Seeds::all(1),
            &quiet,
        )
        .unwrap();
        let (acc, base) = (
            real.metric("test_acc").unwrap(),
            zero.metric("test_acc").unwrap(),
        );
        assert!(acc > 0.90, "test accuracy {acc}");
        assert!(base < 0.2 && acc > base + 0.5, "{acc} vs zero-input {base}");
        assert!(real.checks.iter().all(|c| c.passed), "{:?}", real.checks);
    }

    #[test]
    fn resuming_a_checkpoint_matches_an_uninterrupted_run_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::digits().unwrap().subset(300, 100).unwrap();
        let config = TrainConfig {
            checkpoint_every: Some(100),
            dropout: 0.2,
            ..small()
        };
        let straight = fit(
            &data,
            &config,
            &Seeds::all(2),
            &archived(dir.path(), "straight"),
        )
        .unwrap();
        let half = fit(
            &data,
            &TrainConfig {
                steps: 100,
                ..config.clone()
            },
            &Seeds::all(2),
            &archived(dir.path(), "half"),
        )
        .unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let resumed = resume(
            &data,
            half.run.as_ref().unwrap(),
            &archive,
            200,
            &archived(dir.path(), "resumed"),
        )
        .unwrap();
        let too_few = resume(
            &data,
            half.run.as_ref().unwrap(),
            &archive,
            100,
            &archived(dir.path(), "not-longer"),
        );
        assert!(
            matches!(&too_few, Err(Error::Invalid(m)) if m.contains("the new total")),
            "{:?}",
            too_few.map(|t| t.status)
        );
        let tail = |t: &Trained| {
            t.curves["train_loss"]
                .iter()
                .filter(|(s, _)| *s >= 100)
                .map(|(s, v)| (*s, v.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(tail(&straight).len(), 100);
        assert_eq!(tail(&straight), tail(&resumed));
        assert_eq!(
            straight.summary["test_acc"].to_bits(),
            resumed.summary["test_acc"].to_bits()
        );
        assert_eq!(
            resumed.run.as_ref().unwrap().parent_run,
            Some(half.run.unwrap().key())
        );
    }

    #[test]
    fn a_nan_loss_ends_the_run_as_diverged() {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::digits().unwrap();
        let t = fit(
            &data,
            &TrainConfig {
                lr: 1e30,
                steps: 300,
                ..small()
            },
            &Seeds::all(1),
            &archived(dir.path(), "boom"),
        )
        .unwrap();
        assert_eq!(t.status, Status::Diverged);
        let run = t.run.unwrap();
        assert_eq!(run.status, Status::Diverged);
        assert!(run.error.unwrap().contains("lower the learning rate"));
    }

    #[test]
    fn divergence_is_ten_steps_in_a_row_far_above_the_loss_at_init() {
        let mut watch = DivergenceWatch::new(2.0);
        // Above 10 x 2.0 for nine steps, then one below: the count starts again.
        for step in 0..9 {
            assert_eq!(watch.observe(step, 25.0), None, "step {step}");
        }
        assert_eq!(watch.observe(9, 19.0), None);
        for step in 10..19 {
            assert_eq!(watch.observe(step, 21.0), None, "step {step}");
        }
        let reason = watch.observe(19, 21.0).unwrap();
        assert!(
            reason.starts_with("training loss diverged at step 19"),
            "{reason}"
        );
        let nan = DivergenceWatch::new(2.0).observe(3, f64::NAN).unwrap();
        assert!(nan.contains("NaN or infinite at step 3"), "{nan}");
    }

    #[test]
    fn issue_21_a_loss_far_above_its_value_at_init_ends_the_run_as_diverged_at_that_step() {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::digits().unwrap();
        let t = fit(
            &data,
            &TrainConfig {
                lr: 1e9,
                steps: 300,
                ..small()
            },
            &Seeds::all(1),
            &archived(dir.path(), "far-too-fast"),
        )
        .unwrap();
        assert_eq!(t.status, Status::Diverged);
        let run = t.run.unwrap();
        assert_eq!(run.status, Status::Diverged);
        let step = run.last_step.unwrap();
        assert!(
            step < 50,
            "caught when it happens, not at the end: step {step}"
        );
        let reason = run.error.unwrap();
        assert!(
            reason.contains(&format!("diverged at step {step}")),
            "{reason}"
        );
        assert!(!t.summary.contains_key("test_loss"));
    }

    #[test]
    fn issue_21_a_refused_config_archives_nothing_and_a_later_failure_is_archived_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let data = Dataset::digits().unwrap().subset(300, 100).unwrap();
        let refused = fit(
            &data,
            &TrainConfig {
                checkpoint_every: Some(0),
                ..small()
            },
            &Seeds::all(1),
            &archived(dir.path(), "refused"),
        );
        assert!(
            matches!(&refused, Err(Error::Invalid(m)) if m.contains("checkpoint_every")),
            "{:?}",
            refused.map(|t| t.status)
        );
        assert!(archive.runs().unwrap().value.is_empty());

        // A checkpoint the archive does not hold: the run has begun when loading it fails.
        let failed = fit(
            &data,
            &TrainConfig {
                resume_from: Some("00".repeat(32)),
                ..small()
            },
            &Seeds::all(1),
            &archived(dir.path(), "missing-checkpoint"),
        );
        let Err(error) = failed else {
            panic!("resumed from a checkpoint that is not there");
        };
        let runs = archive.runs().unwrap().value;
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, Status::Failed);
        assert_eq!(runs[0].error.as_deref(), Some(error.to_string().as_str()));
    }

    #[test]
    fn a_stop_request_ends_the_run_as_interrupted_with_the_model_so_far() {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::digits().unwrap();
        let token = Arc::new(AtomicBool::new(false));
        let flag = token.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(150));
            flag.store(true, Ordering::SeqCst);
        });
        let options = RunOptions {
            stop: Some(token),
            ..archived(dir.path(), "long")
        };
        let t = fit(
            &data,
            &TrainConfig {
                steps: 1_000_000,
                ..small()
            },
            &Seeds::all(1),
            &options,
        )
        .unwrap();
        stopper.join().unwrap();
        assert_eq!(t.status, Status::Interrupted);
        let run = t.run.unwrap();
        assert_eq!(run.status, Status::Interrupted);
        assert!(run.last_step.unwrap() > 0 && run.last_step.unwrap() < 1_000_000);
        assert!(
            t.summary.contains_key("test_acc"),
            "the model so far is still evaluated"
        );
    }

    #[test]
    fn verify_reproduces_an_archived_run_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::digits().unwrap().subset(300, 100).unwrap();
        let t = fit(
            &data,
            &TrainConfig {
                dropout: 0.1,
                augment: true,
                ..small()
            },
            &Seeds::all(4),
            &archived(dir.path(), "v"),
        )
        .unwrap();
        let archive = Archive::open(dir.path()).unwrap();
        let v = crate::verify::verify(&archive, t.run.as_ref().unwrap()).unwrap();
        assert!(v.reproduced, "{v:?}");
        assert!(v.points_compared > 400);
    }
}
