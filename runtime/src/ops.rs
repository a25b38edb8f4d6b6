//! Custom tensor operations with hand-written backward passes, where candle's own are slow
//! (conv2d's backward runs scalar dot products) or wrong (candle 0.11's `max_pool2d` backward
//! scales gradients by 1/4). Each walks its elements in one fixed order, so results are the
//! same bits on every run.

use candle_core::{CpuStorage, Layout, Shape, Tensor};

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
struct Operand<'a>(&'a [f32], usize, usize);

/// `dst (m, n) = lhs (m, k) @ rhs (k, n)`, or `dst += ...` when `accumulate`, with candle's
/// GEMM on candle's thread count; row-major `dst`.
fn matmul_into(
    dst: &mut [f32],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
) {
    let last = |Operand(values, rs, cs): &Operand, rows: usize, cols: usize| {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < values.len(),
            "matmul operand out of bounds"
        );
    };
    last(&lhs, m, k);
    last(&rhs, k, n);
    assert_eq!(dst.len(), m * n, "matmul destination size");
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index gemm reads, (row * rs + col * cs) for row < rows and col < cols,
    // is inside its slice (asserted above), and dst is exactly m x n, row-major.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
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

/// `x @ w^T + b` for x (N, in), w (out, in), b (out): candle-nn's `Linear`, as one GEMM that
/// starts from the bias. Its backward writes the weight's gradient in the weight's own
/// layout (candle's comes through a transposed view that it then adds with strides, element
/// by element) and computes the input's gradient only when something upstream needs it
/// (never for the images themselves).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let op = Linear {
        input_grad: x.track_op(),
    };
    x.apply_op3(&w.contiguous()?, &b.contiguous()?, op)
}

struct Linear {
    input_grad: bool,
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
        let ((n, k), (o, k_w), o_b) = (
            xl.shape().dims2()?,
            wl.shape().dims2()?,
            bl.shape().dims1()?,
        );
        if k != k_w || o != o_b {
            candle_core::bail!("linear: input {n}x{k}, weight {o}x{k_w}, bias {o_b} do not fit");
        }
        let (x, w, b) = (
            contiguous(self.name(), xs, xl)?,
            contiguous(self.name(), ws, wl)?,
            contiguous(self.name(), bs, bl)?,
        );
        let mut y = Vec::with_capacity(n * o);
        for _ in 0..n {
            y.extend_from_slice(b);
        }
        matmul_into(&mut y, true, (n, o, k), Operand(x, k, 1), Operand(w, 1, k));
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let ((n, k), o) = (x.dims2()?, w.dim(0)?);
        let dy = dy.contiguous()?;
        let (mut dw, mut db) = (vec![0f32; o * k], vec![0f32; o]);
        let mut dx = vec![0f32; if self.input_grad { n * k } else { 0 }];
        with_f32(&dy, |dy| {
            for row in dy.chunks_exact(o) {
                for (d, g) in db.iter_mut().zip(row) {
                    *d += g;
                }
            }
            with_f32(x, |x| {
                matmul_into(
                    &mut dw,
                    false,
                    (o, k, n),
                    Operand(dy, 1, o),
                    Operand(x, k, 1),
                )
            })?;
            if self.input_grad {
                with_f32(w, |w| {
                    matmul_into(
                        &mut dx,
                        false,
                        (n, k, o),
                        Operand(dy, o, 1),
                        Operand(w, k, 1),
                    )
                })?;
            }
            Ok::<_, candle_core::Error>(())
        })??;
        let device = x.device();
        Ok((
            self.input_grad
                .then(|| Tensor::from_vec(dx, (n, k), device))
                .transpose()?,
            Some(Tensor::from_vec(dw, (o, k), device)?),
            Some(Tensor::from_vec(db, o, device)?),
        ))
    }
}

/// The f32 values of a contiguous CPU input.
fn contiguous<'a>(
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

/// im2col for 3x3 windows with zero padding 1: (B, C, H, W) -> (B*H*W, C*9), row
/// (b, y, x), column (c, dy, dx). Its backward (col2im) adds each patch's gradient back in
/// one fixed loop order, so the result is the same bits on every run.
pub(crate) struct Im2Col3x3;

/// Visit every (patch column, input pixel) pair of a 3x3, padding-1 im2col over a
/// (B, C, H, W) input, in one fixed order: `column` indexes the (B*H*W, C*9) patch matrix,
/// `pixel` the input. Taps that fall in the padding are skipped.
fn for_each_tap((b, c, h, w): Dims4, mut visit: impl FnMut(usize, usize)) {
    for row in 0..b * h * w {
        let (bi, y, xx) = (row / (h * w), (row / w) % h, row % w);
        for ci in 0..c {
            let plane = (bi * c + ci) * h * w;
            for k in 0..9 {
                let (sy, sx) = ((y + k / 3) as isize - 1, (xx + k % 3) as isize - 1);
                if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                    visit(
                        row * c * 9 + ci * 9 + k,
                        plane + sy as usize * w + sx as usize,
                    );
                }
            }
        }
    }
}

impl candle_core::CustomOp1 for Im2Col3x3 {
    fn name(&self) -> &'static str {
        "im2col3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, (b, c, h, w)) = contiguous_f32(self.name(), storage, layout)?;
        let mut out = vec![0f32; b * h * w * c * 9];
        for_each_tap((b, c, h, w), |column, pixel| out[column] = x[pixel]);
        Ok((CpuStorage::F32(out), Shape::from((b * h * w, c * 9))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (b, c, h, w) = arg.dims4()?;
        let g = grad_res.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut dx = vec![0f32; b * c * h * w];
        for_each_tap((b, c, h, w), |column, pixel| dx[pixel] += g[column]);
        Ok(Some(Tensor::from_vec(dx, (b, c, h, w), arg.device())?))
    }
}

/// 2x2 max pooling, stride 2 (odd edges dropped, as `max_pool2d` does).
///
/// A custom op rather than candle's `max_pool2d`, whose backward in candle 0.11 scales the
/// gradient by 1/4 (it multiplies by the fraction of maxima in each window where it should
/// divide by their count; the finite-difference test below caught it). Here the gradient goes
/// to the first maximum of each window, in row-major order.
pub fn max_pool2(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool2)
}

struct MaxPool2;

impl MaxPool2 {
    /// For each output cell (B, C, H/2, W/2), the flat input index of its window's maximum.
    fn argmax(x: &[f32], (b, c, h, w): Dims4) -> Vec<usize> {
        let (h2, w2) = (h / 2, w / 2);
        let mut out = Vec::with_capacity(b * c * h2 * w2);
        for plane in 0..b * c {
            let base = plane * h * w;
            for y in 0..h2 {
                for xx in 0..w2 {
                    let first = base + 2 * y * w + 2 * xx;
                    let window = [first, first + 1, first + w, first + w + 1];
                    let best =
                        window
                            .into_iter()
                            .fold(first, |best, i| if x[i] > x[best] { i } else { best });
                    out.push(best);
                }
            }
        }
        out
    }
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
        let (x, dims) = contiguous_f32(self.name(), storage, layout)?;
        let out: Vec<f32> = MaxPool2::argmax(x, dims)
            .into_iter()
            .map(|i| x[i])
            .collect();
        Ok((
            CpuStorage::F32(out),
            Shape::from((dims.0, dims.1, dims.2 / 2, dims.3 / 2)),
        ))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dims = arg.dims4()?;
        let x = arg.flatten_all()?.to_vec1::<f32>()?;
        let g = grad_res.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut dx = vec![0f32; x.len()];
        for (i, gi) in MaxPool2::argmax(&x, dims).into_iter().zip(g) {
            dx[i] += gi;
        }
        Ok(Some(Tensor::from_vec(dx, dims, arg.device())?))
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
        let ours = linear(&x, &w, &b).unwrap();
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
        // Plain inputs get no gradient, and cost none.
        let plain = x.as_tensor().detach();
        let grads = loss(linear(&plain, &w, &b).unwrap()).backward().unwrap();
        assert!(grads.get(&plain).is_none() && grads.get(w.as_tensor()).is_some());
    }
}
