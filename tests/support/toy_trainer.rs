//! A toy trainer that writes real runs to an archive without the candle runtime: logistic
//! regression by minibatch SGD on two seeded Gaussian blobs. The end-to-end tests use it as
//! the process they kill, run side by side, and read back with other engines: it keeps those
//! archive tests independent of the runtime.
//!
//! Usage: toy-trainer --archive DIR [--name N] [--lr F] [--steps N] [--batch N]
//!                    [--seed-init N] [--seed-data N] [--sleep-ms N] [--commit-every N]
//!                    [--sweep S] [--recipe-step S] [--parent RUN]
//!
//! With `--commit-every N` it commits a chunk every N steps and prints `committed STEP`
//! after each, so a test knows what a kill must not lose.

use anyhow::{bail, Context, Result};
use recipe_archive::{Archive, DataFingerprint, FlushPolicy, RunSpec, Status};
use recipe_tests::SplitMix;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

struct Args {
    archive: String,
    name: String,
    lr: f64,
    steps: i64,
    batch: usize,
    seed_init: u64,
    seed_data: u64,
    sleep_ms: u64,
    commit_every: Option<i64>,
    sweep: Option<String>,
    recipe_step: Option<String>,
    parent: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        archive: String::new(),
        name: "toy".into(),
        lr: 0.1,
        steps: 200,
        batch: 16,
        seed_init: 1,
        seed_data: 1,
        sleep_ms: 0,
        commit_every: None,
        sweep: None,
        recipe_step: None,
        parent: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--archive" => args.archive = value()?,
            "--name" => args.name = value()?,
            "--lr" => args.lr = value()?.parse()?,
            "--steps" => args.steps = value()?.parse()?,
            "--batch" => args.batch = value()?.parse()?,
            "--seed-init" => args.seed_init = value()?.parse()?,
            "--seed-data" => args.seed_data = value()?.parse()?,
            "--sleep-ms" => args.sleep_ms = value()?.parse()?,
            "--commit-every" => args.commit_every = Some(value()?.parse()?),
            "--sweep" => args.sweep = Some(value()?),
            "--recipe-step" => args.recipe_step = Some(value()?),
            "--parent" => args.parent = Some(value()?),
            other => bail!("unknown flag {other}"),
        }
    }
    if args.archive.is_empty() {
        bail!("--archive DIR is required");
    }
    Ok(args)
}

/// Two 2-D Gaussian blobs, 256 examples each, from a fixed data seed (the data never
/// changes; the data-order seed shuffles it).
fn blobs() -> (Vec<[f64; 2]>, Vec<f64>) {
    let mut rng = SplitMix(42);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..512 {
        let label = (i % 2) as f64;
        let centre = if label == 1.0 { 1.0 } else { -1.0 };
        x.push([centre + rng.normal(), centre * 0.5 + rng.normal()]);
        y.push(label);
    }
    (x, y)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let (x, y) = blobs();
    let mut data_hash = blake3::Hasher::new();
    for (xi, yi) in x.iter().zip(&y) {
        for v in xi.iter().chain(std::iter::once(yi)) {
            data_hash.update(&v.to_le_bytes());
        }
    }
    let data = DataFingerprint {
        name: "blobs".into(),
        hash: data_hash.finalize().to_hex().to_string(),
        details: json!({"examples": x.len(), "features": 2}),
    };
    let config =
        json!({"model": "logistic", "lr": args.lr, "steps": args.steps, "batch_size": args.batch});
    let seeds = BTreeMap::from([
        ("init".to_string(), args.seed_init),
        ("data_order".to_string(), args.seed_data),
    ]);
    let mut spec = RunSpec::capture(&args.name, config, seeds, data)?;
    spec.sweep = args.sweep.clone();
    spec.recipe_step = args.recipe_step.clone();
    spec.parent_run = args.parent.clone();

    let archive = Archive::open(&args.archive)?;
    let mut run = archive.begin_run(spec)?;
    if args.commit_every.is_some() {
        run.set_flush_policy(FlushPolicy {
            points: usize::MAX,
            interval: Duration::from_secs(3600),
        });
    }
    let mut init = SplitMix(args.seed_init);
    let mut order = SplitMix(args.seed_data);
    let (mut w, mut b) = ([init.normal() * 0.1, init.normal() * 0.1], 0.0);
    let stdout = std::io::stdout();
    for step in 0..args.steps {
        let (mut gw, mut gb, mut loss) = ([0.0; 2], 0.0, 0.0);
        for _ in 0..args.batch {
            let i = order.below(x.len());
            let p = 1.0 / (1.0 + (-(w[0] * x[i][0] + w[1] * x[i][1] + b)).exp());
            loss -= y[i] * p.max(1e-12).ln() + (1.0 - y[i]) * (1.0 - p).max(1e-12).ln();
            gw[0] += (p - y[i]) * x[i][0];
            gw[1] += (p - y[i]) * x[i][1];
            gb += p - y[i];
        }
        let n = args.batch as f64;
        w = [w[0] - args.lr * gw[0] / n, w[1] - args.lr * gw[1] / n];
        b -= args.lr * gb / n;
        let acc = x
            .iter()
            .zip(&y)
            .filter(|(xi, yi)| ((w[0] * xi[0] + w[1] * xi[1] + b > 0.0) as u8 as f64) == **yi)
            .count() as f64
            / x.len() as f64;
        run.log_all(step, &[("train_loss", loss / n), ("test_acc", acc)])?;
        if let Some(every) = args.commit_every {
            if (step + 1) % every == 0 {
                run.flush()?;
                writeln!(stdout.lock(), "committed {step}")?;
            }
        }
        if args.sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(args.sleep_ms));
        }
    }
    let status = if w.iter().all(|v| v.is_finite()) {
        Status::Completed
    } else {
        Status::Diverged
    };
    let record = run.finish(status, None)?;
    println!("finished {} attempt {}", record.run_id, record.attempt);
    Ok(())
}
