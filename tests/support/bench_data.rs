//! Benchmark: how fast a dataset is fingerprinted (blake3 over content, labels and split
//! indices), beside a plain memory copy of the same bytes as the memory-speed yardstick.
//! Medians of 7 runs. Uses Fashion-MNIST when Debian's dataset-fashion-mnist is installed.
//!
//! Usage: bench-data

use anyhow::Result;
use recipe::Dataset;
use std::time::Instant;

fn median(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[3]
}

fn main() -> Result<()> {
    let mut sets = vec![Dataset::digits()?];
    match Dataset::fashion_mnist() {
        Ok(d) => sets.push(d),
        Err(e) => eprintln!("skipping Fashion-MNIST: {e}"),
    }
    println!("| data | bytes | fingerprint (s) | GB/s | memcpy GB/s |");
    println!("|---|---|---|---|---|");
    for d in &sets {
        let bytes = d.features.len() * 4
            + d.len() * 4
            + d.splits.values().map(|s| s.len() * 8).sum::<usize>();
        let mut hash = String::new();
        let t = median(|| hash = d.fingerprint().hash);
        let copy = median(|| {
            let v = d.features.clone();
            std::hint::black_box(&v);
        });
        let gb = |s: f64| bytes as f64 / s / 1e9;
        println!(
            "| {} | {bytes} | {t:.4} | {:.2} | {:.2} |",
            d.name,
            gb(t),
            (d.features.len() * 4) as f64 / copy / 1e9
        );
        std::hint::black_box(hash);
    }
    Ok(())
}
