//! `recipe`: the command-line face of recipe.
//!
//! - `recipe install`, `recipe kernel`: the Jupyter kernel "Rust (recipe)"; `recipe spares`:
//!   the warm sessions waiting for the next kernel start.
//! - `recipe exec NOTEBOOK`: run a notebook headless.
//! - `recipe runs list|show|diff|export|verify|compact`: the run archive from a shell.
//! - `recipe train`: one run of the built-in trainer.
//! - `recipe data`: a dataset's summary, duplicates, corrupt examples and fingerprint.
//!
//! Errors print one line (`error: ...`) and exit non-zero; usage errors exit 2.

mod alloc;
mod analyzer_source;
mod cli;
mod exec;
mod is_complete;
mod jupyter;
mod replay;
mod replies;
mod runtime_lib;
mod session;
mod spare;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

fn main() {
    // When evcxr starts this binary as the process that runs cells (or wraps rustc), control
    // stays there and never comes back.
    evcxr::runtime_hook();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
