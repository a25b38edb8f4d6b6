//! A small GPT-style character model: token and position embeddings, pre-norm blocks of
//! causal self-attention and an MLP, a final layer norm and a linear head to the vocabulary.
//! Written like the rest of the zoo (candle-nn layers from the runtime's seeded builder),
//! with nanoGPT's init: every weight N(0, 0.02), the residual projections N(0, 0.02 /
//! sqrt(2 * layers)) so the residual stream does not grow with depth, biases 0, layer norms
//! 1 and 0.
//!
//! Input: token ids as a (B, T) tensor (f32 holding whole numbers, as every dataset's
//! features are), T at most `context`. Output: scores (B, T, vocab), position t a function of
//! tokens 0..=t only. [`Model::embed`] and [`Model::forward_embedded`] split the forward pass
//! at the embeddings, for the causality check ([`crate::checks::Causality`]).
//!
//! Not here: the next-token task ([`crate::task::Task::NextToken`]) and text data
//! ([`crate::data::text`]); its fused operations are in [`crate::seq_ops`].

use crate::models::{Dropout, Model};
use crate::ops::Activation::{self, Gelu, Identity};
use crate::Result;
use candle_core::{DType, Tensor};
use candle_nn::{Embedding, Init, Module, VarBuilder};

/// The shape of a [`Gpt`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptShape {
    /// Tokens in the vocabulary (the head's outputs).
    pub vocab: usize,
    /// Longest sequence (position embeddings).
    pub context: usize,
    /// Width of the residual stream; a multiple of `heads`.
    pub width: usize,
    pub heads: usize,
    pub layers: usize,
}

/// nanoGPT's standard deviation for weights and embeddings.
const INIT_STD: f64 = 0.02;

fn normal(std: f64) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: std,
    }
}

/// A dense layer over the last dimension, (..., in) -> (..., out), and its activation: the
/// runtime's fused linear ([`crate::ops::linear`]) on the rows.
struct Dense {
    weight: Tensor,
    bias: Tensor,
    activation: Activation,
}

impl Dense {
    /// Weight N(0, std), bias 0.
    fn new(
        (in_dim, out_dim): (usize, usize),
        std: f64,
        activation: Activation,
        vb: VarBuilder,
    ) -> candle_core::Result<Dense> {
        Ok(Dense {
            weight: vb.get_with_hints((out_dim, in_dim), "weight", normal(std))?,
            bias: vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?,
            activation,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::linear(x, &self.weight, &self.bias, self.activation)
    }
}

/// Layer norm (weight 1, bias 0, eps 1e-5), with its backward pass
/// ([`crate::seq_ops::layer_norm`]): candle-nn's `LayerNorm` runs a fused kernel that has
/// none, so nothing before it would learn.
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn new(width: usize, vb: VarBuilder) -> candle_core::Result<Norm> {
        Ok(Norm {
            weight: vb.get_with_hints(width, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(width, "bias", Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::seq_ops::layer_norm(x, &self.weight, &self.bias)
    }
}

/// Causal self-attention over `heads` heads.
struct Attention {
    qkv: Dense,
    proj: Dense,
    heads: usize,
    /// Positions past its own a query may see: 0 is causal. Only tests plant another value
    /// (the recipe's example of a bug the causality check must catch).
    look_ahead: usize,
}

impl Attention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (qkv, heads, look_ahead) = (&self.qkv, self.heads, self.look_ahead);
        // (B, T, C): the qkv projection runs inside the attention's own operation.
        let y = crate::seq_ops::self_attention(x, &qkv.weight, &qkv.bias, heads, look_ahead)?;
        self.proj.forward(&y) // (B, T, C)
    }
}

/// ln -> attention -> residual, ln -> MLP (4x, GELU fused into `fc`) -> residual.
struct Block {
    ln1: Norm,
    attention: Attention,
    ln2: Norm,
    fc: Dense,
    proj: Dense,
}

/// The GPT: see the module's header.
pub struct Gpt {
    shape: GptShape,
    token: Embedding,
    position: Embedding,
    blocks: Vec<Block>,
    ln_f: Norm,
    head: Dense,
    dropout: Dropout,
    /// A planted bug: every example sees the batch's mean embedding.
    mix_batch: bool,
}

impl Gpt {
    pub fn new(shape: GptShape, dropout: Dropout, vb: VarBuilder) -> Result<Gpt> {
        let GptShape {
            vocab,
            context,
            width,
            heads,
            layers,
        } = shape;
        if heads == 0 || width % heads != 0 || layers == 0 || context == 0 || vocab == 0 {
            return Err(crate::Error::Invalid(format!(
                "a GPT needs a width that is a multiple of its heads and at least one layer, \
                 position and token, not {shape:?}"
            )));
        }
        let embedding = |n: usize, name: &str| -> candle_core::Result<Embedding> {
            let table = vb
                .pp(name)
                .get_with_hints((n, width), "weight", normal(INIT_STD))?;
            Ok(Embedding::new(table, width))
        };
        let norm = |name: &str| Norm::new(width, vb.pp(name));
        let residual_std = INIT_STD / (2.0 * layers as f64).sqrt();
        let dense = Dense::new;
        let blocks = (0..layers)
            .map(|i| -> candle_core::Result<Block> {
                let vb = vb.pp(format!("blocks.{i}"));
                Ok(Block {
                    ln1: Norm::new(width, vb.pp("ln1"))?,
                    attention: Attention {
                        qkv: dense((width, 3 * width), INIT_STD, Identity, vb.pp("attn.qkv"))?,
                        proj: dense((width, width), residual_std, Identity, vb.pp("attn.proj"))?,
                        heads,
                        look_ahead: 0,
                    },
                    ln2: Norm::new(width, vb.pp("ln2"))?,
                    fc: dense((width, 4 * width), INIT_STD, Gelu, vb.pp("mlp.fc"))?,
                    proj: dense(
                        (4 * width, width),
                        residual_std,
                        Identity,
                        vb.pp("mlp.proj"),
                    )?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Gpt {
            shape,
            token: embedding(vocab, "token")?,
            position: embedding(context, "position")?,
            blocks,
            ln_f: norm("ln_f")?,
            head: dense((width, vocab), INIT_STD, Identity, vb.pp("head"))?,
            dropout,
            mix_batch: false,
        })
    }

    /// Let every attention layer see `positions` tokens ahead: the recipe's example of a
    /// bug that the causality check ([`crate::checks::Causality`]) must catch, planted on
    /// purpose to watch it do so. Never train a model so changed.
    pub fn plant_look_ahead(&mut self, positions: usize) {
        for block in &mut self.blocks {
            block.attention.look_ahead = positions;
        }
    }

    /// Add the batch's mean embedding to every example's: a planted bug of the kind a
    /// batch-wide statistic brings (the backprop dependency check must catch it).
    pub fn plant_batch_mixing(&mut self) {
        self.mix_batch = true;
    }

    /// Token plus position embeddings of (B, T) token ids: (B, T, C).
    fn embed_tokens(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, t) = x.dims2()?; // (B, T) token ids
        if t > self.shape.context {
            candle_core::bail!(
                "sequences of {t} tokens are longer than the context of {}",
                self.shape.context
            );
        }
        let ids = x.to_dtype(DType::U32)?;
        let positions = Tensor::arange(0u32, t as u32, x.device())?;
        self.token
            .forward(&ids)?
            .broadcast_add(&self.position.forward(&positions)?) // (B, T, C)
    }
}

impl Model for Gpt {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_embedded(&self.embed_tokens(x)?, train)
    }

    fn embed(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        self.embed_tokens(x).map(Some)
    }

    fn forward_embedded(&self, e: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = self.dropout.forward(e, train)?;
        if self.mix_batch {
            x = x.broadcast_add(&x.mean_keepdim(0)?)?;
        }
        for block in &self.blocks {
            let a = block.attention.forward(&block.ln1.forward(&x)?)?;
            x = (x + self.dropout.forward(&a, train)?)?;
            let m = block
                .proj
                .forward(&block.fc.forward(&block.ln2.forward(&x)?)?)?;
            x = (x + self.dropout.forward(&m, train)?)?;
        }
        self.head.forward(&self.ln_f.forward(&x)?) // (B, T, V)
    }

    fn reseed_dropout(&self, step: usize) {
        self.dropout.at_step(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;
    use candle_core::Device;

    const SHAPE: GptShape = GptShape {
        vocab: 11,
        context: 8,
        width: 16,
        heads: 4,
        layers: 2,
    };

    fn gpt(seed: u64) -> (Gpt, std::sync::Arc<Params>) {
        let params = Params::new(seed);
        let model = Gpt::new(SHAPE, Dropout::new(0.0, 0).unwrap(), params.builder()).unwrap();
        (model, params)
    }

    fn tokens() -> Tensor {
        let ids: Vec<f32> = (0..2 * 8).map(|i| ((i * 7) % 11) as f32).collect();
        Tensor::from_vec(ids, (2, 8), &Device::Cpu).unwrap()
    }

    #[test]
    fn issue_22_a_gpt_maps_tokens_to_scores_per_position_with_nanogpts_init() {
        let (model, params) = gpt(1);
        let out = model.forward(&tokens(), false).unwrap();
        assert_eq!(out.dims(), [2, 8, 11]);
        // Loss at init near ln(V): the head starts small, so the scores are near uniform.
        let logits = out.reshape((16, 11)).unwrap();
        let targets =
            Tensor::from_vec((0..16u32).map(|i| i % 11).collect(), 16, &Device::Cpu).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &targets)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (loss / (11f32).ln() - 1.0).abs() < 0.05,
            "loss at init {loss}"
        );
        // nanoGPT's init: residual projections smaller by sqrt(2 * layers), biases zero.
        let std = |name: &str| {
            let v = params.get(name).unwrap().as_tensor().flatten_all().unwrap();
            let v: Vec<f32> = v.to_vec1().unwrap();
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt()
        };
        assert!((std("blocks.0.mlp.fc.weight") - 0.02).abs() < 0.002);
        assert!((std("blocks.0.mlp.proj.weight") - 0.01).abs() < 0.001);
        assert_eq!(std("head.bias"), 0.0);
        // Same seed, same bits.
        let again = gpt(1).0.forward(&tokens(), false).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&out), bits(&again));
    }

    #[test]
    fn issue_22_the_causality_check_catches_attention_that_looks_one_token_ahead() {
        use crate::checks::causality_violations;
        let (mut model, _) = gpt(2);
        let violations = |model: &Gpt| {
            let e = model.embed(&tokens()).unwrap().unwrap();
            causality_violations(|e| model.forward_embedded(e, false), &e).unwrap()
        };
        assert_eq!(violations(&model), []);
        model.plant_look_ahead(1);
        // Each of the two layers lets a position see the next one: t sees t + 1 and t + 2.
        let expected: Vec<(usize, usize)> = (0..8)
            .flat_map(|t| (t + 1..=(t + 2).min(7)).map(move |s| (t, s)))
            .collect();
        assert_eq!(violations(&model), expected);
    }

    #[test]
    fn a_sequence_longer_than_the_context_is_an_error_not_a_panic() {
        let (model, _) = gpt(3);
        let long = Tensor::zeros((1, 9), DType::F32, &Device::Cpu).unwrap();
        let err = model.forward(&long, false).unwrap_err().to_string();
        assert!(err.contains("longer than the context of 8"), "{err}");
    }
}
