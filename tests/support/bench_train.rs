//! Benchmark: the runtime's training step against PyTorch on the CPU, side by side in one
//! invocation: the same models (MLP 784-256-10; ConvNet 32-64 with a 128 dense layer on
//! 28x28; a GPT of 4 layers, width 128, 4 heads, context 64, vocabulary 65), batch sizes,
//! thread counts, init scheme and optimizer (AdamW at 3e-4). Prints steps per second, the
//! ratio recipe / PyTorch (above 1 is faster) and peak memory.
//!
//! Usage: bench-train [--python PATH] [--threads 1,2]
//! Each side runs in its own process per thread count (RAYON_NUM_THREADS for candle,
//! torch.set_num_threads for PyTorch).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use recipe::models::ModelSpec;
use recipe::optim::AdamW;
use recipe::params::Params;
use recipe::train::train_step;
use recipe_tests::{peak_rss_mib, run_json};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

const ROWS: [&str; 5] = [
    "mlp_train_b64",
    "mlp_train_b256",
    "mlp_forward_b64",
    "convnet_train_b64",
    "gpt_train_b32",
];

/// The transformer row's shape: the small character model.
const GPT: ModelSpec = ModelSpec::Gpt {
    width: 128,
    heads: 4,
    layers: 4,
};
const GPT_CONTEXT: usize = 64;
const GPT_VOCAB: usize = 65;

fn steps_per_second(spec: ModelSpec, batch: usize, seconds: f64, train: bool) -> Result<f64> {
    let params = Params::new(0);
    let mut rng = recipe::Rng::stream(0, "bench");
    let text = spec.is_sequence_model();
    let (model, x, y, task) = if text {
        // Token ids (B, T) and next tokens (B, T).
        let (b, t, v) = (batch, GPT_CONTEXT, GPT_VOCAB);
        let ids: Vec<f32> = (0..b * t).map(|_| rng.below(v) as f32).collect();
        let next: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
        (
            spec.build(&[t], v, 0.0, 0, &params)?,
            Tensor::from_vec(ids, (b, t), &Device::Cpu)?,
            Tensor::from_vec(next, (b, t), &Device::Cpu)?,
            recipe::Task::NextToken { vocab: v },
        )
    } else {
        let x = Tensor::from_vec(
            (0..batch * 784)
                .map(|_| rng.uniform() as f32)
                .collect::<Vec<_>>(),
            (batch, 1, 28, 28),
            &Device::Cpu,
        )?;
        let y = Tensor::from_vec(
            (0..batch).map(|_| rng.below(10) as u32).collect::<Vec<_>>(),
            batch,
            &Device::Cpu,
        )?;
        (
            spec.build(&[1, 28, 28], 10, 0.0, 0, &params)?,
            x,
            y,
            recipe::Task::Classification { classes: 10 },
        )
    };
    let mut opt = AdamW::new(0.9, 0.999, 1e-8, 0.0);
    let mut step = || -> Result<()> {
        if train {
            train_step(model.as_ref(), &params, &mut opt, task, &x, &y, 3e-4, None)?;
        } else {
            model.forward(&x, false)?.to_dtype(DType::F32)?;
        }
        Ok(())
    };
    for _ in 0..3 {
        step()?;
    }
    let (mut n, t0) = (0usize, Instant::now());
    while t0.elapsed().as_secs_f64() < seconds {
        step()?;
        n += 1;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// The recipe side, in a child process whose RAYON_NUM_THREADS the parent set.
fn child() -> Result<()> {
    let mlp = || ModelSpec::Mlp { hidden: vec![256] };
    let rows = json!({
        "mlp_train_b64": steps_per_second(mlp(), 64, 2.0, true)?,
        "mlp_train_b256": steps_per_second(mlp(), 256, 2.0, true)?,
        "mlp_forward_b64": steps_per_second(mlp(), 64, 1.0, false)?,
        "convnet_train_b64": steps_per_second(ModelSpec::ConvNet { channels: [32, 64], hidden: 128 }, 64, 3.0, true)?,
        "gpt_train_b32": steps_per_second(GPT, 32, 4.0, true)?,
    });
    println!("{}", json!({"rows": rows, "peak_rss_mib": peak_rss_mib()}));
    Ok(())
}

fn main() -> Result<()> {
    let mut python = String::from(".venv-bench/bin/python");
    let mut threads = vec![1usize, 2];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--child" => return child(),
            // One row alone, for profiling: --only mlp_train_b64
            "--only" => {
                let row = args.next().context("--only ROW")?;
                let (spec, batch, train) = match row.as_str() {
                    "mlp_train_b64" => (ModelSpec::Mlp { hidden: vec![256] }, 64, true),
                    "mlp_train_b256" => (ModelSpec::Mlp { hidden: vec![256] }, 256, true),
                    "mlp_forward_b64" => (ModelSpec::Mlp { hidden: vec![256] }, 64, false),
                    "convnet_train_b64" => (
                        ModelSpec::ConvNet {
                            channels: [32, 64],
                            hidden: 128,
                        },
                        64,
                        true,
                    ),
                    "gpt_train_b32" => (GPT, 32, true),
                    other => bail!("unknown row {other}; rows: {}", ROWS.join(", ")),
                };
                println!(
                    "{row}: {:.1} steps/s",
                    steps_per_second(spec, batch, 5.0, train)?
                );
                return Ok(());
            }
            "--python" => python = args.next().context("--python PATH")?,
            "--threads" => {
                threads = args
                    .next()
                    .context("--threads 1,2")?
                    .split(',')
                    .map(|t| t.parse())
                    .collect::<Result<_, _>>()?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let me = std::env::current_exe()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/torch_bench.py");
    let mut table: BTreeMap<(usize, &str), (f64, f64)> = BTreeMap::new();
    let mut memory = Vec::new();
    for &t in &threads {
        let ours = run_json(
            Command::new(&me)
                .arg("--child")
                .env("RAYON_NUM_THREADS", t.to_string()),
        )?;
        let theirs = run_json(Command::new(&python).arg(script).arg(t.to_string()))?;
        for row in ROWS {
            table.insert(
                (t, row),
                (
                    ours["rows"][row].as_f64().unwrap_or(f64::NAN),
                    theirs["rows"][row].as_f64().unwrap_or(f64::NAN),
                ),
            );
        }
        memory.push(format!(
            "{t} thread(s): recipe {:.0} MiB, PyTorch {} {:.0} MiB",
            ours["peak_rss_mib"].as_f64().unwrap_or(0.0),
            theirs["torch"].as_str().unwrap_or("?"),
            theirs["peak_rss_mib"].as_f64().unwrap_or(0.0)
        ));
    }
    println!("| row | threads | recipe steps/s | PyTorch steps/s | recipe / PyTorch |");
    println!("|---|---|---|---|---|");
    for ((t, row), (ours, theirs)) in &table {
        println!(
            "| {row} | {t} | {ours:.1} | {theirs:.1} | {:.2}x |",
            ours / theirs
        );
    }
    println!("\npeak memory: {}", memory.join("; "));
    Ok(())
}
