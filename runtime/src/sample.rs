//! Samples from a text model: what a next-token model "predicts" is text, so its
//! predictions are samples, drawn token by token from its scores at a temperature.
//!
//! A draw is a pure function of (model, prompt, length, temperature, seed): each token comes
//! from one uniform draw of the seeded stream against the cumulative probabilities, summed
//! in f64 in vocabulary order. The trainer draws one sample at every evaluation of a text
//! run from the run's `sampling` seed and archives them with the run (artifact `samples`),
//! so a reader sees how the text changes over training and a re-run draws the same text.

use crate::data::Dataset;
use crate::models::Model;
use crate::rng::Rng;
use crate::show::{escape, Show};
use crate::task::Task;
use crate::{show_in_jupyter, Error, Result};
use candle_core::{DType, Device, Tensor, D};
use recipe_archive::{Archive, RunRecord};
use serde::{Deserialize, Serialize};

/// Tokens the trainer draws at each evaluation of a text run.
pub const TRAINING_SAMPLE_TOKENS: usize = 160;

/// One sample: its prompt and the text drawn after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The training step it was drawn after (`None` for a sample drawn in a notebook).
    pub step: Option<usize>,
    pub temperature: f64,
    pub seed: u64,
    pub prompt: String,
    pub text: String,
}

/// Draw `tokens` tokens after `prompt` (empty: after a newline, when the vocabulary has one,
/// else after token 0) at `temperature` (0: always the most probable token), from `seed`.
pub fn sample(
    model: &dyn Model,
    data: &Dataset,
    prompt: &str,
    tokens: usize,
    temperature: f64,
    seed: u64,
) -> Result<Sample> {
    let text = draw(
        model,
        data,
        prompt,
        tokens,
        temperature,
        &mut Rng::stream(seed, "samples"),
    )?;
    Ok(Sample {
        step: None,
        temperature,
        seed,
        prompt: prompt.to_string(),
        text,
    })
}

/// The draw of [`sample`] from a given stream.
pub(crate) fn draw(
    model: &dyn Model,
    data: &Dataset,
    prompt: &str,
    tokens: usize,
    temperature: f64,
    rng: &mut Rng,
) -> Result<String> {
    let context = match (data.task(), data.shape.as_slice()) {
        (Task::NextToken { .. }, [t]) => *t,
        _ => {
            return Err(Error::Invalid(format!(
                "sampling needs a text set (Dataset::text); {} asks for {}",
                data.name,
                data.task().describe()
            )))
        }
    };
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(Error::Invalid(format!(
            "temperature must be finite and at least 0, not {temperature}"
        )));
    }
    let mut ids = if prompt.is_empty() {
        vec![data.encode("\n").map_or(0, |ids| ids[0])]
    } else {
        data.encode(prompt)?
    };
    let start = ids.len();
    crate::process::prepare();
    crate::process::on_worker(|| -> Result<()> {
        for _ in 0..tokens {
            let window = &ids[ids.len().saturating_sub(context)..];
            let x: Vec<f32> = window.iter().map(|&i| i as f32).collect();
            let x = Tensor::from_vec(x, (1, window.len()), &Device::Cpu)?;
            let scores = model.forward(&x, false)?; // (1, T, V)
            let last = scores.get(0)?.get(window.len() - 1)?; // (V,)
            let next = if temperature == 0.0 {
                last.argmax(D::Minus1)?.to_scalar::<u32>()?
            } else {
                let p = candle_nn::ops::softmax_last_dim(&(last / temperature)?)?;
                pick(&p.to_dtype(DType::F64)?.to_vec1::<f64>()?, rng.uniform())
            };
            ids.push(next);
        }
        Ok(())
    })?;
    Ok(data.decode(&ids[start..]))
}

/// The token whose cumulative probability first exceeds `u` (the last, should rounding leave
/// the sum below `u`).
fn pick(probabilities: &[f64], u: f64) -> u32 {
    let mut sum = 0.0;
    for (i, p) in probabilities.iter().enumerate() {
        sum += p;
        if u < sum {
            return i as u32;
        }
    }
    probabilities.len().saturating_sub(1) as u32
}

/// Samples over training, as the trainer archived them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// The samples archived with a text run (none for other runs).
    pub fn of_run(archive: &Archive, run: &RunRecord) -> Result<Samples> {
        let Some(hash) = run.artifacts.get("samples") else {
            return Ok(Samples::default());
        };
        let hash = recipe_archive::canonical::Hash::from_hex(hash)?;
        serde_json::from_slice(&archive.blob(&hash)?)
            .map_err(|e| Error::Invalid(format!("run {}: unreadable samples: {e}", run.run_id)))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Sample> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last sample (the trained model's).
    pub fn last(&self) -> Option<&Sample> {
        self.0.last()
    }
}

impl Sample {
    fn heading(&self) -> String {
        let when = self
            .step
            .map_or("drawn".to_string(), |s| format!("after step {}", s + 1));
        format!(
            "{when}, temperature {}, seed {}{}",
            self.temperature,
            self.seed,
            if self.prompt.is_empty() {
                String::new()
            } else {
                format!(", prompt {:?}", self.prompt)
            }
        )
    }
}

impl Show for Sample {
    fn text(&self) -> String {
        format!("{}:\n{}{}", self.heading(), self.prompt, self.text)
    }

    fn html(&self) -> String {
        format!(
            "<div><b>{}</b><pre><span style=\"opacity:0.6\">{}</span>{}</pre></div>",
            escape(&self.heading()),
            escape(&self.prompt),
            escape(&self.text)
        )
    }
}

impl Show for Samples {
    fn text(&self) -> String {
        self.0
            .iter()
            .map(Show::text)
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    fn html(&self) -> String {
        self.0.iter().map(Show::html).collect()
    }
}

show_in_jupyter!(Sample, Samples);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_picks_by_cumulative_probability() {
        assert_eq!(pick(&[0.2, 0.5, 0.3], 0.1), 0);
        assert_eq!(pick(&[0.2, 0.5, 0.3], 0.2), 1);
        assert_eq!(pick(&[0.2, 0.5, 0.3], 0.69), 1);
        assert_eq!(pick(&[0.2, 0.5, 0.3], 0.99), 2);
        assert_eq!(pick(&[0.2, 0.5, 0.29], 0.999), 2);
    }
}
