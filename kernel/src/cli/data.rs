//! `recipe data`: become one with the data from a shell: summary, duplicates across and
//! within splits, corrupt examples, and the fingerprint a run would record.

use anyhow::{Context, Result};
use clap::Args;
use recipe::prelude::*;

#[derive(Args, Debug)]
pub struct DataArgs {
    /// `digits` (embedded), `fashion-mnist` (Debian's dataset-fashion-mnist), or a .csv/.csv.gz/.parquet file
    #[arg(long, default_value = "digits")]
    data: String,
}

/// Load a dataset by the name the CLI takes.
pub fn load(name: &str) -> Result<Dataset> {
    Ok(match name {
        "digits" => Dataset::digits()?,
        "fashion-mnist" => Dataset::fashion_mnist()?,
        path if path.ends_with(".parquet") => Dataset::from_parquet(path)?,
        path => Dataset::from_csv(path).with_context(|| format!("loading {path}"))?,
    })
}

pub fn run(args: DataArgs) -> Result<()> {
    let data = load(&args.data)?;
    print!("{}", data.summary()?.text());
    print!("{}", data.duplicates().text());
    print!("{}", data.corrupt().text());
    let fp = data.fingerprint();
    println!("fingerprint {} ({})", fp.hash, fp.name);
    Ok(())
}
