//! Custom tensor operations with hand-written backward passes, where candle's own are slow
//! (conv2d's backward runs scalar dot products) or wrong (candle 0.11's `max_pool2d` backward
//! scales gradients by 1/4). Each walks its elements in one fixed order, so results are the
//! same bits on every run.

use crate::lanes::{gelu_grad_into, gelu_into, CHUNK};
use candle_core::{CpuStorage, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::OnceLock;

/// (B, C, H, W).
type Dims4 = (usize, usize, usize, usize);

/// `f` over the values of a contiguous f32 tensor on the CPU, read where they lie (no copy).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(cpu), Some((start, end))) => {
            Ok(f(&cpu.as_slice::<f32>()?[start..end]))
        }
        _ => candle_core::bail!("expected a contiguous f32 tensor on the CPU"),
    }
}

/// A matrix operand of [`matmul_into`]: its values and its (row, column) strides.
pub(crate) struct Operand<'a>(pub &'a [f32], pub usize, pub usize);

/// `dst (m, n) = lhs (m, k) @ rhs (k, n)`, or `dst += ...` when `accumulate`, with candle's
/// GEMM, on candle's thread count when `parallel`; row-major `dst`.
pub(crate) fn matmul_into(
    dst: &mut [f32],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    parallel: bool,
) {
    assert_eq!(dst.len(), m * n, "matmul destination size");
    matmul_into_rows(dst, n, accumulate, (m, n, k), lhs, rhs, parallel)
}

/// [`matmul_into`] into rows `row_stride` apart: the (m, n) block of a wider matrix whose
/// first element is `dst[0]` (a head's columns of a (T, C) output, say).
pub(crate) fn matmul_into_rows(
    dst: &mut [f32],
    row_stride: usize,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    parallel: bool,
) {
    let last = |Operand(values, rs, cs): &Operand, rows: usize, cols: usize| {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < values.len(),
            "matmul operand out of bounds"
        );
    };
    last(&lhs, m, k);
    last(&rhs, k, n);
    last(&Operand(&*dst, row_stride, 1), m, n);
    let threads = crate::process::threads();
    let parallelism = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index gemm reads, (row * rs + col * cs) for row < rows and col < cols,
    // is inside its slice (asserted above), and so is every index of dst it writes,
    // row * row_stride + col for row < m and col < n.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            row_stride as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// What a fused layer applies to its outputs, inside its own operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    /// GELU in its tanh form, as candle's `gelu`. The layer keeps its outputs before the
    /// GELU for its backward pass, where a separate GELU would be a node of its own whose
    /// input gradient candle allocates, zeroes and adds into.
    Gelu,
}

/// `x @ w^T + b` for x (N, in), w (out, in), b (out), then `activation`; x may have more
/// dimensions, (..., in) -> (..., out), its rows being all but the last: candle-nn's
/// `Linear`, as one GEMM that starts from the bias. Its backward writes the weight's gradient
/// in the weight's own layout (candle's comes through a transposed view that it then adds
/// with strides, element by element) and computes the input's gradient only when something
/// upstream needs it (never for the images themselves).
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    activation: Activation,
) -> candle_core::Result<Tensor> {
    apply_layer(x, w, b, activation, |layer| Linear {
        layer,
        pre_activation: OnceLock::new(),
    })
}

struct Linear {
    layer: Layer,
    /// x @ w^T + b, kept by the forward pass for a GELU's backward.
    pre_activation: OnceLock<Vec<f32>>,
}

/// What a fused layer operation knows besides its operands.
#[derive(Clone, Copy)]
pub(crate) struct Layer {
    pub activation: Activation,
    /// Something upstream of the input needs its gradient.
    pub input_grad: bool,
    /// Some operand needs a gradient: a backward pass may come, so keep what it needs.
    pub backward: bool,
}

/// `op` over (x, w, b), each made contiguous.
pub(crate) fn apply_layer<C: candle_core::CustomOp3 + Send + Sync + 'static>(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    activation: Activation,
    op: impl FnOnce(Layer) -> C,
) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let op = op(Layer {
        activation,
        input_grad: x.track_op(),
        backward: x.track_op() || w.track_op() || b.track_op(),
    });
    x.apply_op3(&w.contiguous()?, &b.contiguous()?, op)
}

/// The gradient before a fused ReLU (zero where the output `res` was clamped) as values.
fn before_relu(dy: &Tensor, res: &Tensor) -> candle_core::Result<Vec<f32>> {
    let mut dz = dy.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    with_f32(res, |out| {
        for (d, &v) in dz.iter_mut().zip(out) {
            *d = if v > 0.0 { *d } else { 0.0 };
        }
    })?;
    Ok(dz)
}

/// y (n, o) = x (n, k) @ w (o, k)^T + b (o), row-major: one GEMM that starts from the bias.
pub(crate) fn dense_values(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    (n, k, o): (usize, usize, usize),
) -> Vec<f32> {
    let mut y = Vec::with_capacity(n * o);
    for _ in 0..n {
        y.extend_from_slice(b);
    }
    matmul_into(
        &mut y,
        true,
        (n, o, k),
        Operand(x, k, 1),
        Operand(w, 1, k),
        true,
    );
    y
}

/// The gradients of y = x @ w^T + b, x (..., k) and w (o, k), from dz = dL/dy (n rows of
/// o): dx (only when `input_grad`), dw (o, k) and db (o).
pub(crate) fn dense_grads(
    x: &Tensor,
    w: &Tensor,
    dz: &[f32],
    input_grad: bool,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let ((n, k), o) = (rows(x.shape())?, w.dim(0)?);
    let (mut dw, mut db) = (vec![0f32; o * k], vec![0f32; o]);
    for row in dz.chunks_exact(o) {
        add_into(&mut db, row);
    }
    with_f32(x, |x| {
        matmul_into(
            &mut dw,
            false,
            (o, k, n),
            Operand(dz, 1, o),
            Operand(x, k, 1),
            true,
        )
    })?;
    let dx = input_grad
        .then(|| {
            let mut dx = vec![0f32; n * k];
            with_f32(w, |w| {
                matmul_into(
                    &mut dx,
                    false,
                    (n, k, o),
                    Operand(dz, o, 1),
                    Operand(w, k, 1),
                    true,
                )
            })?;
            Tensor::from_vec(dx, x.shape(), x.device())
        })
        .transpose()?;
    let device = x.device();
    Ok((
        dx,
        Some(Tensor::from_vec(dw, (o, k), device)?),
        Some(Tensor::from_vec(db, o, device)?),
    ))
}

impl candle_core::CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
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
        let ((n, k), (o, k_w), o_b) = (rows(xl.shape())?, wl.shape().dims2()?, bl.shape().dims1()?);
        if k != k_w || o != o_b {
            candle_core::bail!("linear: input {n}x{k}, weight {o}x{k_w}, bias {o_b} do not fit");
        }
        let (x, w, b) = (
            contiguous(self.name(), xs, xl)?,
            contiguous(self.name(), ws, wl)?,
            contiguous(self.name(), bs, bl)?,
        );
        let mut y = dense_values(x, w, b, (n, k, o));
        match self.layer.activation {
            Activation::Identity => {}
            Activation::Relu => relu_in_place(&mut y),
            Activation::Gelu => {
                let mut out = vec![0f32; y.len()];
                out.par_chunks_mut(CHUNK)
                    .zip(y.par_chunks(CHUNK))
                    .for_each(|(out, z)| gelu_into(out, z));
                if self.layer.backward {
                    // Set once: candle runs a node's forward pass once.
                    let _ = self.pre_activation.set(y);
                }
                y = out;
            }
        }
        let mut out = xl.shape().dims().to_vec();
        if let Some(last) = out.last_mut() {
            *last = o;
        }
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let input_grad = self.layer.input_grad;
        match self.layer.activation {
            Activation::Identity => {
                with_f32(&dy.contiguous()?, |dz| dense_grads(x, w, dz, input_grad))?
            }
            Activation::Relu => dense_grads(x, w, &before_relu(dy, res)?, input_grad),
            Activation::Gelu => {
                let Some(z) = self.pre_activation.get() else {
                    candle_core::bail!(
                        "linear: a GELU layer's backward came without its forward pass"
                    );
                };
                let mut dz = vec![0f32; z.len()];
                with_f32(&dy.contiguous()?, |dy| {
                    dz.par_chunks_mut(CHUNK)
                        .zip(z.par_chunks(CHUNK))
                        .zip(dy.par_chunks(CHUNK))
                        .for_each(|((dz, z), dy)| gelu_grad_into(dz, z, dy))
                })?;
                dense_grads(x, w, &dz, input_grad)
            }
        }
    }
}

/// An input of shape (..., k) as (rows, k): every dimension but the last is a row.
fn rows(shape: &Shape) -> candle_core::Result<(usize, usize)> {
    match shape.dims() {
        [] => candle_core::bail!("linear: a scalar input has no features"),
        [.., k] => Ok((shape.elem_count() / (*k).max(1), *k)),
    }
}

/// The f32 values of a contiguous CPU input.
pub(crate) fn contiguous<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} needs a contiguous input");
    };
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// The f32 values of a contiguous CPU input and its (B, C, H, W) dims.
fn contiguous_f32<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<(&'a [f32], Dims4)> {
    Ok((contiguous(op, storage, layout)?, layout.shape().dims4()?))
}

/// Visit every (patch row segment, image row segment) pair of a 3x3, padding-1 im2col over
/// one (C, H, W) image, in one fixed order. The patch matrix is (C*9, H*W): row (c, dy, dx)
/// is the image plane c shifted by (dy - 1, dx - 1), so each segment is a contiguous run of
/// `len` values starting at `patch` in the patches and at `pixel` in the image. Taps that
/// fall in the padding are never visited (they stay zero).
fn for_each_segment((c, h, w): (usize, usize, usize), mut visit: impl FnMut(usize, usize, usize)) {
    for ci in 0..c {
        for k in 0..9 {
            let (ky, kx) = (k / 3, k % 3);
            let row = (ci * 9 + k) * h * w;
            // Output columns [x0, x1) read source columns [x0 + kx - 1, x1 + kx - 1).
            let x0 = usize::from(kx == 0);
            let x1 = if kx == 2 { w.saturating_sub(1) } else { w };
            if x1 <= x0 {
                continue;
            }
            for y in 0..h {
                let Some(sy) = (y + ky).checked_sub(1).filter(|&sy| sy < h) else {
                    continue;
                };
                visit(row + y * w + x0, ci * h * w + sy * w + x0 + kx - 1, x1 - x0);
            }
        }
    }
}

/// One image's (C*9, H*W) patch matrix, written over `patches`.
fn im2col(image: &[f32], dims: (usize, usize, usize), patches: &mut [f32]) {
    patches.fill(0.0);
    for_each_segment(dims, |patch, pixel, len| {
        patches[patch..patch + len].copy_from_slice(&image[pixel..pixel + len])
    });
}

/// Add each patch's gradient back to the pixels it came from (the adjoint of [`im2col`]).
fn col2im(dpatches: &[f32], dims: (usize, usize, usize), dimage: &mut [f32]) {
    for_each_segment(dims, |patch, pixel, len| {
        add_into(
            &mut dimage[pixel..pixel + len],
            &dpatches[patch..patch + len],
        )
    });
}

/// Gradients of a sum over images are added in this many fixed groups of images, in group
/// order, whatever the thread count: the same bits on 1 thread or 16.
const GROUPS: usize = 8;

/// A 3x3 convolution, stride 1, zero padding 1, with a ReLU after it when `relu`:
/// x (B, C, H, W), w (O, C, 3, 3), b (O) -> (B, O, H, W).
///
/// Each image is one GEMM of the weights against its im2col patches (kept per thread, the
/// size of one image's patches), written straight into the output's layout, bias first;
/// images run in parallel. Where candle's conv2d backward runs scalar dot products, this one
/// is a GEMM per image for the weights (added in [`GROUPS`] fixed groups) and, only when
/// something upstream needs it, a GEMM and col2im per image for the input.
pub fn conv3x3(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    let activation = if relu {
        Activation::Relu
    } else {
        Activation::Identity
    };
    apply_layer(x, w, b, activation, Conv3x3)
}

struct Conv3x3(Layer);

impl candle_core::CustomOp3 for Conv3x3 {
    fn name(&self) -> &'static str {
        "conv3x3"
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
        let (x, (n, c, h, w)) = contiguous_f32(self.name(), xs, xl)?;
        let (o, c_w, kh, kw) = wl.shape().dims4()?;
        if (c_w, kh, kw) != (c, 3, 3) || bl.shape().dims1()? != o {
            candle_core::bail!(
                "conv3x3: input {:?}, weight {:?}, bias {:?} do not fit",
                xl.dims(),
                wl.dims(),
                bl.dims()
            );
        }
        let (weights, bias) = (
            contiguous(self.name(), ws, wl)?,
            contiguous(self.name(), bs, bl)?,
        );
        let (hw, c9) = (h * w, c * 9);
        let mut y = vec![0f32; n * o * hw];
        y.par_chunks_mut(o * hw)
            .zip(x.par_chunks(c * hw))
            .for_each_init(
                || vec![0f32; c9 * hw],
                |patches, (out, image)| {
                    im2col(image, (c, h, w), patches);
                    for (row, &b) in out.chunks_exact_mut(hw).zip(bias) {
                        row.fill(b);
                    }
                    // out (O, H*W) += weights (O, C*9) @ patches (C*9, H*W)
                    matmul_into(
                        out,
                        true,
                        (o, hw, c9),
                        Operand(weights, c9, 1),
                        Operand(patches, hw, 1),
                        false,
                    );
                    if self.0.activation == Activation::Relu {
                        relu_in_place(out);
                    }
                },
            );
        Ok((CpuStorage::F32(y), Shape::from((n, o, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let ((n, c, h, wd), o) = (x.dims4()?, w.dim(0)?);
        let (hw, c9) = (h * wd, c * 9);
        let dz = match self.0.activation {
            Activation::Relu => before_relu(dy, res)?,
            _ => dy.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
        };
        let per_group = n.div_ceil(GROUPS).max(1);
        let (dw, db, dx) = with_f32(x, |x| {
            let partial: Vec<(Vec<f32>, Vec<f32>)> = dz
                .par_chunks(per_group * o * hw)
                .zip(x.par_chunks(per_group * c * hw))
                .map(|(dz, x)| {
                    let (mut dw, mut db) = (vec![0f32; o * c9], vec![0f32; o]);
                    let mut patches = vec![0f32; c9 * hw];
                    for (dz, image) in dz.chunks_exact(o * hw).zip(x.chunks_exact(c * hw)) {
                        im2col(image, (c, h, wd), &mut patches);
                        // dw (O, C*9) += dz (O, H*W) @ patches^T (H*W, C*9)
                        matmul_into(
                            &mut dw,
                            true,
                            (o, c9, hw),
                            Operand(dz, hw, 1),
                            Operand(&patches, 1, hw),
                            false,
                        );
                        for (d, row) in db.iter_mut().zip(dz.chunks_exact(hw)) {
                            *d += row.iter().sum::<f32>();
                        }
                    }
                    (dw, db)
                })
                .collect();
            let (mut dw, mut db) = (vec![0f32; o * c9], vec![0f32; o]);
            for (pw, pb) in &partial {
                add_into(&mut dw, pw);
                add_into(&mut db, pb);
            }
            let dx = self
                .0
                .input_grad
                .then(|| with_f32(w, |weights| col2im_input(&dz, weights, (n, c, h, wd), o)))
                .transpose()?;
            Ok::<_, candle_core::Error>((dw, db, dx))
        })??;
        let device = x.device();
        Ok((
            dx.map(|dx| Tensor::from_vec(dx, (n, c, h, wd), device))
                .transpose()?,
            Some(Tensor::from_vec(dw, (o, c, 3, 3), device)?),
            Some(Tensor::from_vec(db, o, device)?),
        ))
    }
}

/// The input gradient of [`conv3x3`]: per image, dpatches (C*9, H*W) = weights^T @ dz,
/// then [`col2im`].
fn col2im_input(dz: &[f32], weights: &[f32], (n, c, h, w): Dims4, o: usize) -> Vec<f32> {
    let (hw, c9) = (h * w, c * 9);
    let mut dx = vec![0f32; n * c * hw];
    dx.par_chunks_mut(c * hw)
        .zip(dz.par_chunks(o * hw))
        .for_each_init(
            || vec![0f32; c9 * hw],
            |dpatches, (dx, dz)| {
                // dpatches (C*9, H*W) = weights^T (C*9, O) @ dz (O, H*W)
                matmul_into(
                    dpatches,
                    false,
                    (c9, hw, o),
                    Operand(weights, 1, c9),
                    Operand(dz, hw, 1),
                    false,
                );
                col2im(dpatches, (c, h, w), dx);
            },
        );
    dx
}

fn add_into(sum: &mut [f32], part: &[f32]) {
    for (s, p) in sum.iter_mut().zip(part) {
        *s += p;
    }
}

/// max(x, 0) that keeps NaN a NaN (a diverging run must still be seen diverging).
fn relu_in_place(values: &mut [f32]) {
    for v in values {
        if *v < 0.0 {
            *v = 0.0;
        }
    }
}

/// 2x2 max pooling, stride 2 (odd edges dropped, as `max_pool2d` does).
///
/// A custom op rather than candle's `max_pool2d`, whose backward in candle 0.11 scales the
/// gradient by 1/4 (it multiplies by the fraction of maxima in each window where it should
/// divide by their count; the finite-difference test below caught it). Here the gradient goes
/// to the first maximum of each window, in row-major order.
pub fn max_pool2(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool2::default())
}

/// Remembers, from the forward pass, which of its window's four inputs each output took
/// (0..4, row-major), so the backward pass routes gradients without searching again.
#[derive(Default)]
struct MaxPool2 {
    choices: std::sync::Mutex<Vec<u8>>,
}

impl candle_core::CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "max_pool2"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, (b, c, h, w)) = contiguous_f32(self.name(), storage, layout)?;
        let (h2, w2) = (h / 2, w / 2);
        let mut out = Vec::with_capacity(b * c * h2 * w2);
        let mut choices = Vec::with_capacity(b * c * h2 * w2);
        for plane in x.chunks_exact(h * w) {
            for y in 0..h2 {
                let (top, bottom) = (&plane[2 * y * w..][..w], &plane[(2 * y + 1) * w..][..w]);
                for xx in 0..w2 {
                    let window = [
                        top[2 * xx],
                        top[2 * xx + 1],
                        bottom[2 * xx],
                        bottom[2 * xx + 1],
                    ];
                    // The first maximum; a NaN first stays (nothing compares greater).
                    let mut best = 0;
                    for k in 1..4 {
                        if window[k] > window[best] {
                            best = k;
                        }
                    }
                    out.push(window[best]);
                    choices.push(best as u8);
                }
            }
        }
        *self.choices.lock().unwrap_or_else(|e| e.into_inner()) = choices;
        Ok((CpuStorage::F32(out), Shape::from((b, c, h2, w2))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (b, c, h, w) = arg.dims4()?;
        let (h2, w2) = (h / 2, w / 2);
        let choices = self.choices.lock().unwrap_or_else(|e| e.into_inner());
        let grad = grad_res.contiguous()?;
        let mut dx = vec![0f32; b * c * h * w];
        with_f32(&grad, |g| {
            let cells = g.chunks_exact(h2 * w2).zip(choices.chunks_exact(h2 * w2));
            for ((g, choice), plane) in cells.zip(dx.chunks_exact_mut(h * w)) {
                for (i, (&gi, &k)) in g.iter().zip(choice).enumerate() {
                    let (y, xx, k) = (i / w2, i % w2, k as usize);
                    plane[(2 * y + k / 2) * w + 2 * xx + k % 2] += gi;
                }
            }
        })?;
        Ok(Some(Tensor::from_vec(dx, (b, c, h, w), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn max_pool2_matches_candle_forward() {
        let x = Tensor::from_vec(
            (0..2 * 3 * 7 * 6)
                .map(|i| ((i * 31) % 17) as f32)
                .collect::<Vec<_>>(),
            (2, 3, 7, 6),
            &Device::Cpu,
        )
        .unwrap();
        let ours = max_pool2(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let theirs = x
            .max_pool2d(2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(ours, theirs);
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn assert_close(ours: &[f32], theirs: &[f32]) {
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(theirs) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn linear_matches_candle_forward_and_backward() {
        let mut rng = crate::Rng::stream(3, "t");
        let mut draw = |dims: (usize, usize)| {
            let n = dims.0 * dims.1;
            Tensor::from_vec(
                (0..n).map(|_| rng.normal() as f32).collect(),
                dims,
                &Device::Cpu,
            )
            .unwrap()
        };
        let (x, w) = (draw((7, 5)), draw((3, 5)));
        let b = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap();
        let (x, w, b) = (
            candle_core::Var::from_tensor(&x).unwrap(),
            candle_core::Var::from_tensor(&w).unwrap(),
            candle_core::Var::from_tensor(&b).unwrap(),
        );
        // The same loss through both, weighted per output so every gradient entry differs.
        let weights = draw((7, 3));
        let loss = |y: Tensor| (y * &weights).unwrap().sum_all().unwrap();
        let ours = linear(&x, &w, &b, Activation::Identity).unwrap();
        let theirs = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert_close(&values(&ours), &values(&theirs));
        let (g1, g2) = (
            loss(ours).backward().unwrap(),
            loss(theirs).backward().unwrap(),
        );
        for v in [&x, &w, &b] {
            let grad = |g: &candle_core::backprop::GradStore| values(g.get(v.as_tensor()).unwrap());
            assert_close(&grad(&g1), &grad(&g2));
        }
        // The fused ReLU gives what a separate one gives, forward and backward.
        let values_and_grads = |y: Tensor| {
            let g = loss(y.clone()).backward().unwrap();
            let mut out = vec![values(&y)];
            out.extend([&x, &w, &b].map(|v| values(g.get(v.as_tensor()).unwrap())));
            out
        };
        assert_eq!(
            values_and_grads(linear(&x, &w, &b, Activation::Relu).unwrap()),
            values_and_grads(
                linear(&x, &w, &b, Activation::Identity)
                    .unwrap()
                    .relu()
                    .unwrap()
            )
        );
        // So does the fused GELU, against the GELU operation after a plain layer.
        assert_eq!(
            values_and_grads(linear(&x, &w, &b, Activation::Gelu).unwrap()),
            values_and_grads(
                crate::seq_ops::gelu(&linear(&x, &w, &b, Activation::Identity).unwrap()).unwrap()
            )
        );
        // Plain inputs get no gradient, and cost none.
        let plain = x.as_tensor().detach();
        let grads = loss(linear(&plain, &w, &b, Activation::Identity).unwrap())
            .backward()
            .unwrap();
        assert!(grads.get(&plain).is_none() && grads.get(w.as_tensor()).is_some());
    }

    /// Forward values and the gradients of x, w, b through `conv`, for a loss that weights
    /// every output differently.
    fn conv_values_and_grads(conv: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor) -> Vec<Vec<f32>> {
        let mut rng = crate::Rng::stream(4, "t");
        let mut draw = |dims: &[usize]| {
            let n = dims.iter().product();
            let values = (0..n).map(|_| rng.normal() as f32).collect();
            candle_core::Var::from_tensor(&Tensor::from_vec(values, dims, &Device::Cpu).unwrap())
                .unwrap()
        };
        // 11 images: more than GROUPS, and not a multiple of it.
        let (x, w, b) = (draw(&[11, 2, 5, 4]), draw(&[3, 2, 3, 3]), draw(&[3]));
        let weights = draw(&[11, 3, 5, 4]);
        let y = conv(&x, &w, &b);
        let grads = (&y * weights.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut out = vec![values(&y)];
        for v in [&x, &w, &b] {
            out.push(values(grads.get(v.as_tensor()).unwrap()));
        }
        out
    }

    #[test]
    fn conv3x3_matches_candle_conv2d_forward_and_backward() {
        let ours = conv_values_and_grads(|x, w, b| conv3x3(x, w, b, false).unwrap());
        let theirs = conv_values_and_grads(|x, w, b| {
            x.conv2d(w, 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 3, 1, 1)).unwrap())
                .unwrap()
        });
        for (a, b) in ours.iter().zip(&theirs) {
            assert_close(a, b);
        }
        let fused = conv_values_and_grads(|x, w, b| conv3x3(x, w, b, true).unwrap());
        let separate =
            conv_values_and_grads(|x, w, b| conv3x3(x, w, b, false).unwrap().relu().unwrap());
        assert_eq!(fused, separate);
    }

    #[test]
    fn conv3x3_bits_do_not_depend_on_the_thread_count() {
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| conv_values_and_grads(|x, w, b| conv3x3(x, w, b, true).unwrap()))
        };
        assert_eq!(on(1), on(3));
    }
}
