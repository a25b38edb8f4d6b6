//! The `recipe` command line: argument definitions and dispatch.

mod data;
mod runs;
mod train;

use std::path::PathBuf;

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
    /// Build the runtime library and write the Jupyter kernelspec "Rust (recipe)".
    Install(InstallArgs),
    /// Serve a Jupyter kernel (what Jupyter runs, with its connection file).
    Kernel(KernelArgs),
    /// Run a notebook headless and write its outputs back.
    Exec(ExecArgs),
    /// List the warm spare sessions waiting for the next kernel start, or stop them.
    Spares(SparesArgs),
}

#[derive(clap::Args, Debug)]
struct SparesArgs {
    /// End every waiting spare (each holds about 460 MB).
    #[arg(long)]
    stop: bool,
}

#[derive(clap::Args, Debug)]
struct InstallArgs {
    /// Install under PREFIX (PREFIX/share/jupyter/kernels, PREFIX/share/recipe) instead of the
    /// user's data folder.
    #[arg(long)]
    prefix: Option<PathBuf>,
    /// The recipe workspace to build the runtime from (default: the one this binary was
    /// built from).
    #[arg(long)]
    source: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct KernelArgs {
    /// The connection file Jupyter wrote.
    #[arg(long, required_unless_present = "spare")]
    connection_file: Option<PathBuf>,
    /// Start a warm spare session for the next kernel launched the same way (kernels do
    /// this themselves; `RECIPE_SPARE=0` turns it off).
    #[arg(long, hide = true, conflicts_with = "connection_file")]
    spare: bool,
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    /// The notebook (.ipynb) to run.
    notebook: PathBuf,
    /// Override a parameter of the cell tagged `parameters`: -p steps=50 (repeatable).
    #[arg(short = 'p', long = "parameter", value_parser = parse_key_value)]
    parameters: Vec<(String, String)>,
    /// Write the executed notebook here instead of over NOTEBOOK.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, got `{text}`"))
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Runs(args) => printing_to_a_pipe(|| runs::run(args)),
        Command::Train(args) => train::run(args),
        Command::Data(args) => printing_to_a_pipe(|| data::run(args)),
        Command::Install(args) => {
            crate::runtime_lib::InstallPlan::new(args.prefix.as_deref(), args.source.as_deref())?
                .run()
        }
        Command::Kernel(KernelArgs {
            connection_file: Some(file),
            spare: false,
        }) => crate::jupyter::serve(&file),
        Command::Kernel(_) => crate::spare::run_spare(),
        Command::Spares(args) => crate::spare::manage(args.stop),
        Command::Exec(args) => {
            crate::exec::run(&args.notebook, &args.parameters, args.output.as_deref())
        }
    }
}

/// Run a command that prints for a shell pipeline: when the reader goes away (`| head`), the
/// command ends quietly, as `cat` does, instead of panicking in `println!`. Rust ignores
/// SIGPIPE by default; the kernel keeps that (a closed socket must not end it), so only
/// these commands restore it.
fn printing_to_a_pipe(command: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    // SAFETY: setting a signal's disposition to its default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    command()
}
