//! The optimizer: AdamW whose state can be saved and restored bit for bit (candle-nn's keeps
//! its moments private), learning-rate schedules, and gradient clipping by global norm.
//!
//! Parameters are always visited in sorted name order, so sums over them (the gradient norm)
//! add up in one order in every process.

use crate::lanes::widest_lanes;
use crate::params::{tensors_from_safetensors, tensors_to_safetensors};
use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// How the learning rate moves over training. Constant unless said otherwise: any decay is
/// an explicit choice (the recipe's advice).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The learning rate as set. A variant with no fields, not a unit one, so that a field
    /// given with it (`{"kind": "constant", "warmup": 5}`) is refused, not ignored.
    Constant {},
    /// Linear warmup over `warmup` steps, then cosine decay to `min_factor` x lr at the end.
    Cosine { warmup: usize, min_factor: f64 },
    /// Multiply by `factor` every `every` steps.
    Step { every: usize, factor: f64 },
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule::Constant {}
    }
}

impl Schedule {
    /// The learning rate at `step` (0-based) of `total`.
    pub fn lr(&self, base: f64, step: usize, total: usize) -> f64 {
        match *self {
            Schedule::Constant {} => base,
            Schedule::Cosine { warmup, min_factor } => {
                if step < warmup {
                    base * (step + 1) as f64 / warmup as f64
                } else {
                    let progress =
                        (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
                    let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
                    base * (min_factor + (1.0 - min_factor) * cos)
                }
            }
            Schedule::Step { every, factor } => base * factor.powi((step / every.max(1)) as i32),
        }
    }
}

/// The gradients of one step, taken from candle's store in parameter-name order (read in
/// place, never copied), with their global L2 norm (summed in that order, in f64).
pub struct Gradients {
    /// (index into the parameter list, contiguous f32 gradient).
    pub(crate) values: Vec<(usize, Tensor)>,
    pub norm: f64,
}

/// Collect the gradients of `params` (sorted by name) from a backward pass.
pub fn gradients(params: &[(String, Var)], grads: &GradStore) -> Result<Gradients> {
    let mut values = Vec::with_capacity(params.len());
    let mut sum = 0f64;
    for (k, (_, var)) in params.iter().enumerate() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let g = g.to_dtype(DType::F32)?.contiguous()?;
            sum += crate::ops::with_f32(&g, sum_of_squares)?;
            values.push((k, g));
        }
    }
    Ok(Gradients {
        values,
        norm: sum.sqrt(),
    })
}

/// AdamW (decoupled weight decay) with its moments kept by parameter name.
///
/// The update is one fused loop over each parameter's values (PyTorch's formula:
/// `w = w(1 - lr wd) - lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps)`), rather than a dozen
/// tensor operations that each allocate a temporary.
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Updates done so far.
    pub step: u64,
    m: BTreeMap<String, Vec<f32>>,
    v: BTreeMap<String, Vec<f32>>,
}

impl AdamW {
    pub fn new(beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> AdamW {
        AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient, gradients first scaled by `scale`
    /// (1.0, or the clipping factor).
    pub fn update(
        &mut self,
        params: &[(String, Var)],
        grads: &Gradients,
        lr: f64,
        scale: f64,
    ) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        let (b1, b2, eps) = (self.beta1 as f32, self.beta2 as f32, self.eps as f32);
        let (step_size, c2_sqrt) = ((lr / c1) as f32, c2.sqrt() as f32);
        let (decay, scale) = ((1.0 - lr * self.weight_decay) as f32, scale as f32);
        for (k, g) in &grads.values {
            let Some((name, var)) = params.get(*k) else {
                continue;
            };
            let w = var.as_tensor();
            let m = self
                .m
                .entry(name.clone())
                .or_insert_with(|| vec![0.0; w.elem_count()]);
            let v = self
                .v
                .entry(name.clone())
                .or_insert_with(|| vec![0.0; w.elem_count()]);
            if m.len() != w.elem_count() || g.elem_count() != w.elem_count() {
                return Err(Error::Invalid(format!(
                    "optimizer state for {name:?} does not match the parameter's size"
                )));
            }
            let update = Update {
                m: RefCell::new(m),
                v: RefCell::new(v),
                step: Step {
                    b1,
                    b2,
                    eps,
                    step_size,
                    c2_sqrt,
                    decay,
                    scale,
                },
            };
            w.inplace_op2(g, &update)?;
        }
        Ok(())
    }

    /// The moments as safetensors bytes (`m.<name>`, `v.<name>`); the step count is saved
    /// beside it by the caller.
    pub fn state_safetensors(&self) -> Result<Vec<u8>> {
        let mut all = BTreeMap::new();
        for (prefix, moments) in [("m", &self.m), ("v", &self.v)] {
            for (k, values) in moments {
                all.insert(
                    format!("{prefix}.{k}"),
                    Tensor::from_slice(values, values.len(), &candle_core::Device::Cpu)?,
                );
            }
        }
        tensors_to_safetensors(all)
    }

    /// Restore moments saved by [`AdamW::state_safetensors`] and the step count.
    pub fn load_state(&mut self, bytes: &[u8], step: u64) -> Result<()> {
        let tensors = tensors_from_safetensors(bytes)?;
        self.m.clear();
        self.v.clear();
        for (k, t) in tensors {
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            match k.split_once('.') {
                Some(("m", name)) => self.m.insert(name.to_string(), values),
                Some(("v", name)) => self.v.insert(name.to_string(), values),
                _ => {
                    return Err(Error::Data(format!(
                        "optimizer state has an unknown tensor {k:?}"
                    )))
                }
            };
        }
        self.step = step;
        Ok(())
    }
}

/// Σ x² in f64 over eight interleaved partial sums, added in a fixed order at the end: the
/// same bits every time, and eight independent chains the compiler can vectorise.
fn sum_of_squares(values: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += (x as f64) * (x as f64);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// The AdamW update of one parameter, applied to the parameter's own storage: no copy of
/// the weights out of their tensor and back.
struct Update<'a> {
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
    step: Step,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(
        &self,
        w: &mut CpuStorage,
        w_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(w), CpuStorage::F32(g), Some((w0, w1)), Some((g0, g1))) = (
            w,
            g,
            w_layout.contiguous_offsets(),
            g_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("adamw: parameters and gradients must be contiguous f32");
        };
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        adamw_kernel(&mut w[w0..w1], &mut m, &mut v, &g[g0..g1], self.step);
        Ok(())
    }
}

/// The per-step constants of the AdamW update.
#[derive(Clone, Copy)]
struct Step {
    b1: f32,
    b2: f32,
    eps: f32,
    step_size: f32,
    c2_sqrt: f32,
    decay: f32,
    scale: f32,
}

/// The update over one parameter's values, in plain IEEE operations (see [`crate::lanes`]).
#[inline(always)]
fn adamw_values(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: Step) {
    for (((w, m), v), g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        let g = g * k.scale;
        *m = k.b1 * *m + (1.0 - k.b1) * g;
        *v = k.b2 * *v + (1.0 - k.b2) * g * g;
        *w = *w * k.decay - k.step_size * *m / (v.sqrt() / k.c2_sqrt + k.eps);
    }
}

widest_lanes!(
    /// [`adamw_values`] on the widest lanes the CPU has.
    fn adamw_kernel = adamw_values(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: Step)
);

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_matches_pytorch() {
        // torch.optim.AdamW's documented update, transcribed in plain Python (float64):
        //   w=[1.0,-2.0]; m=v=[0,0]; lr,wd,b1,b2,eps=0.1,0.01,0.9,0.999,1e-8
        //   for t in 1..3: g=[2*x for x in w]; w=[x*(1-lr*wd) for x in w]
        //     m=[b1*m+(1-b1)*g]; v=[b2*v+(1-b2)*g*g]
        //     w=[x - lr/(1-b1**t) * m/(sqrt(v)/sqrt(1-b2**t)+eps)]
        //   -> [0.6989111831582322, -1.6949445143849768]
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let params = vec![("w".to_string(), w.clone())];
        let mut opt = AdamW::new(0.9, 0.999, 1e-8, 0.01);
        for _ in 0..3 {
            let grads = w
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            opt.update(&params, &gradients(&params, &grads).unwrap(), 0.1, 1.0)
                .unwrap();
        }
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (got[0] - 0.698_911_2).abs() < 1e-5 && (got[1] + 1.694_944_5).abs() < 1e-5,
            "{got:?}"
        );
    }

    #[test]
    fn saved_state_resumes_bit_for_bit() {
        let run = |split: Option<usize>| {
            let w = Var::new(&[0.5f32, 1.5, -1.0], &Device::Cpu).unwrap();
            let params = vec![("w".to_string(), w.clone())];
            let mut opt = AdamW::new(0.9, 0.999, 1e-8, 0.0);
            for i in 0..6 {
                if Some(i) == split {
                    let (state, step, weights) = (
                        opt.state_safetensors().unwrap(),
                        opt.step,
                        w.as_tensor().copy().unwrap(),
                    );
                    opt = AdamW::new(0.9, 0.999, 1e-8, 0.0);
                    opt.load_state(&state, step).unwrap();
                    w.set(&weights).unwrap();
                }
                let grads = (w.as_tensor().sqr().unwrap().sum_all().unwrap())
                    .backward()
                    .unwrap();
                opt.update(&params, &gradients(&params, &grads).unwrap(), 0.05, 1.0)
                    .unwrap();
            }
            w.as_tensor().to_vec1::<f32>().unwrap()
        };
        assert_eq!(run(None), run(Some(3)));
    }

    #[test]
    fn vector_and_scalar_updates_agree_bit_for_bit() {
        let mut rng = crate::Rng::stream(1, "t");
        let mut draw = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<f32>>();
        let (w0, g) = (draw(1003), draw(1003));
        let k = Step {
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            step_size: 3e-4,
            c2_sqrt: 0.0447,
            decay: 0.9999,
            scale: 0.7,
        };
        let (mut w1, mut m1, mut v1) = (w0.clone(), vec![0.1; 1003], vec![0.2; 1003]);
        let (mut w2, mut m2, mut v2) = (w0.clone(), vec![0.1; 1003], vec![0.2; 1003]);
        // The scalar reference, one element at a time with no vectorisation possible.
        for i in 0..w1.len() {
            adamw_values(
                &mut w1[i..i + 1],
                &mut m1[i..i + 1],
                &mut v1[i..i + 1],
                &g[i..i + 1],
                k,
            );
        }
        adamw_kernel(&mut w2, &mut m2, &mut v2, &g, k);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            (bits(&w1), bits(&m1), bits(&v1)),
            (bits(&w2), bits(&m2), bits(&v2))
        );
    }

    #[test]
    fn sum_of_squares_is_exact_on_small_integers() {
        let values: Vec<f32> = (0..21).map(|i| i as f32).collect();
        assert_eq!(
            sum_of_squares(&values),
            (0..21).map(|i| (i * i) as f64).sum::<f64>()
        );
    }

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant {}.lr(3e-4, 500, 1000), 3e-4);
        let cos = Schedule::Cosine {
            warmup: 10,
            min_factor: 0.1,
        };
        assert!((cos.lr(1.0, 0, 100) - 0.1).abs() < 1e-12);
        assert!((cos.lr(1.0, 100, 100) - 0.1).abs() < 1e-12);
        assert_eq!(
            Schedule::Step {
                every: 10,
                factor: 0.5
            }
            .lr(1.0, 25, 100),
            0.25
        );
    }
}
