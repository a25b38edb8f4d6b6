//! The task: what a dataset asks a model to predict, and so the loss it trains on, the
//! metrics it is scored by and what the checks expect of a fresh model.
//!
//! | task | model output | loss | metrics | loss at init | init well |
//! |---|---|---|---|---|---|
//! | classification | (B, C) logits | cross-entropy | `acc` | ln C | final bias = log priors: their entropy |
//! | regression | (B, 1) | mean squared error | `rmse`, `mae`, `r2` | E[y²] | final bias = mean of y: Var(y) |
//! | next token | (B, T, V) scores | cross-entropy per position | `bpt`, `acc` | ln V | final bias = log unigram: its entropy |
//!
//! Every task has one *score*, higher is better (`acc`, `r2`): the input-independent check
//! and the tuner compare runs by it. Metrics are logged as `{split}_{metric}`, so a
//! classification run has `test_acc`, a regression run `test_rmse`, `test_mae`, `test_r2`,
//! and a text model `test_bpt` (bits per token: the loss over ln 2) and `test_acc` (the
//! next token ranked first). A text model's loss is the mean over every position of every
//! window.

use candle_core::{DType, Tensor};
use serde::Serialize;

/// What the examples' targets are, and so how a model is trained and scored on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// One of `classes` classes per example.
    Classification { classes: usize },
    /// One real number per example.
    Regression,
    /// At each position of a window of tokens, the next one of `vocab` tokens.
    NextToken { vocab: usize },
}

impl Task {
    /// Outputs the model gives per example: a score per class, or one value.
    pub fn outputs(self) -> usize {
        match self {
            Task::Classification { classes } => classes,
            Task::Regression => 1,
            Task::NextToken { vocab } => vocab,
        }
    }

    /// In words, for errors and summaries.
    pub fn describe(self) -> String {
        match self {
            Task::Classification { classes } => format!("classification into {classes} classes"),
            Task::Regression => "regression".into(),
            Task::NextToken { vocab } => format!("next-token prediction over {vocab} tokens"),
        }
    }

    /// The metric every run of this task is compared by (higher is better).
    pub fn score(self) -> &'static str {
        match self {
            Task::Classification { .. } | Task::NextToken { .. } => "acc",
            Task::Regression => "r2",
        }
    }

    /// Mean loss over a batch: cross-entropy of logits (B, C) against labels (B,) u32; the
    /// squared error of outputs (B, 1) against targets (B,) f32; cross-entropy of scores
    /// (B, T, V) against next tokens (B, T) u32, over all B * T positions.
    pub fn loss(self, output: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Task::Classification { .. } => candle_nn::loss::cross_entropy(output, target),
            Task::Regression => candle_nn::loss::mse(&output.flatten_all()?, target),
            Task::NextToken { .. } => {
                let (b, t, v) = scores_per_position(output)?;
                candle_nn::loss::cross_entropy(
                    &output.reshape((b * t, v))?,
                    &target.reshape(b * t)?,
                )
            }
        }
    }

    /// Each example's loss, (B,) f32: what "top losses" ranks by.
    pub fn losses(self, output: &Tensor, target: &Tensor) -> candle_core::Result<Vec<f32>> {
        match self {
            Task::Classification { .. } => {
                let logp = candle_nn::ops::log_softmax(output, 1)?; // (B, C)
                let picked = logp.gather(&target.unsqueeze(1)?, 1)?; // (B, 1)
                picked.neg()?.flatten_all()?.to_vec1::<f32>()
            }
            Task::Regression => (output.flatten_all()? - target)?.sqr()?.to_vec1::<f32>(),
            Task::NextToken { .. } => {
                // Each window's mean over its positions.
                let logp = candle_nn::ops::log_softmax(output, 2)?; // (B, T, V)
                let picked = logp.gather(&target.unsqueeze(2)?, 2)?; // (B, T, 1)
                picked.neg()?.squeeze(2)?.mean(1)?.to_vec1::<f32>()
            }
        }
    }
}

/// (B, T, V) of a text model's output; an error that says what a model for text must give.
fn scores_per_position(output: &Tensor) -> candle_core::Result<(usize, usize, usize)> {
    match output.dims() {
        &[b, t, v] => Ok((b, t, v)),
        dims => candle_core::bail!(
            "next-token prediction needs scores at every position, (batch, positions, \
             vocabulary), but the model gave {dims:?}: a model for text maps each position of \
             its window (as ModelSpec::Gpt does)"
        ),
    }
}

/// Sums over a split, chunk by chunk, that make a task's metrics at the end.
#[derive(Clone, Debug)]
pub struct Tally {
    task: Task,
    n: usize,
    loss_sum: f64,
    /// Classification: examples whose highest score is their label; next token: positions.
    correct: usize,
    /// Next token: positions scored.
    positions: usize,
    /// Regression: sums of |error|, y and y² (R² needs the targets' variance).
    abs_sum: f64,
    y_sum: f64,
    y_sq_sum: f64,
}

impl Tally {
    pub fn new(task: Task) -> Tally {
        Tally {
            task,
            n: 0,
            loss_sum: 0.0,
            correct: 0,
            positions: 0,
            abs_sum: 0.0,
            y_sum: 0.0,
            y_sq_sum: 0.0,
        }
    }

    /// Add a chunk: the model's outputs and the targets as the dataset batches them.
    pub fn add(&mut self, output: &Tensor, target: &Tensor) -> crate::Result<()> {
        let b = target.dim(0)?;
        let loss = self.task.loss(output, target)?;
        self.loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * b as f64;
        self.n += b;
        match self.task {
            Task::Classification { .. } => {
                let predicted = output.argmax(1)?.to_vec1::<u32>()?;
                let labels = target.to_vec1::<u32>()?;
                self.correct += predicted
                    .iter()
                    .zip(&labels)
                    .filter(|(p, l)| p == l)
                    .count();
            }
            Task::NextToken { .. } => {
                let predicted = output.argmax(2)?.flatten_all()?.to_vec1::<u32>()?;
                let next = target.flatten_all()?.to_vec1::<u32>()?;
                self.positions += next.len();
                self.correct += predicted.iter().zip(&next).filter(|(p, l)| p == l).count();
            }
            Task::Regression => {
                let predicted = output.flatten_all()?.to_vec1::<f32>()?;
                for (p, y) in predicted.iter().zip(target.to_vec1::<f32>()?) {
                    let (p, y) = (*p as f64, y as f64);
                    self.abs_sum += (p - y).abs();
                    self.y_sum += y;
                    self.y_sq_sum += y * y;
                }
            }
        }
        Ok(())
    }

    /// The mean loss, then each metric: `[("acc", ..)]`, `[("rmse", ..), ("mae", ..),
    /// ("r2", ..)]` or `[("bpt", ..), ("acc", ..)]`. R² is 1 - MSE / Var(y) over the split
    /// (NaN when the targets are constant).
    pub fn finish(&self) -> Scores {
        let n = self.n.max(1) as f64;
        let loss = self.loss_sum / n;
        let metrics = match self.task {
            Task::Classification { .. } => vec![("acc", self.correct as f64 / n)],
            Task::Regression => {
                let mean = self.y_sum / n;
                let variance = self.y_sq_sum / n - mean * mean;
                let r2 = r_squared(loss, variance);
                vec![("rmse", loss.sqrt()), ("mae", self.abs_sum / n), ("r2", r2)]
            }
            Task::NextToken { .. } => vec![
                ("bpt", loss / std::f64::consts::LN_2),
                ("acc", self.correct as f64 / self.positions.max(1) as f64),
            ],
        };
        Scores {
            loss,
            metrics,
            score: self.task.score(),
        }
    }
}

/// R² from the mean squared error and the targets' variance over the same examples:
/// 1 - MSE / Var(y); NaN when the targets are constant (no variance to explain).
pub fn r_squared(mse: f64, variance: f64) -> f64 {
    if variance > 0.0 {
        1.0 - mse / variance
    } else {
        f64::NAN
    }
}

/// A model's mean loss and metrics on a split.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub loss: f64,
    /// (metric, value), in the task's order.
    pub metrics: Vec<(&'static str, f64)>,
    score: &'static str,
}

impl Scores {
    /// The task's score ([`Task::score`]): accuracy or R².
    pub fn score(&self) -> f64 {
        self.metric(self.score).unwrap_or(f64::NAN)
    }

    /// One metric by name (`acc`, `rmse`, `mae`, `r2`, `bpt`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|(n, _)| *n == name).map(|m| m.1)
    }

    /// `{split}_loss` and `{split}_{metric}` for each metric: what the trainer logs.
    pub fn logged(&self, split: &str) -> Vec<(String, f64)> {
        std::iter::once((format!("{split}_loss"), self.loss))
            .chain(
                self.metrics
                    .iter()
                    .map(|(m, v)| (format!("{split}_{m}"), *v)),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn regression_metrics_match_numpy() {
        // numpy: y = [1, 2, 3, 6]; p = [1.5, 2, 2, 5]
        //   mse = mean((p-y)**2) = 0.5625, mae = 0.625, r2 = 1 - mse / y.var() = 1 - 0.5625 / 3.5
        let y = Tensor::new(&[1f32, 2., 3., 6.], &Device::Cpu).unwrap();
        let p = Tensor::new(&[[1.5f32], [2.], [2.], [5.]], &Device::Cpu).unwrap();
        let mut t = Tally::new(Task::Regression);
        t.add(&p.narrow(0, 0, 3).unwrap(), &y.narrow(0, 0, 3).unwrap())
            .unwrap();
        t.add(&p.narrow(0, 3, 1).unwrap(), &y.narrow(0, 3, 1).unwrap())
            .unwrap();
        let s = t.finish();
        // The loss is summed per chunk from f32 means: equal to about 1e-7.
        assert!((s.loss - 0.5625).abs() < 1e-6, "{s:?}");
        assert!((s.metric("rmse").unwrap() - 0.75).abs() < 1e-6);
        assert!((s.metric("mae").unwrap() - 0.625).abs() < 1e-9);
        assert!((s.score() - (1.0 - 0.5625 / 3.5)).abs() < 1e-6);
        let losses = Task::Regression.losses(&p, &y).unwrap();
        assert_eq!(losses, vec![0.25, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn issue_22_next_token_loss_is_the_mean_over_positions_and_bits_are_nats_over_ln2() {
        // Two windows of two positions, vocabulary 2. Uniform scores at three positions
        // (ln 2 each) and a confident right answer at the fourth (ln(1 + e^-4)).
        let scores = Tensor::new(
            &[[[0f32, 0.], [0., 0.]], [[0., 0.], [4., 0.]]],
            &Device::Cpu,
        )
        .unwrap();
        let next = Tensor::new(&[[1u32, 0], [1, 0]], &Device::Cpu).unwrap();
        let task = Task::NextToken { vocab: 2 };
        let ln2 = std::f32::consts::LN_2;
        let sure = (1.0 + (-4f32).exp()).ln();
        let losses = task.losses(&scores, &next).unwrap();
        assert!((losses[0] - ln2).abs() < 1e-6);
        assert!((losses[1] - (ln2 + sure) / 2.0).abs() < 1e-6);
        let mut t = Tally::new(task);
        t.add(&scores, &next).unwrap();
        let s = t.finish();
        assert!((s.loss - ((3.0 * ln2 + sure) / 4.0) as f64).abs() < 1e-6);
        assert!((s.metric("bpt").unwrap() - s.loss / std::f64::consts::LN_2).abs() < 1e-12);
        // Ties go to the first token: positions (0,0) and (1,0) miss, (0,1) and (1,1) hit.
        assert_eq!(s.score(), 0.5);
    }

    #[test]
    fn classification_losses_are_per_example_cross_entropy() {
        let logits = Tensor::new(&[[0f32, 0.], [2., 0.]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
        let task = Task::Classification { classes: 2 };
        let losses = task.losses(&logits, &labels).unwrap();
        assert!((losses[0] - std::f32::consts::LN_2).abs() < 1e-6);
        assert!((losses[1] - (1.0 + (-2f32).exp()).ln()).abs() < 1e-6);
        let mean = task
            .loss(&logits, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((mean - (losses[0] + losses[1]) / 2.0).abs() < 1e-6);
        let mut t = Tally::new(task);
        t.add(&logits, &labels).unwrap();
        assert_eq!(t.finish().logged("val")[1], ("val_acc".to_string(), 0.5));
    }
}
