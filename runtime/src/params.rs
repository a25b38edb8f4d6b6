//! Trainable parameters: one sorted map of named variables, initialised from the runtime's
//! seeded RNG instead of candle's unseeded one.
//!
//! Models are written exactly like candle-nn's (`candle_nn::linear(in, out, vb.pp("fc1"))`);
//! the [`VarBuilder`] that [`Params::builder`] returns draws each tensor from its own stream
//! `init/<name>` of the init seed, honouring candle-nn's init hints (Kaiming, uniform,
//! constant). Because the map is a `BTreeMap`, every walk over the parameters (optimizer
//! steps, gradient norms, checkpoints) goes in one order in every process.

use crate::rng::Rng;
use crate::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A model's parameters by name.
pub struct Params {
    seed: u64,
    vars: Mutex<BTreeMap<String, Var>>,
}

impl Params {
    /// Empty parameters whose initial values will come from `seed`.
    pub fn new(seed: u64) -> Arc<Params> {
        Arc::new(Params {
            seed,
            vars: Mutex::new(BTreeMap::new()),
        })
    }

    /// A builder for model constructors (f32, CPU).
    pub fn builder(self: &Arc<Self>) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(SeededInit(self.clone())), DType::F32, Device::Cpu)
    }

    /// Every parameter, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// One parameter by name.
    pub fn get(&self, name: &str) -> Result<Var> {
        self.lock().get(name).cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "no parameter {name:?}; the model has {}",
                self.lock().keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Number of scalars.
    pub fn count(&self) -> usize {
        self.lock().values().map(|v| v.elem_count()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Var>> {
        // A panic while holding this lock cannot leave the map half-updated (inserts are
        // single calls), so a poisoned lock is still usable.
        self.vars.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// All tensors as safetensors bytes: no metadata (so the bytes depend on the values
    /// alone), names in sorted order.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        tensors_to_safetensors(
            self.vars()
                .into_iter()
                .map(|(k, v)| (k, v.as_tensor().clone()))
                .collect(),
        )
    }

    /// Overwrite parameters with the tensors of a safetensors file made by
    /// [`Params::to_safetensors`]; a missing or misshapen tensor is an error.
    pub fn load_safetensors(&self, bytes: &[u8]) -> Result<()> {
        let tensors = tensors_from_safetensors(bytes)?;
        for (name, var) in self.vars() {
            let t = tensors
                .get(&name)
                .ok_or_else(|| Error::Data(format!("checkpoint has no tensor {name:?}")))?;
            if t.dims() != var.dims() {
                return Err(Error::Data(format!(
                    "checkpoint tensor {name:?} is {:?}, the model's is {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(t)?;
        }
        Ok(())
    }
}

/// Tensors as safetensors bytes, without metadata, in name order.
pub(crate) fn tensors_to_safetensors(tensors: BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    safetensors::serialize(tensors, None).map_err(|e| Error::Data(format!("safetensors: {e}")))
}

/// Tensors back from safetensors bytes.
pub(crate) fn tensors_from_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Data(format!("not a safetensors checkpoint: {e}")))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            Ok((
                name,
                candle_core::safetensors::Load::load(&view, &Device::Cpu)?,
            ))
        })
        .collect()
}

/// The candle-nn backend that creates each parameter from its seeded stream.
struct SeededInit(Arc<Params>);

impl SimpleBackend for SeededInit {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut vars = self.0.lock();
        if let Some(var) = vars.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "parameter {name} exists with shape {:?}, asked for {shape:?}",
                    var.shape()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let values = draw(
            &mut Rng::stream(self.0.seed, &format!("init/{name}")),
            &shape,
            init,
        );
        let tensor = Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.0.lock().get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("parameter {name} has no shape yet"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.lock().contains_key(name)
    }
}

/// Values for one parameter, following candle-nn's meaning of each init hint.
fn draw(rng: &mut Rng, shape: &Shape, init: Init) -> Vec<f32> {
    let n = shape.elem_count();
    let normal = |rng: &mut Rng, mean: f64, std: f64| {
        (0..n).map(|_| (mean + std * rng.normal()) as f32).collect()
    };
    let uniform = |rng: &mut Rng, lo: f64, up: f64| {
        (0..n)
            .map(|_| (lo + (up - lo) * rng.uniform()) as f32)
            .collect()
    };
    match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn => FanInOut::FanIn.for_shape(shape),
                FanInOut::FanOut => FanInOut::FanOut.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(rng, 0.0, std),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_and_layers_are_independent() {
        let a = Params::new(3);
        let _ = candle_nn::linear(4, 2, a.builder().pp("fc1")).unwrap();
        let b = Params::new(3);
        let _ = candle_nn::linear(9, 9, b.builder().pp("other")).unwrap();
        let _ = candle_nn::linear(4, 2, b.builder().pp("fc1")).unwrap();
        let w = |p: &Params| {
            p.get("fc1.weight")
                .unwrap()
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(w(&a), w(&b));
        let c = Params::new(4);
        let _ = candle_nn::linear(4, 2, c.builder().pp("fc1")).unwrap();
        assert_ne!(w(&a), w(&c));
        assert_eq!(a.count(), 4 * 2 + 2);
    }

    #[test]
    fn checkpoints_are_byte_stable_and_reload() {
        let a = Params::new(1);
        let _ = candle_nn::linear(3, 2, a.builder().pp("l")).unwrap();
        let bytes = a.to_safetensors().unwrap();
        assert_eq!(bytes, a.to_safetensors().unwrap());
        let b = Params::new(2);
        let _ = candle_nn::linear(3, 2, b.builder().pp("l")).unwrap();
        b.load_safetensors(&bytes).unwrap();
        assert_eq!(b.to_safetensors().unwrap(), bytes);
    }
}
