//! `recipe data`: become one with the data from a shell: summary, duplicates across and
//! within splits, corrupt examples, and the fingerprint a run would record.

use anyhow::{Context, Result};
use clap::Args;
use recipe::prelude::*;

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(flatten)]
    source: DataSource,
}

/// Which data, and for a table the choices about it (see `Dataset::table`).
#[derive(Args, Debug)]
pub struct DataSource {
    /// `digits` (embedded), `fashion-mnist` (Debian's dataset-fashion-mnist), or a .csv/.csv.gz/.parquet file
    #[arg(long, default_value = "digits")]
    data: String,
    /// A table's target column [default: the one named label, target, class or y]
    #[arg(long, value_name = "COLUMN")]
    target: Option<String>,
    /// A table's column to leave out (repeat for more)
    #[arg(long = "drop", value_name = "COLUMN")]
    drop: Vec<String>,
    /// Leave out a table's rows that have a missing cell (by default they are an error)
    #[arg(long)]
    drop_missing_rows: bool,
}

impl DataSource {
    /// Load the dataset named.
    pub fn load(&self) -> Result<Dataset> {
        Ok(match self.data.as_str() {
            "digits" => Dataset::digits()?,
            "fashion-mnist" => Dataset::fashion_mnist()?,
            path => {
                let mut table = Dataset::table(path).drop(&self.drop);
                if let Some(target) = &self.target {
                    table = table.target(target);
                }
                if self.drop_missing_rows {
                    table = table.drop_missing_rows();
                }
                table.load().with_context(|| format!("loading {path}"))?
            }
        })
    }
}

pub fn run(args: DataArgs) -> Result<()> {
    let data = args.source.load()?;
    print!("{}", data.summary()?.text());
    print!("{}", data.duplicates().text());
    print!("{}", data.corrupt().text());
    let fp = data.fingerprint();
    println!("fingerprint {} ({})", fp.hash, fp.name);
    Ok(())
}
