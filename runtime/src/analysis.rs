//! Looking at what a model does: predictions with a confusion matrix and the top losses,
//! the exact batch that enters the model, first-layer weights, ensembles of runs, a human
//! baseline recorded as a run, and loading an archived run's weights.

use crate::config::{Seeds, TrainConfig};
use crate::data::inspect::ImageGrid;
use crate::data::{Dataset, Scale, Target};
use crate::models::Model;
use crate::params::Params;
use crate::show::{escape, html_table, svg_lines, Show};
use crate::task::Task;
use crate::train::{batch_indices, RunOptions, Trained};
use crate::{show_in_jupyter, Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::ops::softmax_last_dim;
use recipe_archive::export::format_number;
use recipe_archive::{Archive, RunRecord, RunSpec, Status};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A model's predictions on a split.
#[derive(Clone, Debug)]
pub struct Predictions {
    pub indices: Vec<usize>,
    /// Each example's loss: cross-entropy, squared error, or a window's mean cross-entropy.
    pub losses: Vec<f64>,
    /// What the model said, (N, outputs) row-major: class probabilities, or values; for
    /// text (N, T, V), each position's next-token probabilities.
    pub outputs: Vec<f32>,
    pub outcome: Outcome,
    top: Vec<(Vec<f32>, String)>,
    /// (height, width) of an image example; `None` for rows of a table, which show as text.
    image_shape: Option<(usize, usize)>,
}

/// Predictions against targets, by task.
#[derive(Clone, Debug)]
pub enum Outcome {
    Classes {
        classes: Vec<String>,
        labels: Vec<u32>,
        predicted: Vec<u32>,
        /// confusion[label][predicted].
        confusion: Vec<Vec<usize>>,
    },
    /// Targets and predictions as the model sees them (standardised, when the target was).
    Values {
        targets: Vec<f32>,
        predicted: Vec<f32>,
        /// The standardised target's mean and std: what the view shows in the target's own
        /// units.
        scale: Option<Scale>,
    },
    /// Next tokens and the most probable ones, (N, T) row-major.
    Tokens {
        targets: Vec<u32>,
        predicted: Vec<u32>,
        context: usize,
    },
}

/// A model's outputs on examples, in chunks, (N, outputs) row-major: class probabilities
/// (softmax of the logits), or predicted values; for text (N, T, V) next-token probabilities.
pub fn outputs(model: &dyn Model, data: &Dataset, indices: &[usize]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(indices.len() * data.task().outputs());
    for chunk in indices.chunks(512) {
        let (x, _) = data.batch(chunk, &Device::Cpu)?;
        let output = model.forward(&x, false)?;
        let output = match data.task() {
            Task::Classification { .. } | Task::NextToken { .. } => softmax_last_dim(&output)?,
            Task::Regression => output,
        };
        out.extend(output.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

impl Outcome {
    /// The caption of the `k`-th prediction (example `i`, with loss `loss`):
    /// `#i label→predicted (loss)`, or `#i target→predicted (error)` in the target's units.
    fn caption(&self, data: &Dataset, i: usize, k: usize, loss: f64) -> String {
        match self {
            Outcome::Classes {
                labels, predicted, ..
            } => format!(
                "#{i} {}→{} ({loss:.2})",
                data.class_name(labels[k]),
                data.class_name(predicted[k])
            ),
            Outcome::Values {
                targets,
                predicted,
                scale,
            } => {
                let error = (predicted[k] - targets[k]) as f64 * scale.map_or(1.0, |s| s.std);
                let sign = if error > 0.0 { "+" } else { "" };
                format!(
                    "#{i} {}→{} ({sign}{})",
                    data.value_text(targets[k]),
                    data.value_text(predicted[k]),
                    format_number(error)
                )
            }
            Outcome::Tokens {
                targets,
                predicted,
                context,
            } => {
                let window = |ids: &[u32]| -> String {
                    (data.decode(&ids[..ids.len().min(24)]).chars())
                        .map(|c| if c == '\n' { '⏎' } else { c })
                        .collect()
                };
                let span = k * context..(k + 1) * context;
                format!(
                    "#{i} {:?}→{:?} ({loss:.2})",
                    window(&targets[span.clone()]),
                    window(&predicted[span])
                )
            }
        }
    }
}

impl Predictions {
    /// Predictions from a model's [`outputs`] on the examples `indices`.
    pub fn from_outputs(data: &Dataset, indices: &[usize], outputs: Vec<f32>) -> Predictions {
        let (losses, outcome): (Vec<f64>, Outcome) = match &data.target {
            Target::Classes { labels, names } => {
                let c = names.len();
                let labels: Vec<u32> = indices.iter().map(|&i| labels[i]).collect();
                let mut predicted = Vec::new();
                let mut losses = Vec::new();
                let mut confusion = vec![vec![0; c]; c];
                for (row, &label) in outputs.chunks(c.max(1)).zip(&labels) {
                    let p = row
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(k, _)| k) as u32;
                    predicted.push(p);
                    let p_label = row.get(label as usize).copied().unwrap_or(0.0) as f64;
                    losses.push(-p_label.max(1e-12).ln());
                    if let Some(cell) = confusion
                        .get_mut(label as usize)
                        .and_then(|r| r.get_mut(p as usize))
                    {
                        *cell += 1;
                    }
                }
                let outcome = Outcome::Classes {
                    classes: names.clone(),
                    labels,
                    predicted,
                    confusion,
                };
                (losses, outcome)
            }
            Target::Values { values, .. } => {
                let targets: Vec<f32> = indices.iter().map(|&i| values[i]).collect();
                let predicted = outputs.clone();
                let losses: Vec<f64> = (targets.iter().zip(&predicted))
                    .map(|(y, p)| (*p as f64 - *y as f64).powi(2))
                    .collect();
                let outcome = Outcome::Values {
                    targets,
                    predicted,
                    scale: data.target_scale(),
                };
                (losses, outcome)
            }
            Target::Tokens {
                next,
                context,
                vocab,
            } => {
                let (t, v) = (*context, vocab.len().max(1));
                let mut targets = Vec::with_capacity(indices.len() * t);
                let mut predicted = Vec::with_capacity(indices.len() * t);
                let mut losses = Vec::with_capacity(indices.len());
                for (k, &i) in indices.iter().enumerate() {
                    let mut sum = 0.0;
                    for p in 0..t {
                        let row = &outputs[(k * t + p) * v..(k * t + p + 1) * v];
                        let target = next[i * t + p];
                        predicted.push(
                            (row.iter().enumerate())
                                .max_by(|a, b| a.1.total_cmp(b.1))
                                .map_or(0, |(c, _)| c) as u32,
                        );
                        targets.push(target);
                        sum -= (row.get(target as usize).copied().unwrap_or(0.0) as f64)
                            .max(1e-12)
                            .ln();
                    }
                    losses.push(sum / t.max(1) as f64);
                }
                let outcome = Outcome::Tokens {
                    targets,
                    predicted,
                    context: t,
                };
                (losses, outcome)
            }
        };
        let mut order: Vec<usize> = (0..indices.len()).collect();
        order.sort_by(|&a, &b| losses[b].total_cmp(&losses[a]).then(a.cmp(&b)));
        let top = order
            .iter()
            .take(20)
            .map(|&k| {
                let caption = outcome.caption(data, indices[k], k, losses[k]);
                (data.row(indices[k]).to_vec(), caption)
            })
            .collect();
        Predictions {
            indices: indices.to_vec(),
            losses,
            outputs,
            outcome,
            top,
            image_shape: (data.shape.len() == 3).then(|| data.image_shape()),
        }
    }

    /// The task's score: accuracy for classes (for text, of the next token at every
    /// position), R² for regression.
    pub fn score(&self) -> f64 {
        match &self.outcome {
            Outcome::Tokens {
                targets, predicted, ..
            } => {
                let right = targets
                    .iter()
                    .zip(predicted)
                    .filter(|(l, p)| l == p)
                    .count();
                right as f64 / targets.len().max(1) as f64
            }
            Outcome::Classes {
                labels, predicted, ..
            } => {
                let right = labels.iter().zip(predicted).filter(|(l, p)| l == p).count();
                right as f64 / labels.len().max(1) as f64
            }
            Outcome::Values { targets, .. } => {
                let n = targets.len().max(1) as f64;
                let mean = targets.iter().map(|&y| y as f64).sum::<f64>() / n;
                let variance = (targets.iter())
                    .map(|&y| (y as f64 - mean).powi(2))
                    .sum::<f64>()
                    / n;
                crate::task::r_squared(self.mean_loss(), variance)
            }
        }
    }

    pub fn mean_loss(&self) -> f64 {
        self.losses.iter().sum::<f64>() / self.losses.len().max(1) as f64
    }

    /// The `k` most frequent (label, predicted, count) confusions; none for regression.
    pub fn most_confused(&self, k: usize) -> Vec<(String, String, usize)> {
        let Outcome::Classes {
            classes, confusion, ..
        } = &self.outcome
        else {
            return Vec::new();
        };
        let mut pairs = Vec::new();
        for (l, row) in confusion.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                if l != p && n > 0 {
                    pairs.push((classes[l].clone(), classes[p].clone(), n));
                }
            }
        }
        pairs.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        pairs.truncate(k);
        pairs
    }

    /// The confusion matrix as a table; `None` for regression.
    fn confusion_table(&self) -> Option<(Vec<String>, Vec<Vec<String>>)> {
        let Outcome::Classes {
            classes, confusion, ..
        } = &self.outcome
        else {
            return None;
        };
        let mut headers = vec!["label \\ predicted".to_string()];
        headers.extend(classes.iter().cloned());
        let rows = confusion
            .iter()
            .enumerate()
            .map(|(l, row)| {
                std::iter::once(classes[l].clone())
                    .chain(row.iter().map(|n| n.to_string()))
                    .collect()
            })
            .collect();
        Some((headers, rows))
    }

    /// The headline: the score and the mean loss, over how many examples.
    fn headline(&self) -> String {
        let n = self.indices.len();
        match &self.outcome {
            Outcome::Classes { .. } => format!(
                "accuracy {:.4}, mean loss {:.4} over {n} examples",
                self.score(),
                self.mean_loss()
            ),
            Outcome::Values {
                targets,
                predicted,
                scale,
            } => {
                let mae = (targets.iter().zip(predicted))
                    .map(|(y, p)| (*p as f64 - *y as f64).abs())
                    .sum::<f64>()
                    / n.max(1) as f64;
                let rmse = self.mean_loss().sqrt();
                let errors = match scale {
                    Some(Scale { std, .. }) => format!(
                        "RMSE {}, MAE {} in the target's units ({}, {} standardised)",
                        format_number(rmse * std),
                        format_number(mae * std),
                        format_number(rmse),
                        format_number(mae)
                    ),
                    None => format!("RMSE {}, MAE {}", format_number(rmse), format_number(mae)),
                };
                format!("R² {:.4}, {errors}, over {n} examples", self.score())
            }
            Outcome::Tokens { targets, .. } => format!(
                "next-token accuracy {:.4}, mean loss {:.4} ({:.3} bits per token) over {n} \
                 windows, {} tokens",
                self.score(),
                self.mean_loss(),
                self.mean_loss() / std::f64::consts::LN_2,
                targets.len()
            ),
        }
    }

    /// What the captions of the top losses say.
    fn top_legend(&self) -> &'static str {
        match self.outcome {
            Outcome::Classes { .. } => "label→predicted (loss)",
            Outcome::Values { .. } => "target→predicted (error)",
            Outcome::Tokens { .. } => "next tokens→most probable (mean loss)",
        }
    }
}

impl Show for Predictions {
    fn text(&self) -> String {
        let mut out = self.headline() + "\n";
        match self.confusion_table() {
            Some((h, rows)) => {
                out += "most confused: ";
                out += &self
                    .most_confused(5)
                    .iter()
                    .map(|(l, p, n)| format!("{l}→{p} x{n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                out += "\n";
                out += &h.join(" | ");
                out += "\n";
                for r in rows {
                    out += &r.join(" | ");
                    out += "\n";
                }
            }
            None => {
                out += &format!("top losses, {}:\n", self.top_legend());
                for (_, caption) in self.top.iter().take(10) {
                    out += &format!("  {caption}\n");
                }
            }
        }
        out
    }
    fn html(&self) -> String {
        let top: Vec<(&[f32], String)> = self
            .top
            .iter()
            .map(|(p, c)| (p.as_slice(), c.clone()))
            .collect();
        let legend = self.top_legend();
        let top = match self.image_shape {
            Some((height, width)) => crate::show::image_grid(&top, height, width, (0.0, 1.0), 10),
            None => {
                let rows: Vec<Vec<String>> = top.iter().map(|(_, c)| vec![c.clone()]).collect();
                html_table(&[format!("example {legend}")], &rows)
            }
        };
        let confusion = self
            .confusion_table()
            .map(|(h, rows)| html_table(&h, &rows))
            .unwrap_or_default();
        format!(
            "<p>{}</p>{confusion}<p>top losses ({legend}):</p>{top}",
            self.headline(),
        )
    }
}

impl Trained {
    /// Predictions of the trained model on a split.
    pub fn predictions(&self, data: &Dataset, split: &str) -> Result<Predictions> {
        let indices = data.split(split)?.to_vec();
        let outputs = outputs(self.model.as_ref(), data, &indices)?;
        Ok(Predictions::from_outputs(data, &indices, outputs))
    }

    /// The first layer's weights drawn as images (one per unit or filter).
    pub fn first_layer_weights(&self, data: &Dataset) -> Result<ImageGrid> {
        let first = self.model.first_weight().ok_or_else(|| {
            Error::Invalid(format!(
                "{} names no first layer to show: implement Model::first_weight to name its weight",
                self.config.model.label()
            ))
        })?;
        let w = self.params.get(first)?;
        let dims = w.dims().to_vec();
        let rows = w.as_tensor().flatten_from(1)?.to_vec2::<f32>()?;
        let shape = match dims.as_slice() {
            [_, _, kh, kw] => (*kh, *kw),
            _ => data.image_shape(),
        };
        let per_image = shape.0 * shape.1;
        Ok(ImageGrid::new(
            rows.into_iter()
                .take(32)
                .enumerate()
                .map(|(i, r)| (r[..per_image.min(r.len())].to_vec(), format!("unit {i}")))
                .collect(),
            shape,
        ))
    }
}

/// The exact batch that enters the model at `step` (after zeroing, if the config zeroes
/// inputs), decoded as images with their labels: "visualize just before the net".
pub fn batch_preview(
    data: &Dataset,
    config: &TrainConfig,
    seeds: &Seeds,
    step: usize,
) -> Result<ImageGrid> {
    let indices = batch_indices(
        data.split("train")?,
        config.batch_size,
        seeds.data_order,
        step,
    );
    let (x, _) = data.batch(&indices, &Device::Cpu)?;
    let x = if config.zero_inputs {
        x.zeros_like()?
    } else {
        x
    };
    let rows = x.flatten_from(1)?.to_vec2::<f32>()?;
    let images = rows
        .into_iter()
        .zip(&indices)
        .map(|(r, &i)| (r, format!("#{i} {}", data.target_text(i))))
        .collect();
    let mut grid = ImageGrid::new(images, data.image_shape());
    grid.range = data.value_range;
    Ok(grid)
}

/// Rebuild an archived run's model with its final weights (the `weights` artifact every
/// run of the trainer stores).
pub fn load_run(
    archive: &Archive,
    run: &RunRecord,
    data: &Dataset,
) -> Result<(Box<dyn Model>, Arc<Params>)> {
    let config = TrainConfig::of_run(run)?;
    let seeds = Seeds::from_json(&run.components[1]);
    let hash = run
        .artifacts
        .get("weights")
        .ok_or_else(|| Error::Data(format!("run {} has no stored weights", run.short())))?;
    let (model, params) = config.build_model(data, &seeds)?;
    params.load_safetensors(&archive.blob(&recipe_archive::canonical::Hash::from_hex(hash)?)?)?;
    Ok((model, params))
}

/// An ensemble's result: averaged outputs (probabilities, or values) scored, beside each
/// member's score (accuracy, or R²).
#[derive(Clone, Debug)]
pub struct EnsembleResult {
    pub predictions: Predictions,
    /// (member run or label, score).
    pub members: Vec<(String, f64)>,
}

impl Show for EnsembleResult {
    fn text(&self) -> String {
        let score = match self.predictions.outcome {
            Outcome::Classes { .. } => "accuracy",
            Outcome::Values { .. } => "R²",
            Outcome::Tokens { .. } => "next-token accuracy",
        };
        let mut out = format!(
            "ensemble of {}: {score} {:.4}, loss {:.4}\n",
            self.members.len(),
            self.predictions.score(),
            self.predictions.mean_loss()
        );
        for (name, value) in &self.members {
            out += &format!("  member {name}: {score} {value:.4}\n");
        }
        out
    }
}

/// Average the outputs (class probabilities, or values) of several models on a split.
pub fn ensemble(
    members: &[(String, &dyn Model)],
    data: &Dataset,
    split: &str,
) -> Result<EnsembleResult> {
    if members.is_empty() {
        return Err(Error::Invalid(
            "an ensemble needs at least one member".into(),
        ));
    }
    let indices = data.split(split)?.to_vec();
    let mut sum: Vec<f32> = Vec::new();
    let mut scores = Vec::new();
    for (name, model) in members {
        let p = outputs(*model, data, &indices)?;
        scores.push((
            name.clone(),
            Predictions::from_outputs(data, &indices, p.clone()).score(),
        ));
        if sum.is_empty() {
            sum = p;
        } else {
            sum.iter_mut().zip(p).for_each(|(s, v)| *s += v);
        }
    }
    let n = members.len() as f32;
    let mean = sum.into_iter().map(|v| v / n).collect();
    Ok(EnsembleResult {
        predictions: Predictions::from_outputs(data, &indices, mean),
        members: scores,
    })
}

/// An ensemble of archived runs (their stored weights) evaluated on a split.
pub fn ensemble_runs(
    archive: &Archive,
    runs: &[RunRecord],
    data: &Dataset,
    split: &str,
) -> Result<EnsembleResult> {
    let models: Vec<(String, Box<dyn Model>)> = runs
        .iter()
        .map(|r| Ok((r.short(), load_run(archive, r, data)?.0)))
        .collect::<Result<_>>()?;
    let refs: Vec<(String, &dyn Model)> = models
        .iter()
        .map(|(n, m)| (n.clone(), m.as_ref()))
        .collect();
    ensemble(&refs, data, split)
}

/// Record a person's predictions on examples of a split as a run (recipe step
/// `baselines`), so the human baseline sits in the same tables as the models.
pub fn human_baseline(
    data: &Dataset,
    split: &str,
    indices: &[usize],
    predicted: &[u32],
    labeler: &str,
    options: &RunOptions,
) -> Result<RunRecord> {
    let labels = data.labels("a human baseline")?;
    if indices.len() != predicted.len() || indices.is_empty() {
        return Err(Error::Invalid(format!(
            "{} examples but {} predictions",
            indices.len(),
            predicted.len()
        )));
    }
    let allowed = data.split(split)?;
    if let Some(bad) = indices.iter().find(|i| !allowed.contains(i)) {
        return Err(Error::Invalid(format!(
            "example #{bad} is not in split {split:?}"
        )));
    }
    let archive = options.archive.as_ref().ok_or_else(|| {
        Error::Invalid(
            "a human baseline is recorded in an archive; give RunOptions an archive".into(),
        )
    })?;
    let correct = indices
        .iter()
        .zip(predicted)
        .filter(|(i, p)| labels[**i] == **p)
        .count();
    let acc = correct as f64 / indices.len() as f64;
    let config = serde_json::json!({"model": "human", "labeler": labeler, "split": split, "examples": indices});
    let mut spec = RunSpec::capture(
        if options.name.is_empty() {
            "human"
        } else {
            &options.name
        },
        config,
        BTreeMap::new(),
        data.fingerprint(),
    )?;
    spec.recipe_step = Some(
        options
            .recipe_step
            .clone()
            .unwrap_or_else(|| "baselines".into()),
    );
    let mut w = archive.begin_run(spec)?;
    w.log(0, &format!("{split}_acc"), acc)?;
    w.set_summary("examples", indices.len() as f64);
    Ok(w.finish(Status::Completed, None)?)
}

/// Ask the person at the notebook to label the examples `indices` of `split`, one at a
/// time, for [`human_baseline`]: each image is shown without its label, and the answer is a
/// class number or a class name (an answer that is neither is asked again). Fails where
/// nobody can answer (see [`crate::notebook::input`]) and for a target that has no classes.
pub fn ask_labels(data: &Dataset, split: &str, indices: &[usize]) -> Result<Vec<u32>> {
    data.labels("asking a person for labels")?;
    let classes = data.classes();
    let allowed = data.split(split)?;
    let mut answers = Vec::with_capacity(indices.len());
    for (n, &i) in indices.iter().enumerate() {
        if !allowed.contains(&i) {
            return Err(Error::Invalid(format!(
                "example #{i} is not in split {split:?}"
            )));
        }
        let unlabelled = ImageGrid {
            images: vec![(data.row(i).to_vec(), format!("#{i}"))],
            shape: data.image_shape(),
            range: data.value_range,
        };
        crate::show::display(&unlabelled);
        let prompt = format!(
            "example {} of {} (#{i}): class 0-{} or its name? ",
            n + 1,
            indices.len(),
            classes.len() - 1
        );
        loop {
            let answer = crate::notebook::input(&prompt)?;
            let answer = answer.trim();
            let class = answer
                .parse::<usize>()
                .ok()
                .filter(|&c| c < classes.len())
                .or_else(|| classes.iter().position(|name| name == answer));
            if let Some(class) = class {
                answers.push(class as u32);
                break;
            }
            println!("{answer:?} is no class: {}", classes.join(", "));
        }
    }
    Ok(answers)
}

impl Show for Trained {
    fn text(&self) -> String {
        let mut out = format!(
            "{} ({}): {}\n",
            self.run_id(),
            self.config.model.label(),
            self.status
        );
        for (k, v) in &self.summary {
            out += &format!("  {k:<12} {}\n", format_number(*v));
        }
        for c in &self.checks {
            out += &format!(
                "  check {} {}\n",
                c.name,
                if c.passed { "PASS" } else { "FAIL" }
            );
        }
        if let Some(sample) = self.samples.last() {
            out += &format!("  {}\n", sample.text().replace('\n', "\n  "));
        }
        out
    }
    fn html(&self) -> String {
        let series = |names: &[&str]| -> Vec<(String, Vec<(f64, f64)>)> {
            names
                .iter()
                .filter_map(|n| {
                    self.curves.get(*n).map(|c| {
                        (
                            n.to_string(),
                            c.iter().map(|(s, v)| (*s as f64, *v)).collect(),
                        )
                    })
                })
                .collect()
        };
        let rows: Vec<Vec<String>> = self
            .summary
            .iter()
            .map(|(k, v)| vec![k.clone(), format_number(*v)])
            .collect();
        format!(
            "<p><b>{}</b> {} — {}</p>{}{}{}",
            escape(&self.run_id()),
            escape(&self.config.model.label()),
            self.status,
            svg_lines(
                &series(&["train_loss", "val_loss", "test_loss"]),
                "loss",
                "step"
            ),
            if self.curves.contains_key("test_r2") || self.curves.contains_key("val_r2") {
                svg_lines(&series(&["val_r2", "test_r2"]), "R²", "step")
            } else if self.curves.contains_key("val_bpt") || self.curves.contains_key("test_bpt") {
                svg_lines(&series(&["val_bpt", "test_bpt"]), "bits per token", "step")
            } else {
                svg_lines(&series(&["val_acc", "test_acc"]), "accuracy", "step")
            },
            html_table(&["metric".into(), "value".into()], &rows)
        ) + &self.samples.last().map(Show::html).unwrap_or_default()
    }
}

show_in_jupyter!(Predictions, EnsembleResult, Trained);

/// The probability of the true class (regression: the predicted value) of fixed test
/// examples, snapshotted over training: how predictions move ("prediction dynamics"). Trains
/// unarchived, `every` steps apart.
pub fn prediction_dynamics(
    data: &Dataset,
    config: &TrainConfig,
    seeds: &Seeds,
    examples: usize,
    every: usize,
) -> Result<Dynamics> {
    let fixed: Vec<usize> = data.split("test")?.iter().copied().take(examples).collect();
    let mut series: Vec<(String, Vec<(f64, f64)>)> = fixed
        .iter()
        .map(|i| (format!("#{i} ({})", data.target_text(*i)), Vec::new()))
        .collect();
    let mut done = 0;
    while done < config.steps {
        let upto = (done + every.max(1)).min(config.steps);
        let t = crate::train::fit(
            data,
            &TrainConfig {
                steps: upto,
                eval_every: upto,
                ..config.clone()
            },
            seeds,
            &RunOptions::default().unarchived().quiet(),
        )?;
        let outputs = outputs(t.model.as_ref(), data, &fixed)?;
        for (k, &i) in fixed.iter().enumerate() {
            let value = match &data.target {
                Target::Classes { labels, names } => {
                    outputs[k * names.len() + labels[i] as usize] as f64
                }
                Target::Values { .. } => data.in_units(outputs[k] as f64),
                Target::Tokens {
                    next,
                    context,
                    vocab,
                } => {
                    let v = vocab.len();
                    (0..*context)
                        .map(|p| outputs[(k * context + p) * v + next[i * context + p] as usize])
                        .map(f64::from)
                        .sum::<f64>()
                        / *context as f64
                }
            };
            series[k].1.push((upto as f64, value));
        }
        done = upto;
    }
    let axis = match data.task() {
        Task::Classification { .. } => "probability of the true class",
        Task::Regression => "predicted value (target in brackets)",
        Task::NextToken { .. } => "mean probability of the true next tokens",
    };
    Ok(Dynamics {
        series,
        axis: axis.into(),
    })
}

/// Curves of the true-class probability (or the predicted value) of fixed examples over
/// training.
#[derive(Clone, Debug)]
pub struct Dynamics {
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// What the curves' values are.
    pub axis: String,
}

impl Show for Dynamics {
    fn text(&self) -> String {
        self.series
            .iter()
            .map(|(n, pts)| {
                format!(
                    "{n}: {}\n",
                    pts.iter()
                        .map(|(s, p)| format!("{s}:{p:.2}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })
            .collect()
    }
    fn html(&self) -> String {
        svg_lines(&self.series, &self.axis, "step")
    }
}

show_in_jupyter!(Dynamics);

/// Logits of a model for a batch, as plain rows (for tests and tables).
pub fn logits(model: &dyn Model, x: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(model
        .forward(x, false)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}

/// Predictions of an archived run (its stored weights) on a split.
pub fn predictions_of_run(
    archive: &Archive,
    run: &RunRecord,
    data: &Dataset,
    split: &str,
) -> Result<Predictions> {
    let (model, _) = load_run(archive, run, data)?;
    let indices = data.split(split)?.to_vec();
    let outputs = outputs(model.as_ref(), data, &indices)?;
    Ok(Predictions::from_outputs(data, &indices, outputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::fit;
    use crate::train::testing::{archived, small_mlp};

    fn config() -> TrainConfig {
        small_mlp(300, 100)
    }

    #[test]
    fn predictions_on_a_table_list_their_top_losses_as_rows_not_images() {
        let data = crate::train::testing::penguins();
        let config = TrainConfig {
            steps: 20,
            eval_every: 20,
            ..TrainConfig::default()
        };
        let quiet = RunOptions::default().unarchived().quiet();
        let trained = crate::fit(&data, &config, &Seeds::all(1), &quiet).unwrap();
        let html = trained.predictions(&data, "test").unwrap().html();
        assert!(!html.contains("<svg") && html.contains("Adelie→"), "{html}");
    }

    #[test]
    fn predictions_ensembles_and_archived_weights_agree() {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::digits().unwrap();
        let a = fit(&data, &config(), &Seeds::all(1), &archived(dir.path(), "a")).unwrap();
        let b = fit(&data, &config(), &Seeds::all(2), &archived(dir.path(), "b")).unwrap();
        let p = a.predictions(&data, "test").unwrap();
        assert_eq!(p.score().to_bits(), a.metric("test_acc").unwrap().to_bits());
        let Outcome::Classes { confusion, .. } = &p.outcome else {
            panic!("digits have classes")
        };
        assert_eq!(
            confusion.iter().flatten().sum::<usize>(),
            data.split("test").unwrap().len()
        );
        assert!(p.html().contains("data:image/png;base64,") && p.text().contains("most confused"));

        // The archived weights give the very same predictions.
        let archive = Archive::open(dir.path()).unwrap();
        let again = predictions_of_run(&archive, a.run.as_ref().unwrap(), &data, "test").unwrap();
        assert_eq!(again.outputs, p.outputs);

        let e = ensemble_runs(
            &archive,
            &[a.run.clone().unwrap(), b.run.clone().unwrap()],
            &data,
            "test",
        )
        .unwrap();
        let best_member = e.members.iter().map(|(_, acc)| *acc).fold(0.0, f64::max);
        assert!(e.predictions.score() >= best_member - 0.02, "{}", e.text());
        assert!(ensemble(&[], &data, "test").is_err());
    }

    #[test]
    fn human_baseline_is_a_run_beside_the_models() {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::digits().unwrap();
        let shown: Vec<usize> = data.split("test").unwrap()[..10].to_vec();
        let labels = data.labels("the test").unwrap();
        let mut answers: Vec<u32> = shown.iter().map(|&i| labels[i]).collect();
        answers[0] = (answers[0] + 1) % 10; // one mistake
        let run = human_baseline(
            &data,
            "test",
            &shown,
            &answers,
            "alice",
            &archived(dir.path(), "human"),
        )
        .unwrap();
        assert_eq!(run.summary["test_acc"], 0.9);
        assert_eq!(run.recipe_step.as_deref(), Some("baselines"));
        assert!(human_baseline(
            &data,
            "test",
            &shown,
            &answers[..3],
            "alice",
            &archived(dir.path(), "h")
        )
        .is_err());
        let train_example = data.split("train").unwrap()[0];
        assert!(human_baseline(
            &data,
            "test",
            &[train_example],
            &[0],
            "alice",
            &archived(dir.path(), "h")
        )
        .is_err());
    }

    #[test]
    fn batch_preview_shows_what_the_trainer_feeds() {
        let data = Dataset::digits().unwrap();
        let grid = batch_preview(&data, &config(), &Seeds::all(3), 5).unwrap();
        let expected = batch_indices(data.split("train").unwrap(), 64, 3, 5);
        assert_eq!(grid.images.len(), 64);
        assert_eq!(grid.images[0].0, data.row(expected[0]));
        let zeroed = batch_preview(
            &data,
            &TrainConfig {
                zero_inputs: true,
                ..config()
            },
            &Seeds::all(3),
            5,
        )
        .unwrap();
        assert!(zeroed
            .images
            .iter()
            .all(|(p, _)| p.iter().all(|&v| v == 0.0)));
    }

    #[test]
    fn first_layer_weights_and_dynamics() {
        let data = Dataset::digits().unwrap();
        let t = fit(
            &data,
            &config(),
            &Seeds::all(1),
            &RunOptions::default().unarchived().quiet(),
        )
        .unwrap();
        let w = t.first_layer_weights(&data).unwrap();
        assert_eq!((w.images.len(), w.shape), (32, (8, 8)));
        let d = prediction_dynamics(
            &data,
            &TrainConfig {
                steps: 200,
                ..config()
            },
            &Seeds::all(1),
            4,
            100,
        )
        .unwrap();
        assert_eq!(d.series.len(), 4);
        assert!(d.series.iter().all(|(_, pts)| pts.len() == 2));
        assert!(d.html().contains("polyline"));
    }
}
