//! The `recipe` command line: argument definitions and dispatch.

mod data;
mod runs;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "recipe",
    version,
    about = "Train neural nets from a notebook in Rust, with every run archived"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with the run archive: list, show, diff, export, compact.
    Runs(runs::RunsArgs),
    /// Look at a dataset: summary, duplicates, corrupt examples, fingerprint.
    Data(data::DataArgs),
    /// Train one run of the built-in trainer and archive it.
    Train(train::TrainArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Runs(args) => runs::run(args),
        Command::Train(args) => train::run(args),
        Command::Data(args) => data::run(args),
    }
}
