//! Custom tensor operations with hand-written backward passes, where candle's own are slow
//! (conv2d's backward runs scalar dot products) or wrong (candle 0.11's `max_pool2d` backward
//! scales gradients by 1/4). Each walks its elements in one fixed order, so results are the
//! same bits on every run.

use candle_core::Tensor;

/// (B, C, H, W).
type Dims4 = (usize, usize, usize, usize);

/// The f32 values of a contiguous CPU input and its (B, C, H, W) dims.
fn contiguous_f32<'a>(
    op: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<(&'a [f32], Dims4)> {
    let dims = layout.shape().dims4()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} needs a contiguous input");
    };
    Ok((&storage.as_slice::<f32>()?[start..end], dims))
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
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (x, (b, c, h, w)) = contiguous_f32(self.name(), storage, layout)?;
        let mut out = vec![0f32; b * h * w * c * 9];
        for_each_tap((b, c, h, w), |column, pixel| out[column] = x[pixel]);
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from((b * h * w, c * 9)),
        ))
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
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (x, dims) = contiguous_f32(self.name(), storage, layout)?;
        let out: Vec<f32> = MaxPool2::argmax(x, dims)
            .into_iter()
            .map(|i| x[i])
            .collect();
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from((dims.0, dims.1, dims.2 / 2, dims.3 / 2)),
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
}
