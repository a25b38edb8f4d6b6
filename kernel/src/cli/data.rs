//! `recipe data`: become one with the data from a shell: summary, duplicates across and
//! within splits, corrupt examples, and the fingerprint a run would record; for a table,
//! `--columns` shows every column before a target is chosen.

use anyhow::{Context, Result};
use clap::Args;
use recipe::data::Table;
use recipe::prelude::*;

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(flatten)]
    source: DataSource,
    /// Show a table's columns (type, missing cells, distinct values, min/mean/max, most
    /// frequent values, what the choices make of each) and its target's classes, and stop
    #[arg(long)]
    columns: bool,
}

/// Which data, and for a table the choices about it (see `Dataset::table`).
#[derive(Args, Debug)]
pub struct DataSource {
    /// `digits` (embedded), `fashion-mnist` (Debian's dataset-fashion-mnist), `penguins` (an embedded table: name its target), `shakespeare` (embedded text), `words` (Debian's wamerican word list), a .txt file (text, character by character), a .csv/.csv.gz/.parquet table, a .npz file (arrays x and y), or a folder of images with a subfolder per class
    #[arg(long, default_value = "digits")]
    data: String,
    /// A table's target column [default: the one named label, target, class or y]
    #[arg(long, value_name = "COLUMN")]
    target: Option<String>,
    /// A table's column to leave out (repeat for more)
    #[arg(long = "drop", value_name = "COLUMN")]
    drop: Vec<String>,
    /// Leave out a table's rows that have a missing cell (by default they are an error; with
    /// --fill, only the rows whose target is missing)
    #[arg(long)]
    drop_missing_rows: bool,
    /// A table's column to encode as one 0/1 feature per category of the training split
    /// (repeat for more)
    #[arg(long = "one-hot", value_name = "COLUMN")]
    one_hot: Vec<String>,
    /// Fill a table's missing feature cells with the training split's mean (most frequent
    /// value for a one-hot column) or most frequent value
    #[arg(long, value_name = "HOW", value_parser = ["mean", "mode"])]
    fill: Option<String>,
    /// Standardise a table's features (and a regression target) with the training split's
    /// mean and std
    #[arg(long)]
    normalize: bool,
    /// Predict the target's number (regression: squared error; RMSE, MAE, R²) instead of
    /// classes
    #[arg(long)]
    regression: bool,
    /// Resize an image folder's images to HEIGHTxWIDTH, e.g. 32x32
    #[arg(long, value_name = "HEIGHTxWIDTH")]
    size: Option<String>,
    /// Convert an image folder's images to one gray channel
    #[arg(long)]
    grayscale: bool,
    /// Tokens per example of a text (its block size) [default: 64; 16 for words]
    #[arg(long, value_name = "TOKENS")]
    context: Option<usize>,
}

impl DataSource {
    /// Load the dataset named.
    pub fn load(&self) -> Result<Dataset> {
        // The built-in names come first: a folder that shares one is reached as ./NAME.
        let built_in = matches!(
            self.data.as_str(),
            "digits" | "fashion-mnist" | "penguins" | "shakespeare" | "words"
        );
        let text = self.is_text();
        if !text && self.context.is_some() {
            anyhow::bail!(
                "--context is a choice about text (shakespeare, words or a .txt file); {} is \
                 not text",
                self.data
            );
        }
        if text {
            return self.text();
        }
        let folder = !built_in && std::path::Path::new(&self.data).is_dir();
        if !folder && (self.size.is_some() || self.grayscale) {
            anyhow::bail!(
                "--size and --grayscale are choices about a folder of images; {} is not one",
                self.data
            );
        }
        if folder {
            return self.image_folder();
        }
        let table_file = !matches!(self.data.as_str(), "digits" | "fashion-mnist")
            && !self.data.ends_with(".npz");
        if !table_file && self.has_table_choices() {
            anyhow::bail!(
                "--target, --drop, --drop-missing-rows, --one-hot, --fill, --normalize and \
                 --regression are choices about a table (.csv, .csv.gz, .parquet); {} is not one",
                self.data
            );
        }
        Ok(match self.data.as_str() {
            "digits" => Dataset::digits()?,
            "fashion-mnist" => Dataset::fashion_mnist()?,
            path if path.ends_with(".npz") => {
                Dataset::from_npz(path).with_context(|| format!("loading {path}"))?
            }
            path => self
                .table(path)
                .load()
                .with_context(|| format!("loading {path}"))?,
        })
    }

    /// The folder of images at `--data`, with the choices given.
    fn image_folder(&self) -> Result<Dataset> {
        if self.has_table_choices() {
            anyhow::bail!(
                "--target, --drop, --drop-missing-rows, --one-hot, --fill, --normalize and \
                 --regression are choices about a table; {} is a folder of images",
                self.data
            );
        }
        let mut folder = Dataset::image_folder(&self.data);
        if let Some(size) = &self.size {
            let parsed = size
                .split_once('x')
                .and_then(|(h, w)| Some((h.parse().ok()?, w.parse().ok()?)));
            let (height, width) = parsed
                .with_context(|| format!("--size takes HEIGHTxWIDTH, e.g. 32x32, not {size:?}"))?;
            folder = folder.size(height, width);
        }
        if self.grayscale {
            folder = folder.grayscale();
        }
        folder
            .load()
            .with_context(|| format!("loading {}", self.data))
    }

    /// Whether `--data` names text.
    pub fn is_text(&self) -> bool {
        matches!(self.data.as_str(), "shakespeare" | "words") || self.data.ends_with(".txt")
    }

    /// The text at `--data`, with its context.
    fn text(&self) -> Result<Dataset> {
        if self.has_table_choices() || self.size.is_some() || self.grayscale {
            anyhow::bail!(
                "{} is text: of the data choices it takes only --context",
                self.data
            );
        }
        let mut text = match self.data.as_str() {
            "shakespeare" => Dataset::shakespeare(),
            "words" => Dataset::words(),
            path => Dataset::text(path),
        };
        if let Some(tokens) = self.context {
            text = text.context(tokens);
        }
        text.load()
            .with_context(|| format!("loading {}", self.data))
    }

    fn has_table_choices(&self) -> bool {
        self.target.is_some()
            || !self.drop.is_empty()
            || self.drop_missing_rows
            || !self.one_hot.is_empty()
            || self.fill.is_some()
            || self.normalize
            || self.regression
    }

    /// The table at `path` (or the embedded penguins) with the choices given.
    fn table(&self, path: &str) -> Table {
        let table = match path {
            "penguins" => Dataset::penguins(),
            path => Dataset::table(path),
        };
        let mut table = table.drop(&self.drop).one_hot(&self.one_hot);
        if let Some(target) = &self.target {
            table = table.target(target);
        }
        if self.drop_missing_rows {
            table = table.drop_missing_rows();
        }
        table = match self.fill.as_deref() {
            Some("mean") => table.fill_mean(),
            Some("mode") => table.fill_mode(),
            _ => table,
        };
        if self.normalize {
            table = table.normalize();
        }
        if self.regression {
            table = table.regression();
        }
        table
    }
}

pub fn run(args: DataArgs) -> Result<()> {
    if args.columns {
        let path = args.source.data.as_str();
        if matches!(path, "digits" | "fashion-mnist")
            || path.ends_with(".npz")
            || args.source.is_text()
        {
            anyhow::bail!("--columns shows a table's columns; {path} is not a table file");
        }
        let columns = args.source.table(path).columns();
        print!(
            "{}",
            columns.with_context(|| format!("reading {path}"))?.text()
        );
        return Ok(());
    }
    let data = args.source.load()?;
    if let Ok(corpus) = data.corpus() {
        println!("{}", corpus.text());
    }
    print!("{}", data.summary()?.text());
    print!("{}", data.duplicates().text());
    print!("{}", data.corrupt().text());
    let fp = data.fingerprint();
    println!("fingerprint {} ({})", fp.hash, fp.name);
    Ok(())
}
