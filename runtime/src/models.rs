//! The model zoo: an MLP, a small ConvNet and a small ResNet, written like candle-nn (a
//! plain struct and a constructor taking a `VarBuilder` and a name prefix), with dropout
//! masks drawn from the runtime's seeded RNG; and [`ModelSpec::custom`], any net a notebook
//! defines (see [`crate::custom`]).

use crate::custom::{CustomModel, ModelIo};
use crate::ops::Activation;
use crate::params::Params;
use crate::rng::Rng;
use crate::{Error, Result};
use candle_core::{Tensor, D};
use candle_nn::{conv2d, linear, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// A classifier: input batch (B, *example shape) -> logits (B, classes).
///
/// Implement it for a net of your own: `forward` is all it needs. `train` is true during
/// training steps (dropout on) and false when evaluating.
pub trait Model: Send + Sync {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
    /// The name of the final layer's bias (what "init well" sets from class priors):
    /// `head.bias` unless the model says otherwise.
    fn final_bias(&self) -> &str {
        "head.bias"
    }
    /// The name of the first layer's weight (what "first-layer weights" shows), if the
    /// model has one worth showing.
    fn first_weight(&self) -> Option<&str> {
        None
    }
    /// Make dropout masks a function of (seed, step), so a resumed run draws the masks an
    /// uninterrupted one would.
    fn reseed_dropout(&self, _step: usize) {}
    /// A sequence model (tokens (B, T) -> scores (B, T, V)) embeds its input here, (B, T, C),
    /// so the causality check can differentiate the output at one position with respect to
    /// every input position. `None` (the default): not a sequence model.
    fn embed(&self, _x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(None)
    }
    /// The rest of `forward` after [`Model::embed`]: `forward(x) == forward_embedded(embed(x))`.
    fn forward_embedded(&self, _e: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        candle_core::bail!("not a sequence model: it has no embed step")
    }
}

/// Which model to build, as it is archived in a run's config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// Fully connected layers of these widths, ReLU between.
    Mlp { hidden: Vec<usize> },
    /// Two 3x3 conv layers (ReLU, 2x2 max-pool each) then a hidden dense layer.
    ConvNet { channels: [usize; 2], hidden: usize },
    /// A 3x3 stem, `blocks` residual blocks of two 3x3 convs, global average pool.
    ResNet { channels: usize, blocks: usize },
    /// A GPT-style character model ([`crate::gpt`]): `layers` pre-norm blocks of causal
    /// self-attention over `heads` heads and an MLP, residual stream `width` wide; its
    /// vocabulary and context are the text's.
    Gpt {
        width: usize,
        heads: usize,
        layers: usize,
    },
    /// A net defined in a notebook cell: its name and hyperparameters are archived, its
    /// builder is this session's code ([`ModelSpec::custom`]).
    Custom(CustomModel),
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec::Mlp { hidden: vec![64] }
    }
}

impl ModelSpec {
    /// Your own net, named `name`, with hyperparameters `hyper` (any serializable value, e.g.
    /// `json!({"hidden": 32})`, recorded in the run's config), built by `build` from the
    /// runtime's seeded `VarBuilder` and what the data asks for ([`ModelIo`]).
    ///
    /// ```ignore
    /// let spec = ModelSpec::custom("tiny-mlp", json!({"hidden": 32}), |vb, io| {
    ///     TinyMlp::new(io.inputs(), 32, io.outputs, vb)
    /// })?;
    /// ```
    pub fn custom<M, E, F>(name: &str, hyper: impl Serialize, build: F) -> Result<ModelSpec>
    where
        M: Model + 'static,
        E: std::fmt::Display,
        F: Fn(VarBuilder<'static>, &ModelIo) -> std::result::Result<M, E> + Send + Sync + 'static,
    {
        Ok(ModelSpec::Custom(CustomModel::new(name, hyper, build)?))
    }

    /// Whether this zoo model maps a window of tokens to scores at every position (the
    /// GPT). A net of a cell's own is not judged here: its output's shape is checked by the
    /// task's loss when it first runs.
    pub fn is_sequence_model(&self) -> bool {
        matches!(self, ModelSpec::Gpt { .. })
    }

    /// Build the model for examples of `shape` and `classes` classes, its parameters drawn
    /// from `params`' seed and its dropout masks from `dropout_seed`.
    pub fn build(
        &self,
        shape: &[usize],
        classes: usize,
        dropout: f64,
        dropout_seed: u64,
        params: &Arc<Params>,
    ) -> Result<Box<dyn Model>> {
        let vb = params.builder();
        let drop = Dropout::new(dropout, dropout_seed)?;
        Ok(match self {
            ModelSpec::Mlp { hidden } => {
                Box::new(Mlp::new(shape.iter().product(), hidden, classes, drop, vb)?)
            }
            ModelSpec::ConvNet { channels, hidden } => Box::new(ConvNet::new(
                image_dims(shape)?,
                *channels,
                *hidden,
                classes,
                drop,
                vb,
            )?),
            ModelSpec::ResNet { channels, blocks } => Box::new(ResNet::new(
                image_dims(shape)?,
                *channels,
                *blocks,
                classes,
                drop,
                vb,
            )?),
            ModelSpec::Gpt {
                width,
                heads,
                layers,
            } => {
                let [context] = shape else {
                    return Err(Error::Invalid(format!(
                        "a GPT reads windows of tokens (a text set), not examples of shape \
                         {shape:?}"
                    )));
                };
                let shape = crate::gpt::GptShape {
                    vocab: classes,
                    context: *context,
                    width: *width,
                    heads: *heads,
                    layers: *layers,
                };
                Box::new(crate::gpt::Gpt::new(shape, drop, vb)?)
            }
            ModelSpec::Custom(custom) => custom.build(
                vb,
                &ModelIo {
                    shape: shape.to_vec(),
                    outputs: classes,
                    dropout,
                    dropout_seed,
                },
            )?,
        })
    }

    /// A one-word description for run names and tables.
    pub fn label(&self) -> String {
        match self {
            ModelSpec::Mlp { hidden } => format!("mlp{hidden:?}"),
            ModelSpec::ConvNet { channels, hidden } => format!("convnet{channels:?}-{hidden}"),
            ModelSpec::ResNet { channels, blocks } => format!("resnet{channels}x{blocks}"),
            ModelSpec::Gpt { width, layers, .. } => format!("gpt{layers}x{width}"),
            ModelSpec::Custom(custom) => custom.name.clone(),
        }
    }
}

fn image_dims(shape: &[usize]) -> Result<(usize, usize, usize)> {
    match shape {
        [c, h, w] => Ok((*c, *h, *w)),
        other => Err(Error::Invalid(format!(
            "convolutional models need (channels, height, width) examples, not {other:?}"
        ))),
    }
}

/// Dropout whose masks come from a seeded stream (candle-nn's draws from an unseeded RNG).
/// `spatial` drops whole channels of (B, C, H, W) inputs.
pub struct Dropout {
    p: f64,
    seed: u64,
    rng: Mutex<Rng>,
}

impl Dropout {
    pub fn new(p: f64, seed: u64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Invalid(format!(
                "dropout probability {p} must be in [0, 1)"
            )));
        }
        Ok(Dropout {
            p,
            seed,
            rng: Mutex::new(Rng::stream(seed, "dropout")),
        })
    }

    /// Restart the mask stream at a training step.
    pub fn at_step(&self, step: usize) {
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) =
            Rng::stream(self.seed, &format!("dropout/{step}"));
    }

    fn apply(&self, x: &Tensor, train: bool, spatial: bool) -> candle_core::Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let dims = x.dims();
        let mask_shape: Vec<usize> = if spatial && dims.len() == 4 {
            vec![dims[0], dims[1], 1, 1]
        } else {
            dims.to_vec()
        };
        let n: usize = mask_shape.iter().product();
        let keep = 1.0 - self.p;
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let mask: Vec<f32> = (0..n)
            .map(|_| {
                if rng.uniform() < keep {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect();
        x.broadcast_mul(&Tensor::from_vec(mask, mask_shape, x.device())?)
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.apply(x, train, false)
    }

    pub fn forward_spatial(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.apply(x, train, true)
    }
}

/// A dense layer with candle-nn's parameters and init (`weight` (out, in), `bias` (out)),
/// computed by [`crate::ops::linear`]: one GEMM forward, a backward that skips the gradient
/// of the images.
pub struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Dense> {
        let layer = linear(in_dim, out_dim, vb)?;
        let bias = layer
            .bias()
            .cloned()
            .ok_or_else(|| Error::Invalid("linear made no bias".into()))?;
        Ok(Dense {
            weight: layer.weight().clone(),
            bias,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::linear(x, &self.weight, &self.bias, Activation::Identity)
    }

    /// The layer with a ReLU after it, fused into one operation.
    pub fn forward_relu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::linear(x, &self.weight, &self.bias, Activation::Relu)
    }
}

/// Fully connected layers: in -> hidden... -> classes.
pub struct Mlp {
    layers: Vec<Dense>,
    head: Dense,
    dropout: Dropout,
}

impl Mlp {
    pub fn new(
        in_dim: usize,
        hidden: &[usize],
        classes: usize,
        dropout: Dropout,
        vb: VarBuilder,
    ) -> Result<Mlp> {
        let mut layers = Vec::new();
        let mut width = in_dim;
        for (i, &h) in hidden.iter().enumerate() {
            layers.push(Dense::new(width, h, vb.pp(format!("fc{}", i + 1)))?);
            width = h;
        }
        Ok(Mlp {
            layers,
            head: Dense::new(width, classes, vb.pp("head"))?,
            dropout,
        })
    }
}

impl Model for Mlp {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = x.flatten_from(1)?; // (B, D)
        for layer in &self.layers {
            h = self.dropout.forward(&layer.forward_relu(&h)?, train)?;
        }
        self.head.forward(&h) // (B, C)
    }
    fn reseed_dropout(&self, step: usize) {
        self.dropout.at_step(step);
    }
    fn first_weight(&self) -> Option<&str> {
        Some(if self.layers.is_empty() {
            "head.weight"
        } else {
            "fc1.weight"
        })
    }
}

/// A 3x3 convolution (stride 1, padding 1), computed by [`crate::ops::conv3x3`] (a GEMM per
/// image over its im2col patches, forward and backward). Parameters are candle-nn's
/// (`weight` (O, C, 3, 3), `bias` (O)), drawn through the same `VarBuilder`.
pub struct Conv3x3 {
    weight: Tensor,
    bias: Tensor,
}

impl Conv3x3 {
    pub fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Conv3x3> {
        let conv = conv2d(c_in, c_out, 3, SAME, vb)?;
        let bias = conv
            .bias()
            .cloned()
            .ok_or_else(|| Error::Invalid("conv2d made no bias".into()))?;
        Ok(Conv3x3 {
            weight: conv.weight().clone(),
            bias,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::conv3x3(x, &self.weight, &self.bias, false)
    }

    /// The convolution with a ReLU after it, fused into one operation.
    pub fn forward_relu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::conv3x3(x, &self.weight, &self.bias, true)
    }
}

/// conv3x3 -> ReLU -> pool2 -> conv3x3 -> ReLU -> pool2 -> dense -> ReLU -> head.
pub struct ConvNet {
    conv1: Conv3x3,
    conv2: Conv3x3,
    fc: Dense,
    head: Dense,
    dropout: Dropout,
}

const SAME: Conv2dConfig = Conv2dConfig {
    padding: 1,
    stride: 1,
    dilation: 1,
    groups: 1,
    cudnn_fwd_algo: None,
};

impl ConvNet {
    pub fn new(
        (c, h, w): (usize, usize, usize),
        channels: [usize; 2],
        hidden: usize,
        classes: usize,
        dropout: Dropout,
        vb: VarBuilder,
    ) -> Result<ConvNet> {
        let conv1 = Conv3x3::new(c, channels[0], vb.pp("conv1"))?;
        let conv2 = Conv3x3::new(channels[0], channels[1], vb.pp("conv2"))?;
        let flat = channels[1] * (h / 4) * (w / 4);
        if flat == 0 {
            return Err(Error::Invalid(format!(
                "images of {h}x{w} are too small for two 2x2 poolings"
            )));
        }
        Ok(ConvNet {
            conv1,
            conv2,
            fc: Dense::new(flat, hidden, vb.pp("fc"))?,
            head: Dense::new(hidden, classes, vb.pp("head"))?,
            dropout,
        })
    }
}

impl Model for ConvNet {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = crate::ops::max_pool2(&self.conv1.forward_relu(x)?)?; // (B, C1, H/2, W/2)
        let h = self.dropout.forward_spatial(&h, train)?;
        let h = crate::ops::max_pool2(&self.conv2.forward_relu(&h)?)?; // (B, C2, H/4, W/4)
        let h = self.fc.forward_relu(&h.flatten_from(1)?)?; // (B, hidden)
        self.head.forward(&self.dropout.forward(&h, train)?) // (B, classes)
    }
    fn first_weight(&self) -> Option<&str> {
        Some("conv1.weight")
    }
    fn reseed_dropout(&self, step: usize) {
        self.dropout.at_step(step);
    }
}

/// stem conv3x3 -> [x + conv(relu(conv(x)))] x blocks -> global average pool -> head.
pub struct ResNet {
    stem: Conv3x3,
    blocks: Vec<(Conv3x3, Conv3x3)>,
    head: Dense,
    dropout: Dropout,
}

impl ResNet {
    pub fn new(
        (c, _, _): (usize, usize, usize),
        channels: usize,
        blocks: usize,
        classes: usize,
        dropout: Dropout,
        vb: VarBuilder,
    ) -> Result<ResNet> {
        let stem = Conv3x3::new(c, channels, vb.pp("stem"))?;
        let blocks = (0..blocks)
            .map(|i| {
                let b = vb.pp(format!("block{}", i + 1));
                Ok((
                    Conv3x3::new(channels, channels, b.pp("conv1"))?,
                    Conv3x3::new(channels, channels, b.pp("conv2"))?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(ResNet {
            stem,
            blocks,
            head: Dense::new(channels, classes, vb.pp("head"))?,
            dropout,
        })
    }
}

impl Model for ResNet {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = self.stem.forward_relu(x)?; // (B, C, H, W)
        for (a, b) in &self.blocks {
            let r = b.forward(&a.forward_relu(&h)?)?;
            h = (h + r)?.relu()?;
            h = self.dropout.forward_spatial(&h, train)?;
        }
        let pooled = h.mean(D::Minus1)?.mean(D::Minus1)?; // (B, C)
        self.head.forward(&pooled)
    }
    fn first_weight(&self) -> Option<&str> {
        Some("stem.weight")
    }
    fn reseed_dropout(&self, step: usize) {
        self.dropout.at_step(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    fn check_shapes(spec: ModelSpec) {
        let params = Params::new(0);
        let model = spec.build(&[1, 8, 8], 10, 0.0, 0, &params).unwrap();
        let x = Tensor::zeros((3, 1, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.forward(&x, false).unwrap().dims(), &[3, 10]);
        assert!(
            params.get(model.final_bias()).is_ok()
                && model.first_weight().is_some_and(|w| params.get(w).is_ok())
        );
    }

    #[test]
    fn every_model_maps_images_to_logits() {
        check_shapes(ModelSpec::Mlp {
            hidden: vec![16, 8],
        });
        check_shapes(ModelSpec::ConvNet {
            channels: [4, 8],
            hidden: 16,
        });
        check_shapes(ModelSpec::ResNet {
            channels: 4,
            blocks: 2,
        });
    }

    #[test]
    fn conv3x3_matches_candle_conv2d() {
        let params = Params::new(3);
        let vb = params.builder();
        let ours = Conv3x3::new(3, 5, vb.pp("c")).unwrap();
        let theirs = conv2d(3, 5, 3, SAME, vb.pp("c")).unwrap();
        let x = Tensor::from_vec(
            (0..2 * 3 * 7 * 6)
                .map(|i| ((i * 13) % 7) as f32 - 3.0)
                .collect::<Vec<_>>(),
            (2, 3, 7, 6),
            &Device::Cpu,
        )
        .unwrap();
        let a = ours
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = theirs
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4),
            "im2col conv differs from conv2d"
        );
    }

    #[test]
    fn dropout_masks_are_seeded() {
        let x = Tensor::ones((4, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mask = |seed| {
            Dropout::new(0.5, seed)
                .unwrap()
                .forward(&x, true)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(mask(1), mask(1));
        assert_ne!(mask(1), mask(2));
        let eval = Dropout::new(0.5, 1).unwrap().forward(&x, false).unwrap();
        assert_eq!(eval.sum_all().unwrap().to_scalar::<f32>().unwrap(), 32.0);
    }
}

#[cfg(test)]
mod gradient_tests {
    //! Every layer's gradients against central finite differences (f32, so tolerances are
    //! loose: 2% relative plus 1e-3 absolute).
    use crate::models::ModelSpec;
    use crate::params::Params;
    use candle_core::{DType, Device, Tensor};

    fn check(spec: ModelSpec, shape: &[usize]) {
        let params = Params::new(5);
        let model = spec.build(shape, 3, 0.0, 0, &params).unwrap();
        let mut dims = vec![2];
        dims.extend(shape);
        let n: usize = dims.iter().product();
        // Distinct, non-zero inputs: no ReLU or max-pool kink within eps of a sample point.
        let x = Tensor::from_vec(
            (0..n)
                .map(|i| 0.05 + ((i * 37 % 101) as f32) / 101.0)
                .collect::<Vec<_>>(),
            dims,
            &Device::Cpu,
        )
        .unwrap();
        let y = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
        let loss = |m: &dyn crate::models::Model| {
            crate::train::cross_entropy(&m.forward(&x, false).unwrap(), &y)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let grads = crate::train::cross_entropy(&model.forward(&x, false).unwrap(), &y)
            .unwrap()
            .backward()
            .unwrap();
        let mut bad = Vec::new();
        for (name, var) in params.vars() {
            let g = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for k in [0, base.len() / 2, base.len() - 1] {
                let eps = 1e-3f32;
                let mut plus = base.clone();
                plus[k] += eps;
                var.set(&Tensor::from_vec(plus, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let lp = loss(model.as_ref());
                let mut minus = base.clone();
                minus[k] -= eps;
                var.set(&Tensor::from_vec(minus, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let lm = loss(model.as_ref());
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let numeric = (lp - lm) / (2.0 * eps as f64);
                let analytic = g[k] as f64;
                if (numeric - analytic).abs() > 1e-3 + 0.02 * analytic.abs() {
                    bad.push(format!(
                        "{name}[{k}]: autograd {analytic}, finite differences {numeric}"
                    ));
                }
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn mlp_gradients_match_finite_differences() {
        check(ModelSpec::Mlp { hidden: vec![5, 4] }, &[6]);
    }

    #[test]
    fn convnet_gradients_match_finite_differences() {
        check(
            ModelSpec::ConvNet {
                channels: [2, 3],
                hidden: 4,
            },
            &[1, 8, 8],
        );
    }

    #[test]
    fn resnet_gradients_match_finite_differences() {
        check(
            ModelSpec::ResNet {
                channels: 2,
                blocks: 1,
            },
            &[1, 6, 6],
        );
    }
}
