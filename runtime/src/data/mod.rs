//! Data: the [`Dataset`] type, its loaders and its fingerprint ("become one with the data").
//!
//! A dataset is N examples of one shape (features as f32, row-major), a [`Target`] per
//! example (a class, a value to regress, or the next token at each position of a text
//! window), and named splits (`train`, `val`, `test`) as
//! index lists. It remembers how it was made ([`DataSpec`]) so an archived run can load the
//! very same data again to verify. Its target decides the [`Task`].

mod arrays;
pub mod images;
pub mod inspect;
mod loaders;
pub mod table;
pub mod text;

pub use images::{ImageChoices, ImageFolder};
pub use inspect::{Corrupt, Duplicates, Ranked, Summary, TargetValues};
pub use table::{ColumnStats, Columns, Fill, Fitted, Scale, TableChoices};
pub use text::{Corpus, SplitText, Text, TextChoices};

use crate::rng::Rng;
use crate::task::Task;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` package puts Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// How a dataset was made: enough to make it again, bit for bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// The embedded UCI 8x8 digits.
    Digits,
    /// Fashion-MNIST in IDX format from a folder.
    FashionMnist { dir: PathBuf },
    /// A CSV file (optionally .gz) with a header row, and the user's choices about it.
    Csv {
        path: PathBuf,
        #[serde(flatten)]
        table: TableChoices,
    },
    /// A Parquet file, and the user's choices about it.
    Parquet {
        path: PathBuf,
        #[serde(flatten)]
        table: TableChoices,
    },
    /// Features and labels from .npy files.
    Npy { features: PathBuf, labels: PathBuf },
    /// Features and labels from one .npz file.
    Npz { path: PathBuf },
    /// `features` and `labels` tensors from a safetensors file.
    Safetensors { path: PathBuf },
    /// The first `train` training and `test` test examples (validation scaled alike) of another set.
    Subset {
        of: Box<DataSpec>,
        train: usize,
        test: usize,
    },
    /// Another set with its labels permuted by a seed (a planted bug: nothing to learn).
    ShuffledLabels { of: Box<DataSpec>, seed: u64 },
    /// The embedded Palmer penguins table, and the user's choices about it.
    Penguins {
        #[serde(flatten)]
        table: TableChoices,
    },
    /// A folder of PNG and JPEG images, a subfolder per class, and the user's choices.
    ImageFolder {
        path: PathBuf,
        #[serde(flatten)]
        choices: ImageChoices,
    },
    /// A UTF-8 text file at the character level, and the choices about it.
    Text {
        path: PathBuf,
        #[serde(flatten)]
        choices: TextChoices,
    },
    /// The embedded Shakespeare, and the choices about it.
    Shakespeare {
        #[serde(flatten)]
        choices: TextChoices,
    },
}

impl DataSpec {
    /// Make the dataset this spec describes.
    pub fn load(&self) -> Result<Dataset> {
        match self {
            DataSpec::Digits => Dataset::digits(),
            DataSpec::FashionMnist { dir } => Dataset::fashion_mnist_at(dir),
            DataSpec::Csv { path, table } => loaders::csv(path, table),
            DataSpec::Parquet { path, table } => loaders::parquet(path, table),
            DataSpec::Npy { features, labels } => Dataset::from_npy(features, labels),
            DataSpec::Npz { path } => Dataset::from_npz(path),
            DataSpec::Safetensors { path } => Dataset::from_safetensors(path),
            DataSpec::Subset { of, train, test } => of.load()?.subset(*train, *test),
            DataSpec::ShuffledLabels { of, seed } => Ok(of.load()?.with_shuffled_labels(*seed)),
            DataSpec::Penguins { table } => loaders::penguins(table),
            DataSpec::ImageFolder { path, choices } => ImageFolder {
                root: path.clone(),
                choices: choices.clone(),
            }
            .load(),
            DataSpec::Text { path, choices } => text::load_file(path, choices),
            DataSpec::Shakespeare { choices } => text::load_shakespeare(choices),
        }
    }
}

/// A table about to be loaded, with the user's choices ([`Dataset::table`],
/// [`Dataset::penguins`]).
#[derive(Clone, Debug)]
pub struct Table {
    source: TableSource,
    choices: TableChoices,
}

/// Where a table's bytes come from.
#[derive(Clone, Debug)]
enum TableSource {
    File(PathBuf),
    /// The Palmer penguins, embedded (see data/ATTRIBUTION.md).
    Penguins,
}

impl Table {
    /// The target column (by default the one named `label`, `target`, `class` or `y`).
    pub fn target(mut self, column: &str) -> Table {
        self.choices.target = Some(column.to_string());
        self
    }

    /// Leave these columns out (ids, text, dates).
    pub fn drop<S: AsRef<str>>(mut self, columns: impl IntoIterator<Item = S>) -> Table {
        let columns = columns.into_iter().map(|c| c.as_ref().to_string());
        self.choices.drop.extend(columns);
        self
    }

    /// Leave out the rows with a missing cell (by default they are an error). With
    /// [`Table::fill_mean`] or [`Table::fill_mode`], only the rows whose target is missing.
    pub fn drop_missing_rows(mut self) -> Table {
        self.choices.drop_missing_rows = true;
        self
    }

    /// Encode these columns (text, dates, or numbers that name categories) as one 0/1
    /// feature per category the training split holds, sorted; a category that only val or
    /// test rows hold encodes as all zeros, and the summary counts those rows.
    pub fn one_hot<S: AsRef<str>>(mut self, columns: impl IntoIterator<Item = S>) -> Table {
        let columns = columns.into_iter().map(|c| c.as_ref().to_string());
        self.choices.one_hot.extend(columns);
        self
    }

    /// Fill missing feature cells with the training split's mean of their column (its most
    /// frequent value for a one-hot column). A missing target is never filled.
    pub fn fill_mean(mut self) -> Table {
        self.choices.fill = Some(Fill::Mean);
        self
    }

    /// Fill missing feature cells with the training split's most frequent value of their
    /// column (of equally frequent ones, the smallest). A missing target is never filled.
    pub fn fill_mode(mut self) -> Table {
        self.choices.fill = Some(Fill::Mode);
        self
    }

    /// Standardise every feature with the training split's mean and standard deviation (a
    /// feature constant over the training split keeps std 1; the summary names it).
    pub fn normalize(mut self) -> Table {
        self.choices.normalize = true;
        self
    }

    /// Predict the target's number (regression: squared error; RMSE, MAE and R²) instead of
    /// classes. With [`Table::normalize`] the target is standardised too, with the training
    /// split's mean and std.
    pub fn regression(mut self) -> Table {
        self.choices.regression = true;
        self
    }

    /// Read the table: Parquet when the file ends in `.parquet`, else CSV (plain or .gz).
    pub fn load(&self) -> Result<Dataset> {
        match &self.source {
            TableSource::File(path) if path.extension().is_some_and(|e| e == "parquet") => {
                loaders::parquet(path, &self.choices)
            }
            TableSource::File(path) => loaders::csv(path, &self.choices),
            TableSource::Penguins => loaders::penguins(&self.choices),
        }
    }

    /// Every column as read, before any target is chosen: type, missing cells, distinct
    /// values, min / mean / max of numbers, the most frequent other values, what the choices
    /// so far make of it, and the target's classes once there is one. Read as
    /// [`Table::load`] reads.
    pub fn columns(&self) -> Result<Columns> {
        match &self.source {
            TableSource::File(path) => {
                table::columns(&loaders::read_table(path)?, &self.choices, path)
            }
            TableSource::Penguins => {
                let (table, path) = loaders::penguins_table()?;
                table::columns(&table, &self.choices, path)
            }
        }
    }
}

/// What each example asks a model to predict.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A class per example: `labels[i] < names.len()`.
    Classes {
        labels: Vec<u32>,
        names: Vec<String>,
    },
    /// A real number per example (regression), from the column or array `name`.
    Values { values: Vec<f32>, name: String },
    /// A window of text per example: `next[i * context + t]` is the token after position t
    /// of window i, one of `vocab` (next-token prediction).
    Tokens {
        next: Vec<u32>,
        context: usize,
        vocab: Vec<String>,
    },
}

impl Target {
    /// Examples it covers.
    pub fn len(&self) -> usize {
        match self {
            Target::Classes { labels, .. } => labels.len(),
            Target::Values { values, .. } => values.len(),
            Target::Tokens { next, context, .. } => next.len() / context.max(&1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Examples, their targets and splits.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub spec: DataSpec,
    /// (N, D) row-major.
    pub features: Vec<f32>,
    /// (N,): a class or a value per example.
    pub target: Target,
    /// One example's shape, e.g. [1, 8, 8]; its product is D.
    pub shape: Vec<usize>,
    /// Split name -> example indices.
    pub splits: BTreeMap<String, Vec<usize>>,
    /// The range every feature should lie in (the corrupt-example check uses it).
    pub value_range: (f32, f32),
    /// For a table: its target, its features and every value fitted on the training split.
    pub table: Option<Fitted>,
    /// What loading left out that a reader should know (files skipped, and why), one line
    /// each; the summary shows them.
    pub notes: Vec<String>,
    /// For text: each split's characters, for [`Dataset::corpus`].
    pub text: Option<SplitText>,
}

impl Dataset {
    /// Build a dataset, checking that the parts agree: features for every target, labels
    /// below the number of classes, finite target values, split indices in range.
    pub fn new(
        name: &str,
        spec: DataSpec,
        features: Vec<f32>,
        target: Target,
        shape: Vec<usize>,
        splits: BTreeMap<String, Vec<usize>>,
    ) -> Result<Dataset> {
        let dim: usize = shape.iter().product();
        let n = target.len();
        if dim == 0 || features.len() != n * dim {
            return Err(Error::Data(format!(
                "{name}: {} feature values do not make {n} examples of shape {shape:?}",
                features.len(),
            )));
        }
        match &target {
            Target::Classes { labels, names } => {
                if let Some((i, l)) = labels
                    .iter()
                    .enumerate()
                    .find(|(_, &l)| l as usize >= names.len())
                {
                    return Err(Error::Data(format!(
                        "{name}: example #{i} has label {l}, but there are {} classes",
                        names.len()
                    )));
                }
            }
            Target::Tokens {
                next,
                context,
                vocab,
            } => {
                if *context == 0 || next.len() % context != 0 || shape != [*context] {
                    return Err(Error::Data(format!(
                        "{name}: {} next tokens do not make windows of {context} tokens of \
                         shape {shape:?}",
                        next.len()
                    )));
                }
                if let Some((i, t)) = next
                    .iter()
                    .enumerate()
                    .find(|(_, &t)| t as usize >= vocab.len())
                {
                    return Err(Error::Data(format!(
                        "{name}: window #{} has token {t}, but the vocabulary has {}",
                        i / context,
                        vocab.len()
                    )));
                }
            }
            Target::Values {
                values,
                name: column,
            } => {
                if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                    return Err(Error::Data(format!(
                        "{name}: example #{i} has target {column} = {v}; a regression target \
                         must be a finite number"
                    )));
                }
            }
        }
        for (split, indices) in &splits {
            if let Some(bad) = indices.iter().find(|&&i| i >= n) {
                return Err(Error::Data(format!(
                    "{name}: split {split:?} has index {bad}, past {n} examples"
                )));
            }
        }
        let (lo, hi) = features
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                if v.is_finite() {
                    (lo.min(v), hi.max(v))
                } else {
                    (lo, hi)
                }
            });
        Ok(Dataset {
            name: name.into(),
            spec,
            features,
            target,
            shape,
            splits,
            value_range: (lo.min(0.0), hi.max(1.0)),
            table: None,
            notes: Vec::new(),
            text: None,
        })
    }

    /// A dataset by name, as a notebook's parameters cell gives it, with each loader's
    /// default choices:
    /// - `"digits"`, `"fashion-mnist"`, `"shakespeare"`, `"words"`;
    /// - `"auto"`: Fashion-MNIST where Debian's `dataset-fashion-mnist` is installed, else
    ///   the embedded digits (a damaged installation is an error, not a quiet fallback);
    /// - a path: a folder of images, a `.txt` text, a `.npz` file, or a `.csv`, `.csv.gz` or
    ///   `.parquet` table (its target the column named label, target, class or y).
    ///
    /// The builders ([`Dataset::text`], [`Dataset::table`], [`Dataset::image_folder`]) take
    /// the other choices.
    pub fn load(name: &str) -> Result<Dataset> {
        let is_table = [".csv", ".csv.gz", ".parquet"]
            .iter()
            .any(|e| name.ends_with(e));
        match name {
            "digits" => Dataset::digits(),
            "fashion-mnist" => Dataset::fashion_mnist(),
            "auto" if Path::new(FASHION_MNIST_DIR).is_dir() => Dataset::fashion_mnist(),
            "auto" => Dataset::digits(),
            "shakespeare" => Dataset::shakespeare().load(),
            "words" => Dataset::words().load(),
            path if Path::new(path).is_dir() => Dataset::image_folder(path).load(),
            path if path.ends_with(".txt") => Dataset::text(path).load(),
            path if path.ends_with(".npz") => Dataset::from_npz(path),
            path if is_table => Dataset::table(path).load(),
            other => Err(Error::Invalid(format!(
                "no dataset {other:?}: give digits, fashion-mnist, auto, shakespeare or words, \
                 or the path of a folder of images or of a .txt, .npz, .csv, .csv.gz or \
                 .parquet file"
            ))),
        }
    }

    /// The embedded UCI 8x8 digits: 1,797 examples, 10 classes, features scaled to [0, 1].
    /// Splits are a fixed seeded permutation: 1,258 train, 180 val, 359 test. Needs no setup.
    pub fn digits() -> Result<Dataset> {
        loaders::digits()
    }

    /// Fashion-MNIST from Debian's `dataset-fashion-mnist` package (60,000 train of which the
    /// last 6,000 are `val`, 10,000 test; 28x28, scaled to [0, 1]).
    pub fn fashion_mnist() -> Result<Dataset> {
        Dataset::fashion_mnist_at(Path::new(FASHION_MNIST_DIR))
    }

    /// Fashion-MNIST from a folder holding the four IDX files (raw or .gz).
    pub fn fashion_mnist_at(dir: impl AsRef<Path>) -> Result<Dataset> {
        loaders::fashion_mnist(dir.as_ref())
    }

    /// A table (CSV, `.csv.gz` or Parquet) to load with choices about it:
    /// `Dataset::table("iris.csv").target("species").drop(["id"]).load()?`. See
    /// [`table`] for what it reads and refuses.
    pub fn table(path: impl AsRef<Path>) -> Table {
        Table {
            source: TableSource::File(path.as_ref().to_path_buf()),
            choices: TableChoices::default(),
        }
    }

    /// The embedded Palmer penguins (344 rows; species, island, four body measurements,
    /// sex, year; `NA` where a measurement is missing), a table as people download one:
    /// `Dataset::penguins().target("species").one_hot(["island", "sex"]).fill_mean().load()?`.
    /// Source and licence (CC-0) in data/ATTRIBUTION.md.
    pub fn penguins() -> Table {
        Table {
            source: TableSource::Penguins,
            choices: TableChoices::default(),
        }
    }

    /// A folder of PNG and JPEG images with one subfolder per class (the class names), or
    /// `train/` and `test/` folders that each hold those subfolders:
    /// `Dataset::image_folder("pets").size(64, 64).load()?`. Unreadable files are skipped and
    /// named in the summary; see [`images`] for the steps and the errors.
    pub fn image_folder(path: impl AsRef<Path>) -> ImageFolder {
        ImageFolder {
            root: path.as_ref().to_path_buf(),
            choices: ImageChoices::default(),
        }
    }

    /// A CSV file (or .csv.gz) with a header row and a target column named `label`,
    /// `target`, `class` or `y`; other columns must be numbers, with no missing cells.
    /// [`Dataset::table`] names another target or leaves columns out. Splits: a seeded
    /// 70/10/20 permutation.
    pub fn from_csv(path: impl AsRef<Path>) -> Result<Dataset> {
        loaders::csv(path.as_ref(), &TableChoices::default())
    }

    /// A Parquet file, read as [`Dataset::from_csv`] reads a CSV file.
    pub fn from_parquet(path: impl AsRef<Path>) -> Result<Dataset> {
        loaders::parquet(path.as_ref(), &TableChoices::default())
    }

    /// Features (N, ...) and labels (N,) from two .npy files.
    pub fn from_npy(features: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Dataset> {
        arrays::npy(features.as_ref(), labels.as_ref())
    }

    /// Features (N, ...) and labels (N,) from one .npz file (numpy.savez): the arrays named
    /// `x`, `X`, `features` or `data`, and `y`, `Y`, `labels`, `label` or `target`. Labels
    /// must be class indices, as for [`Dataset::from_npy`]. Splits: a seeded 70/10/20
    /// permutation.
    pub fn from_npz(path: impl AsRef<Path>) -> Result<Dataset> {
        arrays::npz(path.as_ref())
    }

    /// `features` (N, ...) and `labels` (N,) tensors from a safetensors file.
    pub fn from_safetensors(path: impl AsRef<Path>) -> Result<Dataset> {
        arrays::safetensors(path.as_ref())
    }

    pub fn len(&self) -> usize {
        self.target.len()
    }

    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    /// What the target asks: classification into its classes, or regression.
    pub fn task(&self) -> Task {
        match &self.target {
            Target::Classes { names, .. } => Task::Classification {
                classes: names.len(),
            },
            Target::Values { .. } => Task::Regression,
            Target::Tokens { vocab, .. } => Task::NextToken { vocab: vocab.len() },
        }
    }

    /// Each example's class; an error for a regression target, naming `what` needs classes.
    pub fn labels(&self, what: &str) -> Result<&[u32]> {
        match &self.target {
            Target::Classes { labels, .. } => Ok(labels),
            Target::Values { name, .. } => Err(Error::Invalid(format!(
                "{what} needs classes, but {} has a regression target ({name:?}, a value per \
                 example)",
                self.name
            ))),
            Target::Tokens { .. } => Err(Error::Invalid(format!(
                "{what} needs a class per example, but {} is text: a next token per position",
                self.name
            ))),
        }
    }

    /// Each example's target value; an error for classes, naming `what` needs values.
    pub fn values(&self, what: &str) -> Result<&[f32]> {
        match &self.target {
            Target::Values { values, .. } => Ok(values),
            Target::Classes { .. } | Target::Tokens { .. } => Err(Error::Invalid(format!(
                "{what} needs a regression target, but {} has {}",
                self.name,
                self.task().describe()
            ))),
        }
    }

    /// The mean and std a regression target was standardised with (a table loaded with
    /// `.regression().normalize()`); multiply an RMSE or MAE by `std` for the target's own
    /// units. `None` when the target is as it came.
    pub fn target_scale(&self) -> Option<Scale> {
        self.table.as_ref().and_then(|t| t.target_scale)
    }

    /// The class names (for text, the vocabulary: one string per token); none for a
    /// regression target.
    pub fn classes(&self) -> &[String] {
        match &self.target {
            Target::Classes { names, .. } => names,
            Target::Tokens { vocab, .. } => vocab,
            Target::Values { .. } => &[],
        }
    }

    /// Example i's target in words: its class name, its value in the target's own units, or
    /// the text of its next tokens.
    pub fn target_text(&self, i: usize) -> String {
        match &self.target {
            Target::Classes { labels, .. } => self.class_name(labels[i]).to_string(),
            Target::Values { values, .. } => self.value_text(values[i]),
            Target::Tokens { next, context, .. } => {
                self.decode(&next[i * context..(i + 1) * context])
            }
        }
    }

    /// A regression value as the model sees it, in the target's own units (undoing the
    /// standardisation of [`Dataset::target_scale`], if any), in words.
    pub fn value_text(&self, value: f32) -> String {
        recipe_archive::export::format_number(self.in_units(value as f64))
    }

    /// A regression value as the model sees it, in the target's own units.
    pub fn in_units(&self, value: f64) -> f64 {
        self.target_scale()
            .map_or(value, |s| value * s.std + s.mean)
    }

    /// Features per example.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    /// Classes of the target (the vocabulary's size for text; 0 for a regression target).
    pub fn num_classes(&self) -> usize {
        self.classes().len()
    }

    /// One example's features; an index past the end is an error.
    pub fn example(&self, i: usize) -> Result<&[f32]> {
        if i >= self.len() {
            return Err(Error::Invalid(format!(
                "{} has {} examples; there is no #{i}",
                self.name,
                self.len()
            )));
        }
        Ok(self.row(i))
    }

    /// One example's features, for indices already known to be valid (split members).
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        let d = self.dim();
        &self.features[i * d..(i + 1) * d]
    }

    /// The indices of a split; an unknown split is an error naming the ones there are.
    pub fn split(&self, name: &str) -> Result<&[usize]> {
        self.splits.get(name).map(Vec::as_slice).ok_or_else(|| {
            Error::Invalid(format!(
                "{} has no split {name:?}; it has {}",
                self.name,
                self.splits.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The first `train` train and `test` test examples; `val` is cut in the same proportion.
    pub fn subset(&self, train: usize, test: usize) -> Result<Dataset> {
        let mut out = self.clone();
        let full_train = self.split("train")?.len().max(1);
        for (name, indices) in out.splits.iter_mut() {
            let keep = match name.as_str() {
                "train" => train,
                "test" => test,
                _ => (indices.len() * train).div_ceil(full_train),
            };
            indices.truncate(keep);
        }
        out.spec = DataSpec::Subset {
            of: Box::new(self.spec.clone()),
            train,
            test,
        };
        out.name = format!("{}[{train}/{test}]", self.name);
        Ok(out)
    }

    /// The same examples with targets permuted by a seed: a dataset with nothing to learn,
    /// for checking that a model does no better than the input-independent baseline.
    pub fn with_shuffled_labels(&self, seed: u64) -> Dataset {
        let mut out = self.clone();
        let mut rng = Rng::stream(seed, "shuffled_labels");
        match &mut out.target {
            Target::Classes { labels, .. } => rng.shuffle(labels),
            Target::Values { values, .. } => rng.shuffle(values),
            Target::Tokens { next, .. } => rng.shuffle(next),
        }
        out.spec = DataSpec::ShuffledLabels {
            of: Box::new(self.spec.clone()),
            seed,
        };
        out.name = format!("{} (labels shuffled)", self.name);
        out
    }

    /// blake3 over the features, targets and split indices: the data component of a run's
    /// identity. Runs at memory speed (blake3 over the raw bytes).
    pub fn fingerprint(&self) -> recipe_archive::DataFingerprint {
        let mut all = blake3::Hasher::new();
        let features = blake3::hash(f32_bytes(&self.features));
        let labels = match &self.target {
            Target::Classes { labels, .. } => blake3::hash(
                &labels
                    .iter()
                    .flat_map(|l| l.to_le_bytes())
                    .collect::<Vec<u8>>(),
            ),
            Target::Values { values, .. } => blake3::hash(f32_bytes(values)),
            Target::Tokens { next, .. } => blake3::hash(
                &next
                    .iter()
                    .flat_map(|l| l.to_le_bytes())
                    .collect::<Vec<u8>>(),
            ),
        };
        all.update(features.as_bytes());
        all.update(labels.as_bytes());
        let mut split_hashes = serde_json::Map::new();
        let mut split_sizes = serde_json::Map::new();
        for (name, indices) in &self.splits {
            let bytes: Vec<u8> = indices
                .iter()
                .flat_map(|&i| (i as u64).to_le_bytes())
                .collect();
            let h = blake3::hash(&bytes);
            all.update(name.as_bytes());
            all.update(h.as_bytes());
            split_hashes.insert(name.clone(), h.to_hex().to_string().into());
            split_sizes.insert(name.clone(), indices.len().into());
        }
        let mut details = serde_json::json!({
                "spec": self.spec,
                "examples": self.len(),
                "shape": self.shape,
                "classes": self.num_classes(),
                "content": features.to_hex().to_string(),
                "labels": labels.to_hex().to_string(),
                "splits": split_hashes,
                "split_sizes": split_sizes,
        });
        if let Some(table) = &self.table {
            details["table"] = serde_json::json!(table);
        }
        if let Target::Values { name, .. } = &self.target {
            details["regression_target"] = name.as_str().into();
        }
        recipe_archive::DataFingerprint {
            name: self.name.clone(),
            hash: all.finalize().to_hex().to_string(),
            details,
        }
    }

    /// The examples at `indices` as a batch: features (B, *shape) and targets, (B,) u32
    /// labels or f32 values, or (B, T) u32 next tokens.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let d = self.dim();
        let mut x = Vec::with_capacity(indices.len() * d);
        for &i in indices {
            x.extend_from_slice(self.example(i)?);
        }
        let mut shape = vec![indices.len()];
        shape.extend(&self.shape);
        let y = match &self.target {
            Target::Classes { labels, .. } => {
                let picked: Vec<u32> = indices.iter().map(|&i| labels[i]).collect();
                Tensor::from_vec(picked, indices.len(), device)?
            }
            Target::Values { values, .. } => {
                let picked: Vec<f32> = indices.iter().map(|&i| values[i]).collect();
                Tensor::from_vec(picked, indices.len(), device)?
            }
            Target::Tokens { next, context, .. } => {
                let picked: Vec<u32> = (indices.iter())
                    .flat_map(|&i| next[i * context..(i + 1) * context].iter().copied())
                    .collect();
                Tensor::from_vec(picked, (indices.len(), *context), device)?
            }
        };
        Ok((Tensor::from_vec(x, shape, device)?, y))
    }

    /// The name of a class ("?" for a label past the last class).
    pub fn class_name(&self, label: u32) -> &str {
        self.classes()
            .get(label as usize)
            .map_or("?", String::as_str)
    }

    /// Fraction of each class in a split, in class order; for text, of each token among the
    /// split's next tokens (the unigram distribution).
    pub fn class_priors(&self, split: &str) -> Result<Vec<f64>> {
        let indices = self.split(split)?;
        let targets: Vec<u32> = match &self.target {
            Target::Tokens { next, context, .. } => (indices.iter())
                .flat_map(|&i| next[i * context..(i + 1) * context].iter().copied())
                .collect(),
            _ => {
                let labels = self.labels("class priors")?;
                indices.iter().map(|&i| labels[i]).collect()
            }
        };
        let mut counts = vec![0usize; self.num_classes()];
        for &l in &targets {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        Ok(counts
            .iter()
            .map(|&c| c as f64 / targets.len().max(1) as f64)
            .collect())
    }
}

/// The bytes of an f32 slice, as stored in memory (little-endian on every platform recipe
/// builds for).
pub(crate) fn f32_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the length is exact.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}

/// The splits of the loaders that make their own: 70% train, 10% val, 20% test.
pub(crate) const SPLITS: [(&str, f64); 3] = [("train", 0.7), ("val", 0.1), ("test", 0.2)];

/// A seeded permutation of 0..n split into named parts of the given fractions (the last takes
/// the rest).
pub(crate) fn seeded_splits(n: usize, parts: &[(&str, f64)]) -> BTreeMap<String, Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::stream(0, "splits").shuffle(&mut order);
    let mut out = BTreeMap::new();
    let mut start = 0;
    for (k, (name, fraction)) in parts.iter().enumerate() {
        let end = if k + 1 == parts.len() {
            n
        } else {
            start + (n as f64 * fraction).round() as usize
        };
        out.insert(name.to_string(), order[start..end.min(n)].to_vec());
        start = end.min(n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_embedded_and_split() {
        let d = Dataset::digits().unwrap();
        assert_eq!((d.len(), d.dim(), d.num_classes()), (1797, 64, 10));
        assert_eq!(
            d.split("train").unwrap().len()
                + d.split("val").unwrap().len()
                + d.split("test").unwrap().len(),
            1797
        );
        assert!(d.features.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!(d.split("nope").unwrap_err().to_string().contains("train"));
    }

    #[test]
    fn a_dataset_by_name_is_the_loader_of_that_name() {
        let by_name = Dataset::load("digits").unwrap();
        assert_eq!(
            by_name.fingerprint(),
            Dataset::digits().unwrap().fingerprint()
        );
        let auto = Dataset::load("auto").unwrap();
        let expected = if Path::new(FASHION_MNIST_DIR).is_dir() {
            70_000
        } else {
            1797
        };
        assert_eq!(auto.len(), expected);
        assert_eq!(Dataset::load("shakespeare").unwrap().classes().len(), 62);
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("poem.txt");
        std::fs::write(
            &text,
            "so much depends\nupon\na red wheel\nbarrow\n".repeat(40),
        )
        .unwrap();
        assert!(Dataset::load(text.to_str().unwrap())
            .unwrap()
            .text
            .is_some());
        let err = Dataset::load("digitz").unwrap_err().to_string();
        assert!(
            err.contains("no dataset \"digitz\"") && err.contains("fashion-mnist"),
            "{err}"
        );
        let missing = Dataset::load("missing.csv").unwrap_err().to_string();
        assert!(missing.contains("missing.csv"), "{missing}");
    }

    #[test]
    fn fingerprint_sees_content_labels_and_splits() {
        let d = Dataset::digits().unwrap();
        let base = d.fingerprint().hash;
        assert_eq!(base, Dataset::digits().unwrap().fingerprint().hash);
        let mut e = d.clone();
        e.features[5] += 1e-6;
        assert_ne!(e.fingerprint().hash, base);
        let mut l = d.clone();
        let Target::Classes { labels, .. } = &mut l.target else {
            panic!("digits have classes")
        };
        labels.swap(0, 1);
        assert_ne!(l.fingerprint().hash, base);
        assert_ne!(d.subset(100, 50).unwrap().fingerprint().hash, base);
    }

    #[test]
    fn specs_reload_the_same_bits() {
        let d = Dataset::digits()
            .unwrap()
            .subset(200, 100)
            .unwrap()
            .with_shuffled_labels(3);
        let again = d.spec.load().unwrap();
        assert_eq!(again.fingerprint(), d.fingerprint());
    }
}
