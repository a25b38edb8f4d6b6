//! The transformer's fused operations, each one pass forward and one pass backward with a
//! hand-written gradient: GELU (the tanh form, as candle's `gelu`), layer norm over the last
//! dimension, and causal self-attention with its query-key-value projection. candle composes
//! each of them from several broadcast operations, and its backward walks and allocates every
//! intermediate again; one pass over the values instead is most of what makes the GPT's step
//! fast.
//!
//! Not here: the dense layers and the GELU fused into one ([`crate::ops::linear`]), and the
//! elementwise loops both share ([`crate::lanes`]).
//!
//! Determinism: rows, and attention's examples, are independent tasks; the one reduction
//! across rows (layer norm's weight and bias gradients) adds fixed groups of
//! [`ROWS_PER_GROUP`] rows, then the groups in order: the same bits at any thread count.

use crate::lanes::{exp, gelu_grad_into, gelu_into, widest_lanes, CHUNK};
use crate::ops::{
    apply_layer, contiguous, dense_grads, dense_values, matmul_into, matmul_into_rows, with_f32,
    Activation, Layer, Operand,
};
use candle_core::{CpuStorage, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Rows per group whose weight and bias gradients are summed before the groups are added.
const ROWS_PER_GROUP: usize = 64;

/// GELU in its tanh form, 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), elementwise.
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

struct Gelu;

impl candle_core::CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(self.name(), s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| gelu_into(y, x));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        let mut dx = vec![0f32; x.elem_count()];
        with_f32(x, |x| {
            with_f32(&dy, |dy| {
                (dx.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)))
                    .zip(dy.par_chunks(CHUNK))
                    .for_each(|((dx, x), dy)| gelu_grad_into(dx, x, dy))
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Layer norm over the last dimension: (x - mean) / sqrt(var + 1e-5) * w + b, the variance
/// biased (over C, as PyTorch's). x (..., C), w (C), b (C).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm)
}

struct LayerNorm;

const EPS: f32 = 1e-5;

/// A row's mean and 1 / std.
fn moments(row: &[f32]) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + EPS).sqrt())
}

impl candle_core::CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let c = *xl.shape().dims().last().unwrap_or(&0);
        if c == 0 || wl.shape().dims1()? != c || bl.shape().dims1()? != c {
            candle_core::bail!("layer norm: input {:?}, weight and bias of {c}", xl.shape());
        }
        let (x, w, b) = (
            contiguous(self.name(), xs, xl)?,
            contiguous(self.name(), ws, wl)?,
            contiguous(self.name(), bs, bl)?,
        );
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(y, x)| {
            let (mean, rstd) = moments(x);
            for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = (x - mean) * rstd * w + b;
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.dim(0)?;
        let dy = dy.contiguous()?;
        let mut dx = vec![0f32; x.elem_count()];
        // Per group of rows: (dw, db) partial sums, added in group order below.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(&dy, |dy| {
                    let group = ROWS_PER_GROUP * c;
                    (dx.par_chunks_mut(group).zip(x.par_chunks(group)))
                        .zip(dy.par_chunks(group))
                        .map(|((dx, x), dy)| {
                            let (mut dw, mut db) = (vec![0f32; c], vec![0f32; c]);
                            for ((dx, x), dy) in dx.chunks_mut(c).zip(x.chunks(c)).zip(dy.chunks(c))
                            {
                                let (mean, rstd) = moments(x);
                                // dx = rstd (g - mean(g) - x̂ mean(g x̂)), g = dy w.
                                let (mut g_mean, mut gx_mean) = (0f32, 0f32);
                                for k in 0..c {
                                    let xhat = (x[k] - mean) * rstd;
                                    let g = dy[k] * w[k];
                                    g_mean += g;
                                    gx_mean += g * xhat;
                                    dw[k] += dy[k] * xhat;
                                    db[k] += dy[k];
                                }
                                let (g_mean, gx_mean) = (g_mean / c as f32, gx_mean / c as f32);
                                for k in 0..c {
                                    let xhat = (x[k] - mean) * rstd;
                                    dx[k] = rstd * (dy[k] * w[k] - g_mean - xhat * gx_mean);
                                }
                            }
                            (dw, db)
                        })
                        .collect()
                })
            })
        })???;
        let (mut dw, mut db) = (vec![0f32; c], vec![0f32; c]);
        for (pw, pb) in &partials {
            for k in 0..c {
                dw[k] += pw[k];
                db[k] += pb[k];
            }
        }
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(dw, c, device)?),
            Some(Tensor::from_vec(db, c, device)?),
        ))
    }
}

/// Causal self-attention with its input projection: qkv = x @ w^T + b, x (B, T, C), w (3C, C),
/// b (3C), queries, keys and values side by side, each `heads` heads of D = C / heads; the
/// output is (B, T, C), head h at columns h*D..(h+1)*D. Position i attends to keys
/// j <= i + `look_ahead` (0: causal), with weights softmax(q·k / sqrt(D)).
///
/// One operation, so that the (B, T, 3C) projection is never a node of candle's graph (its
/// gradient would be allocated, zeroed and added into). Each (example, head) is its own task:
/// two small GEMMs and a softmax forward. The forward pass keeps the projection and the
/// weights; the backward writes dQ, dK and dV straight into one (B, T, 3C) gradient, then
/// takes it through the projection ([`crate::ops::dense_grads`]).
pub fn self_attention(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    heads: usize,
    look_ahead: usize,
) -> candle_core::Result<Tensor> {
    apply_layer(x, w, b, Activation::Identity, |layer| SelfAttention {
        heads,
        look_ahead,
        layer,
        kept: OnceLock::new(),
    })
}

struct SelfAttention {
    heads: usize,
    look_ahead: usize,
    layer: Layer,
    /// The projection (B, T, 3C) and the weights (B, heads, T, T), kept by the forward pass
    /// for the backward.
    kept: OnceLock<(Vec<f32>, Vec<f32>)>,
}

/// (B, T, C, D) of an attention over x (B, T, C).
type AttentionDims = (usize, usize, usize, usize);

impl SelfAttention {
    fn dims(&self, x: &Shape, w: &Shape, b: &Shape) -> candle_core::Result<AttentionDims> {
        let (batch, t, c) = x.dims3()?;
        if self.heads == 0 || c % self.heads != 0 || w.dims2()? != (3 * c, c) || b.dims1()? != 3 * c
        {
            candle_core::bail!(
                "attention: input {x:?}, projection {w:?} and bias {b:?} are not (B, T, C), \
                 (3C, C) and (3C) with C a multiple of {} heads",
                self.heads
            );
        }
        Ok((batch, t, c, c / self.heads))
    }

    /// The attention weights P (T, T) of one example's head `h`, written over `p`, its
    /// queries and keys read from `qkv` (that example's (T, 3C) rows); zero past each row's
    /// last visible key.
    fn weights(&self, p: &mut [f32], qkv: &[f32], h: usize, (t, c, d): (usize, usize, usize)) {
        matmul_into(
            p,
            false,
            (t, t, d),
            Operand(&qkv[h * d..], 3 * c, 1),
            Operand(&qkv[c + h * d..], 1, 3 * c),
            false,
        );
        let scale = 1.0 / (d as f32).sqrt();
        for (i, row) in p.chunks_mut(t).enumerate() {
            let n = (i + self.look_ahead + 1).min(t);
            let max = row[..n]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
            exp_shifted(&mut row[..n], scale, max);
            let sum: f32 = row[..n].iter().sum();
            for v in &mut row[..n] {
                *v /= sum;
            }
            row[n..].fill(0.0);
        }
    }
}

widest_lanes!(
    /// v = e^(v scale - max), elementwise: a softmax row before it is normalised.
    fn exp_shifted = exp_shifted_values(row: &mut [f32], scale: f32, max: f32)
);

#[inline(always)]
fn exp_shifted_values(row: &mut [f32], scale: f32, max: f32) {
    for v in row {
        *v = exp(*v * scale - max);
    }
}

impl candle_core::CustomOp3 for SelfAttention {
    fn name(&self) -> &'static str {
        "self-attention"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, t, c, d) = self.dims(xl.shape(), wl.shape(), bl.shape())?;
        let qkv = dense_values(
            contiguous(self.name(), xs, xl)?,
            contiguous(self.name(), ws, wl)?,
            contiguous(self.name(), bs, bl)?,
            (b * t, c, 3 * c),
        ); // (B, T, 3C)
           // Examples in parallel; per head, its weights, then its (T, D) columns of the output.
        let (h_n, tt) = (self.heads, t * t);
        let mut weights = vec![0f32; b * h_n * tt]; // (B, heads, T, T)
        let mut y = vec![0f32; b * t * c]; // (B, T, C)
        (y.par_chunks_mut(t * c)
            .zip(weights.par_chunks_mut(h_n * tt)))
        .zip(qkv.par_chunks(t * 3 * c))
        .for_each(|((y, weights), rows)| {
            for (h, p) in weights.chunks_mut(tt).enumerate() {
                self.weights(p, rows, h, (t, c, d));
                matmul_into_rows(
                    &mut y[h * d..],
                    c,
                    false,
                    (t, d, t),
                    Operand(p, t, 1),
                    Operand(&rows[2 * c + h * d..], 3 * c, 1),
                    false,
                );
            }
        });
        if self.layer.backward {
            // Set once: candle runs a node's forward pass once.
            let _ = self.kept.set((qkv, weights));
        }
        Ok((CpuStorage::F32(y), Shape::from((b, t, c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, t, c, d) = self.dims(x.shape(), w.shape(), bias.shape())?;
        let Some((qkv, weights)) = self.kept.get() else {
            candle_core::bail!("attention: a backward pass came without its forward pass");
        };
        let dy = dy.contiguous()?;
        let scale = 1.0 / (d as f32).sqrt();
        let (h_n, tt) = (self.heads, t * t);
        // Examples in parallel; per head, dQ, dK and dV written into its columns of the
        // example's (T, 3C) rows of the gradient.
        let mut dqkv = vec![0f32; b * t * 3 * c];
        with_f32(&dy, |dy| {
            (dqkv
                .par_chunks_mut(t * 3 * c)
                .zip(weights.par_chunks(h_n * tt)))
            .zip(qkv.par_chunks(t * 3 * c).zip(dy.par_chunks(t * c)))
            .for_each(|((grads, weights), (rows, dy))| {
                let mut ds = vec![0f32; tt];
                for (h, p) in weights.chunks(tt).enumerate() {
                    let (q, k, v) = (&rows[h * d..], &rows[c + h * d..], &rows[2 * c + h * d..]);
                    let dy = &dy[h * d..];
                    // dV = Pᵀ dY; dP = dY Vᵀ.
                    matmul_into_rows(
                        &mut grads[2 * c + h * d..],
                        3 * c,
                        false,
                        (t, d, t),
                        Operand(p, 1, t),
                        Operand(dy, c, 1),
                        false,
                    );
                    matmul_into(
                        &mut ds,
                        false,
                        (t, t, d),
                        Operand(dy, c, 1),
                        Operand(v, 1, 3 * c),
                        false,
                    );
                    // dS = P (dP - Σ P dP) / sqrt(D), row by row (zero where P is).
                    for (prow, drow) in p.chunks(t).zip(ds.chunks_mut(t)) {
                        let dot: f32 = prow.iter().zip(drow.iter()).map(|(p, g)| p * g).sum();
                        for (g, &p) in drow.iter_mut().zip(prow) {
                            *g = scale * p * (*g - dot);
                        }
                    }
                    // dQ = dS K; dK = dSᵀ Q.
                    matmul_into_rows(
                        &mut grads[h * d..],
                        3 * c,
                        false,
                        (t, d, t),
                        Operand(&ds, t, 1),
                        Operand(k, 3 * c, 1),
                        false,
                    );
                    matmul_into_rows(
                        &mut grads[c + h * d..],
                        3 * c,
                        false,
                        (t, d, t),
                        Operand(&ds, 1, t),
                        Operand(q, 3 * c, 1),
                        false,
                    );
                }
            })
        })?;
        dense_grads(x, w, &dqkv, self.layer.input_grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "#{i}: {x} vs {y}");
        }
    }

    fn input(shape: &[usize], seed: u64) -> Var {
        let mut rng = crate::Rng::stream(seed, "seq_ops");
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (rng.uniform() as f32 - 0.5) * 6.0).collect();
        Var::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Value and gradient (of a weighted sum) of `ours` against candle's composed `theirs`.
    fn same_as(
        ours: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        theirs: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        shape: &[usize],
    ) {
        let x = input(shape, 1);
        let (a, b) = (ours(x.as_tensor()).unwrap(), theirs(x.as_tensor()).unwrap());
        let weights = input(a.dims(), 2).as_tensor().clone();
        close(&a, &b, 1e-5);
        let ga = (a * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (b * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        close(
            ga.get(x.as_tensor()).unwrap(),
            gb.get(x.as_tensor()).unwrap(),
            1e-4,
        );
    }

    #[test]
    fn gelu_matches_candles_tanh_gelu_and_its_gradient() {
        same_as(gelu, |x| x.gelu(), &[3, 700]);
    }

    #[test]
    fn layer_norm_matches_candles_composed_layer_norm_and_its_gradients() {
        let (w, b) = (input(&[24], 3), input(&[24], 4));
        same_as(
            |x| layer_norm(x, w.as_tensor(), b.as_tensor()),
            |x| candle_nn::ops::layer_norm_slow(x, w.as_tensor(), b.as_tensor(), 1e-5),
            &[2, 150, 24],
        );
        // The weight's and bias's gradients too.
        let x = input(&[2, 150, 24], 5);
        let ours = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        let theirs =
            candle_nn::ops::layer_norm_slow(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5)
                .unwrap();
        let (ga, gb) = (
            ours.sqr().unwrap().sum_all().unwrap().backward().unwrap(),
            theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap(),
        );
        for v in [&w, &b] {
            close(
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
                1e-4,
            );
        }
    }

    #[test]
    fn self_attention_matches_candles_composed_projection_and_attention_and_their_gradients() {
        let (b, t, heads, d) = (2, 7, 3, 4);
        let c = heads * d;
        // A projection small enough that the scores stay near the inputs' size, as a trained
        // one's are (with inputs up to 3 and full-size weights, the softmax would be one-hot).
        let small = |v: Var| Var::from_tensor(&(v.as_tensor() * 0.1).unwrap()).unwrap();
        let (w, bias) = (small(input(&[3 * c, c], 3)), small(input(&[3 * c], 4)));
        let (w, bias) = (w.as_tensor(), bias.as_tensor());
        for look_ahead in [0, 2] {
            let mask: Vec<u8> = (0..t)
                .flat_map(|i| (0..t).map(move |j| u8::from(j > i + look_ahead)))
                .collect();
            let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
            let composed = |x: &Tensor| -> candle_core::Result<Tensor> {
                let qkv = x.broadcast_matmul(&w.t()?)?.broadcast_add(bias)?; // (B, T, 3C)
                let split = |i: usize| {
                    qkv.narrow(D::Minus1, i * c, c)?
                        .reshape((b, t, heads, d))?
                        .transpose(1, 2)?
                        .contiguous()
                };
                let (q, k, v) = (split(0)?, split(1)?, split(2)?);
                let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
                let hidden = mask.broadcast_as(scores.shape())?;
                let inf =
                    Tensor::new(f32::NEG_INFINITY, qkv.device())?.broadcast_as(scores.shape())?;
                let p = candle_nn::ops::softmax(&hidden.where_cond(&inf, &scores)?, D::Minus1)?;
                p.matmul(&v)?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((b, t, c))
            };
            let ours = |x: &Tensor| self_attention(x, w, bias, heads, look_ahead);
            same_as(ours, composed, &[b, t, c]);
            // The projection's weight and bias gradients too.
            let x = input(&[b, t, c], 5);
            let (ga, gb) = (
                ours(x.as_tensor())
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap(),
                composed(x.as_tensor())
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap(),
            );
            let (ga, gb) = (ga.backward().unwrap(), gb.backward().unwrap());
            for v in [w, bias] {
                close(ga.get(v).unwrap(), gb.get(v).unwrap(), 1e-4);
            }
        }
    }
}
