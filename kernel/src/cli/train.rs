//! `recipe train`: one run of the built-in trainer from a shell (the notebooks do the same
//! through the runtime), archived like every run.

use anyhow::{Context, Result};
use clap::Args;
use recipe::prelude::*;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    source: super::data::DataSource,
    /// Use only the first N training and M test examples: N/M
    #[arg(long, value_name = "N/M")]
    subset: Option<String>,
    /// TrainConfig fields as JSON, e.g. '{"steps": 500, "model": {"kind": "mlp", "hidden": [128]}}'; text trains '{"kind": "gpt", "width": 64, "heads": 4, "layers": 2}' unless a model is given
    #[arg(long, default_value = "{}")]
    config: String,
    /// One seed for every source of randomness
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "run")]
    name: String,
    /// The recipe step the run belongs to
    #[arg(long)]
    step: Option<String>,
    #[arg(long)]
    sweep: Option<String>,
    /// The run this one changes one thing from (a run id prefix or unique name)
    #[arg(long)]
    parent: Option<String>,
    /// The archive folder [default: $RECIPE_ARCHIVE, else ./runs]
    #[arg(long)]
    archive: Option<PathBuf>,
    /// No progress line
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: TrainArgs) -> Result<()> {
    // A config that cannot be right is refused before any data is read or run archived.
    let mut config = TrainConfig::from_json(&args.config).context("--config")?;
    let names_a_model = serde_json::from_str::<serde_json::Value>(&args.config)
        .is_ok_and(|c| c.get("model").is_some());
    if args.source.is_text() && !names_a_model {
        config.model = ModelSpec::Gpt {
            width: 64,
            heads: 4,
            layers: 2,
        };
    }
    config.validate().context("--config")?;
    let data = args.source.load()?;
    let data = match &args.subset {
        Some(s) => {
            let (n, m) = s.split_once('/').context("--subset takes N/M")?;
            data.subset(
                n.parse().context("--subset N/M: N")?,
                m.parse().context("--subset N/M: M")?,
            )?
        }
        None => data,
    };
    let archive = Archive::open(args.archive.unwrap_or_else(Archive::default_root))?;
    let parent = match &args.parent {
        Some(reference) => Some(archive.find(reference)?.key()),
        None => None,
    };
    let options = RunOptions {
        name: args.name,
        parent,
        recipe_step: args.step,
        sweep: args.sweep,
        archive: Some(archive),
        quiet: args.quiet,
        ..RunOptions::default()
    };
    let trained = fit(&data, &config, &Seeds::all(args.seed), &options)?;
    println!("{}", trained.text().trim_end());
    if trained.status != Status::Completed {
        let reason = trained.run.as_ref().and_then(|r| r.error.clone());
        anyhow::bail!(
            "the run ended {}: {}",
            trained.status,
            reason.unwrap_or_else(|| "no reason recorded".into())
        );
    }
    Ok(())
}
