//! Which examples enter the model at each step, and how they are augmented: pure functions
//! of (seed, step), so a resumed run sees the batches an uninterrupted one would.

use crate::rng::Rng;

/// The training examples of step `step`: a pure function of (seed, step), each epoch a fresh
/// seeded permutation of the training split.
pub fn batch_indices(train: &[usize], batch: usize, seed: u64, step: usize) -> Vec<usize> {
    let n = train.len().max(1);
    let mut out = Vec::with_capacity(batch);
    let mut position = step * batch;
    let mut epoch = usize::MAX;
    let mut order: Vec<usize> = Vec::new();
    while out.len() < batch {
        if position / n != epoch {
            epoch = position / n;
            order = train.to_vec();
            Rng::stream(seed, &format!("data_order/epoch{epoch}")).shuffle(&mut order);
        }
        out.push(order[position % n]);
        position += 1;
    }
    out
}

/// Shift each image in a batch by up to one pixel in each direction (zero fill), with draws
/// from the augmentation stream of this step.
pub(crate) fn augment(x: &mut [f32], shape: &[usize], seed: u64, step: usize) {
    let (h, w) = match shape {
        [.., h, w] => (*h, *w),
        _ => return,
    };
    let plane = h * w;
    let per_example: usize = shape.iter().product();
    let mut rng = Rng::stream(seed, &format!("augmentation/{step}"));
    for example in x.chunks_mut(per_example) {
        let (dy, dx) = (rng.below(3) as isize - 1, rng.below(3) as isize - 1);
        for channel in example.chunks_mut(plane) {
            let src = channel.to_vec();
            for r in 0..h as isize {
                for c in 0..w as isize {
                    let (sr, sc) = (r - dy, c - dx);
                    channel[(r * w as isize + c) as usize] =
                        if sr >= 0 && sc >= 0 && sr < h as isize && sc < w as isize {
                            src[(sr * w as isize + sc) as usize]
                        } else {
                            0.0
                        };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_a_pure_function_of_seed_and_step_and_cover_each_epoch() {
        let train: Vec<usize> = (100..110).collect();
        let epoch: Vec<usize> = (0..5)
            .flat_map(|s| batch_indices(&train, 2, 7, s))
            .collect();
        let mut sorted = epoch.clone();
        sorted.sort();
        assert_eq!(sorted, train);
        assert_eq!(
            batch_indices(&train, 4, 7, 3),
            batch_indices(&train, 4, 7, 3)
        );
        assert_ne!(
            batch_indices(&train, 10, 7, 0),
            batch_indices(&train, 10, 8, 0)
        );
    }
}
