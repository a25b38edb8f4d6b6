//! `recipe`: the command-line face of recipe.
//!
//! - `recipe runs list|show|diff|export|verify|compact`: the run archive from a shell.
//! - `recipe train`: one run of the built-in trainer.
//! - `recipe data`: a dataset's summary, duplicates, corrupt examples and fingerprint.
//!
//! Errors print one line (`error: ...`) and exit non-zero; usage errors exit 2.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
