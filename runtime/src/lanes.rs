//! Elementwise loops on the widest lanes the CPU has. A loop written once, as a plain
//! `#[inline(always)]` function of slices, runs on 8 lanes where the CPU has AVX2 and on the
//! baseline's 4 elsewhere ([`widest_lanes!`]). The loops use plain IEEE operations only (Rust
//! never fuses a*b+c unasked; division and sqrt are correctly rounded in every instruction
//! set), so both widths give the same bits.
//!
//! [`exp`] is here because libm's `expf` is one call per value, which no loop can vectorise
//! around: GELU (here too, forward and backward, for the fused layers and the GELU
//! operation alike) and the softmax spent most of their time in it.
//!
//! Not here: anything with a reduction whose order matters (sums stay scalar, in order).

/// `fn $name(args)`: `$plain(args)` compiled for AVX2 when the CPU has it, else as built.
macro_rules! widest_lanes {
    ($(#[$doc:meta])* $vis:vis fn $name:ident = $plain:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    $plain($($arg),*)
                }
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { avx2($($arg),*) };
                return;
            }
            $plain($($arg),*)
        }
    };
}
pub(crate) use widest_lanes;

/// e^x to within 2 ulp over [-87, 88], after Cephes' `expf`: x = n ln 2 + r with
/// |r| <= ln 2 / 2, e^r from a degree-5 polynomial, 2^n from the exponent bits. No branch and
/// no call, so a loop over it vectorises. Inputs are clamped to [-87, 88] (e^x is then
/// 1.6e-38 to 1.7e38: all that a softmax or a tanh can tell apart); NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // ln 2 in two parts, the first with few bits, so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding, then taking away, 1.5 * 2^23 rounds to the nearest whole number.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let e_r = p * (r * r) + r + 1.0;
    // n is a whole number in [-126, 127], and `shifted`'s bits are ROUND's plus n: 2^n is
    // the normal f32 with exponent bits n + 127. (An `as i32` would not vectorise: Rust's
    // float-to-int conversion saturates, value by value.)
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    e_r * f32::from_bits(biased << 23)
}

/// Elements per parallel task of an elementwise pass.
pub(crate) const CHUNK: usize = 1 << 14;

/// √(2/π), the tanh form's scale.
const GELU_K: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// tanh from one exponential: 1 - 2 / (e^(2u) + 1).
#[inline(always)]
fn tanh(u: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * u) + 1.0)
}

widest_lanes!(
    /// y = GELU(x), elementwise.
    pub(crate) fn gelu_into = gelu_values(y: &mut [f32], x: &[f32])
);

#[inline(always)]
fn gelu_values(y: &mut [f32], x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = 0.5 * x * (1.0 + tanh(GELU_K * (x + GELU_C * x * x * x)));
    }
}

widest_lanes!(
    /// dx = GELU'(x) dy, elementwise.
    pub(crate) fn gelu_grad_into = gelu_grads(dx: &mut [f32], x: &[f32], dy: &[f32])
);

#[inline(always)]
fn gelu_grads(dx: &mut [f32], x: &[f32], dy: &[f32]) {
    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
        let t = tanh(GELU_K * (x + GELU_C * x * x * x));
        let du = GELU_K * (1.0 + 3.0 * GELU_C * x * x);
        *dx = g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_correctly_rounded_value() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let truth = (x as f64).exp();
            let ulp = (truth as f32).next_up() as f64 - truth as f32 as f64;
            worst = worst.max((exp(x) as f64 - truth).abs() / ulp);
            x += 0.001_3;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::NEG_INFINITY), exp(-87.0));
        assert!(exp(f32::INFINITY).is_finite() && exp(1000.0) == exp(88.0));
    }

    widest_lanes!(
        /// exp over a slice, on the widest lanes.
        fn exp_all = exp_values(out: &mut [f32], x: &[f32])
    );

    #[inline(always)]
    fn exp_values(out: &mut [f32], x: &[f32]) {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = exp(x);
        }
    }

    #[test]
    fn the_wide_loop_gives_the_same_bits_as_one_value_at_a_time() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.173).collect();
        let mut wide = vec![0f32; x.len()];
        exp_all(&mut wide, &x);
        for (w, &x) in wide.iter().zip(&x) {
            assert_eq!(w.to_bits(), exp(x).to_bits(), "at {x}");
        }
    }
}
