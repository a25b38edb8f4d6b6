//! Loaders: the embedded digits, IDX (MNIST format, raw or .gz), and the table files (CSV,
//! raw or .gz, and Parquet) handed to [`super::table`]. A missing file is an error that names
//! it and the step that provides it; a malformed one says what was wrong and where.
//!
//! Not here: `.npy`, `.npz` and safetensors (see [`super::arrays`]).

use super::table::{self, TableChoices};
use super::{DataSpec, Dataset, Target, FASHION_MNIST_DIR};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The UCI digits as shipped by scikit-learn (see data/ATTRIBUTION.md).
static DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

pub fn digits() -> Result<Dataset> {
    // Our own file: no header, 64 pixel counts then the digit.
    let path = Path::new("embedded digits.csv.gz");
    let table = table::read_csv_with(&gunzip(DIGITS_CSV_GZ, path)?, path, false)?;
    let target = table.schema().fields().last().map(|f| f.name().clone());
    let choices = TableChoices {
        target,
        ..TableChoices::default()
    };
    let table::Prepared {
        features,
        target,
        splits,
        ..
    } = table::prepare(table, &choices, path)?;
    // Pixels are counts 0..16: scale to [0, 1].
    let features = features.into_iter().map(|v| v / 16.0).collect();
    let mut d = Dataset::new(
        "digits",
        DataSpec::Digits,
        features,
        target,
        vec![1, 8, 8],
        splits,
    )?;
    d.value_range = (0.0, 1.0);
    Ok(d)
}

const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

pub fn fashion_mnist(dir: &Path) -> Result<Dataset> {
    let find = |stem: &str| -> Result<PathBuf> {
        [dir.join(stem), dir.join(format!("{stem}.gz"))]
            .into_iter()
            .find(|p| p.exists())
            .ok_or_else(|| {
                Error::Data(format!(
                    "Fashion-MNIST file {stem}(.gz) not found in {}. HINT: install it with \
                 `apt-get install dataset-fashion-mnist` (files go to {FASHION_MNIST_DIR}), \
                 or use Dataset::digits(), which needs no setup",
                    dir.display()
                ))
            })
    };
    let (train_x, shape) = read_idx_images(&find("train-images-idx3-ubyte")?)?;
    let train_y = read_idx_labels(&find("train-labels-idx1-ubyte")?)?;
    let (test_x, _) = read_idx_images(&find("t10k-images-idx3-ubyte")?)?;
    let test_y = read_idx_labels(&find("t10k-labels-idx1-ubyte")?)?;
    let (n_train, n_test) = (train_y.len(), test_y.len());
    let features: Vec<f32> = train_x
        .iter()
        .chain(&test_x)
        .map(|&p| p as f32 / 255.0)
        .collect();
    let labels: Vec<u32> = train_y.iter().chain(&test_y).map(|&l| l as u32).collect();
    // The last 10% of the training file is the validation split (the test file stays test).
    let n_val = n_train / 10;
    let splits = BTreeMap::from([
        ("train".to_string(), (0..n_train - n_val).collect()),
        ("val".to_string(), (n_train - n_val..n_train).collect()),
        ("test".to_string(), (n_train..n_train + n_test).collect()),
    ]);
    let mut d = Dataset::new(
        "fashion-mnist",
        DataSpec::FashionMnist {
            dir: dir.to_path_buf(),
        },
        features,
        Target::Classes {
            labels,
            names: FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        },
        vec![1, shape.0, shape.1],
        splits,
    )?;
    d.value_range = (0.0, 1.0);
    Ok(d)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        gunzip(&bytes, path)
    } else {
        Ok(bytes)
    }
}

fn gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| Error::Data(format!("{}: not valid gzip ({e})", path.display())))?;
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize, path: &Path) -> Result<usize> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| Error::Data(format!("{}: truncated IDX header", path.display())))
}

/// IDX images: magic 0x00000803, count, rows, cols, then bytes.
fn read_idx_images(path: &Path) -> Result<(Vec<u8>, (usize, usize))> {
    let bytes = read_file(path)?;
    if be_u32(&bytes, 0, path)? != 0x0803 {
        return Err(Error::Data(format!(
            "{}: not an IDX image file (bad magic)",
            path.display()
        )));
    }
    let (n, rows, cols) = (
        be_u32(&bytes, 4, path)?,
        be_u32(&bytes, 8, path)?,
        be_u32(&bytes, 12, path)?,
    );
    let pixels = bytes.get(16..).unwrap_or_default();
    if pixels.len() != n * rows * cols {
        return Err(Error::Data(format!(
            "{}: header says {n} images of {rows}x{cols} but the file holds {} bytes of pixels (truncated?)",
            path.display(),
            pixels.len()
        )));
    }
    Ok((pixels.to_vec(), (rows, cols)))
}

/// IDX labels: magic 0x00000801, count, then bytes.
fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_file(path)?;
    if be_u32(&bytes, 0, path)? != 0x0801 {
        return Err(Error::Data(format!(
            "{}: not an IDX label file (bad magic)",
            path.display()
        )));
    }
    let n = be_u32(&bytes, 4, path)?;
    let labels = bytes.get(8..).unwrap_or_default();
    if labels.len() != n {
        return Err(Error::Data(format!(
            "{}: header says {n} labels, file holds {}",
            path.display(),
            labels.len()
        )));
    }
    Ok(labels.to_vec())
}

/// A path's file name, the name a dataset loaded from it goes by.
pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A table file as arrow reads it: Parquet when it ends in `.parquet`, else CSV (plain or .gz).
pub fn read_table(path: &Path) -> Result<arrow::array::RecordBatch> {
    if path.extension().is_some_and(|e| e == "parquet") {
        table::read_parquet(path)
    } else {
        table::read_csv(&read_file(path)?, path)
    }
}

/// The Palmer penguins as the palmerpenguins package ships them (see data/ATTRIBUTION.md).
static PENGUINS_CSV: &[u8] = include_bytes!("../../data/penguins.csv");

/// The embedded penguins table as read, and the name its errors and summary give it.
pub fn penguins_table() -> Result<(arrow::array::RecordBatch, &'static Path)> {
    let path = Path::new("penguins.csv");
    Ok((table::read_csv(PENGUINS_CSV, path)?, path))
}

pub fn penguins(choices: &TableChoices) -> Result<Dataset> {
    let (table, path) = penguins_table()?;
    let spec = DataSpec::Penguins {
        table: choices.clone(),
    };
    from_table(table, choices, path, spec)
}

pub fn csv(path: &Path, choices: &TableChoices) -> Result<Dataset> {
    let table = table::read_csv(&read_file(path)?, path)?;
    let spec = DataSpec::Csv {
        path: path.to_path_buf(),
        table: choices.clone(),
    };
    from_table(table, choices, path, spec)
}

pub fn parquet(path: &Path, choices: &TableChoices) -> Result<Dataset> {
    let table = table::read_parquet(path)?;
    let spec = DataSpec::Parquet {
        path: path.to_path_buf(),
        table: choices.clone(),
    };
    from_table(table, choices, path, spec)
}

fn from_table(
    table: arrow::array::RecordBatch,
    choices: &TableChoices,
    path: &Path,
    spec: DataSpec,
) -> Result<Dataset> {
    let ready = table::prepare(table, choices, path)?;
    let dim = ready.fitted.features.len().max(1);
    let mut d = Dataset::new(
        &file_name(path),
        spec,
        ready.features,
        ready.target,
        vec![dim],
        ready.splits,
    )?;
    d.table = Some(ready.fitted);
    Ok(d)
}

/// An array from a `.npy` file, through candle's reader (every dtype candle reads: floats
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_penguins_load_as_the_table_people_download() {
        // As it came: three text columns, NA cells, no column called like a target.
        let err = Dataset::penguins().load().unwrap_err().to_string();
        assert!(err.contains("which column is the target?"), "{err}");
        let err = Dataset::penguins()
            .target("species")
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains(".one_hot([\"island\", \"sex\"])"), "{err}");
        let d = crate::train::testing::penguins();
        assert_eq!((d.len(), d.shape.clone()), (344, vec![10]));
        assert_eq!(d.classes(), ["Adelie", "Chinstrap", "Gentoo"]);
        assert!(d.features.iter().all(|v| v.is_finite()));
        // Its spec (what a run archives) loads the same bits again.
        let again = d.spec.load().unwrap();
        assert_eq!(again.fingerprint().hash, d.fingerprint().hash);
        assert!(serde_json::to_string(&d.spec)
            .unwrap()
            .contains("\"penguins\""));
    }

    #[test]
    fn missing_fashion_mnist_names_the_install_step() {
        let err = fashion_mnist(Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apt-get install dataset-fashion-mnist"),
            "{err}"
        );
    }

    /// Load `text` written to a file `name` with `choices`; the error text if it fails.
    fn load(
        name: &str,
        text: &[u8],
        choices: TableChoices,
    ) -> std::result::Result<Dataset, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        csv(&path, &choices).map_err(|e| e.to_string())
    }

    fn target(name: &str) -> TableChoices {
        TableChoices {
            target: Some(name.into()),
            ..TableChoices::default()
        }
    }

    #[test]
    fn issue_27_the_label_column_is_found_by_name_wherever_it_is() {
        // The common layout: label first (the old loader took the last pixel as the label).
        let d = load(
            "first.csv",
            b"label,p0,p1\n3,0,1\n5,2,0\n3,1,1\n",
            TableChoices::default(),
        )
        .unwrap();
        assert_eq!((d.len(), d.dim()), (3, 2));
        assert_eq!(d.classes(), vec!["3", "5"]);
        assert_eq!(d.labels("test").unwrap(), vec![0, 1, 0]);
        assert_eq!(d.example(1).unwrap(), &[2.0, 0.0][..]);
        // In the middle, any case; a Windows file; quoted fields holding commas.
        let d = load(
            "middle.csv",
            b"\"a, first\",Class,b\r\n\"1,5\",0,2\r\n\"2\",1,3\r\n",
            TableChoices::default(),
        );
        let message = d.unwrap_err();
        assert!(
            message.contains("a, first (Utf8)") && message.contains(".drop([\"a, first\"])"),
            "{message}"
        );
        let d = load(
            "middle.csv",
            b"a,Class,b\r\n1,0,2\r\n2,1,3\r\n",
            TableChoices::default(),
        )
        .unwrap();
        assert_eq!(
            (d.dim(), d.labels("test").unwrap().to_vec()),
            (2, vec![0, 1])
        );
        assert_eq!(d.example(0).unwrap(), &[1.0, 2.0][..]);
        // No column named like a target: an error listing the columns, never a guess.
        let message = load("none.csv", b"p0,p1,p2\n1,2,0\n", TableChoices::default()).unwrap_err();
        assert!(
            message.contains("which column is the target") && message.contains("p0, p1, p2"),
            "{message}"
        );
        let message = load("none.csv", b"p0,p1\n1,2\n", target("species")).unwrap_err();
        assert!(message.contains("no column \"species\""), "{message}");
    }

    #[test]
    fn issue_27_text_classes_missing_cells_and_dates_load_right_or_say_what_to_change() {
        let iris = b"id,sepal,colour,species\n1,5.1,red,setosa\n2,NA,blue,virginica\n3,6.3,red,versicolor\n4,4.9,,setosa\n";
        let message = load("iris.csv", iris, target("species")).unwrap_err();
        assert!(
            message.contains("colour (Utf8)") && message.contains(".drop([\"colour\"])"),
            "{message}"
        );
        let choices = TableChoices {
            drop: vec!["colour".into(), "id".into()],
            ..target("species")
        };
        let message = load("iris.csv", iris, choices.clone()).unwrap_err();
        assert!(
            message.contains("sepal: 1") && message.contains(".drop_missing_rows()"),
            "{message}"
        );
        let d = load(
            "iris.csv",
            iris,
            TableChoices {
                drop_missing_rows: true,
                ..choices
            },
        )
        .unwrap();
        assert_eq!(
            d.classes(),
            vec!["setosa", "versicolor"],
            "virginica's only row had a missing cell"
        );
        assert_eq!(
            (d.len(), d.labels("test").unwrap().to_vec()),
            (3, vec![0, 1, 0])
        );
        assert_eq!(d.example(2).unwrap(), &[4.9][..]);
        // A date column is named; a fractional target is refused as regression.
        let message = load(
            "dated.csv",
            b"when,x,y\n2024-01-02,1,0\n2024-01-03,2,1\n",
            TableChoices::default(),
        )
        .unwrap_err();
        assert!(message.contains("when (Date32)"), "{message}");
        let message = load(
            "price.csv",
            b"x,target\n1,2.5\n2,3\n",
            TableChoices::default(),
        )
        .unwrap_err();
        assert!(
            message.contains("holds 2.5 (row 1)") && message.contains("regression"),
            "{message}"
        );
        // A .gz reads as the plain file.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"label,x\n1,0.5\n0,0.25\n").unwrap();
        let d = load("t.csv.gz", &gz.finish().unwrap(), TableChoices::default()).unwrap();
        assert_eq!(
            (d.len(), d.classes().to_vec()),
            (2, vec!["0".to_string(), "1".to_string()])
        );
    }

    #[test]
    fn issue_27_files_of_the_real_shapes_load_right_or_name_the_cause() {
        // A string class column with a categorical feature and NA cells: one-hot and a fill.
        let iris = b"sepal,colour,species\n5.1,red,setosa\nNA,blue,virginica\n6.3,NA,versicolor\n4.9,red,setosa\n5.5,blue,virginica\n";
        let message = load("iris.csv", iris, target("species")).unwrap_err();
        assert!(message.contains(".one_hot([\"colour\"])"), "{message}");
        let choices = TableChoices {
            one_hot: vec!["colour".into()],
            fill: Some(table::Fill::Mean),
            ..target("species")
        };
        let d = load("iris.csv", iris, choices).unwrap();
        let fitted = d.table.clone().unwrap();
        assert_eq!(d.classes(), ["setosa", "versicolor", "virginica"]);
        assert_eq!(
            (d.len(), d.labels("test").unwrap().to_vec()),
            (5, vec![0, 2, 1, 0, 2])
        );
        assert_eq!(d.dim(), 1 + fitted.categories["colour"].len());
        assert_eq!(
            (fitted.filled["sepal"].cells, fitted.filled["colour"].cells),
            (1, 1)
        );

        // Quoted fields holding commas, in the header, a feature and the target.
        let quoted = b"name,\"size, cm\",label\n\"Smith, J\",1.5,\"yes, sure\"\n\"Doe, A\",\"2.5\",no\n\"Smith, J\",3,no\n";
        let d = load(
            "quoted.csv",
            quoted,
            TableChoices {
                one_hot: vec!["name".into()],
                ..TableChoices::default()
            },
        )
        .unwrap();
        assert_eq!(d.classes(), ["no", "yes, sure"]);
        assert_eq!(d.labels("test").unwrap(), [1, 0, 0]);
        let fitted = d.table.clone().unwrap();
        let names = &fitted.categories["name"];
        assert!(
            !names.is_empty() && names.iter().all(|c| c == "Doe, A" || c == "Smith, J"),
            "{names:?}"
        );
        let size = fitted
            .features
            .iter()
            .position(|f| f == "size, cm")
            .unwrap();
        assert_eq!(
            (0..3)
                .map(|i| d.features[i * d.dim() + size])
                .collect::<Vec<_>>(),
            [1.5, 2.5, 3.0]
        );

        // No header row: its first row's numbers become column names, and nothing is a target.
        let message = load("bare.csv", b"5,1,0\n6,2,1\n", TableChoices::default()).unwrap_err();
        assert!(
            message.contains("which column is the target")
                && message.contains("columns are 5, 1, 0"),
            "{message}"
        );
        // A row with one field too many names its line.
        let message = load(
            "ragged.csv",
            b"label,x\n1,2\n0,3,4\n",
            TableChoices::default(),
        )
        .unwrap_err();
        assert!(
            message.contains("ragged.csv") && message.contains("line 3"),
            "{message}"
        );
        // A stray '?' that made a column of numbers text names its row.
        let message = load(
            "stray.csv",
            b"label,x\n1,2\n0,?\n1,4\n",
            TableChoices::default(),
        )
        .unwrap_err();
        assert!(
            message.contains("x (Utf8: row 2 holds \"?\" where most cells are numbers)"),
            "{message}"
        );
    }

    #[test]
    fn issue_27_a_table_reloads_from_its_spec_with_its_choices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "id,x,kind\n1,0.5,a\n2,,b\n3,0.75,b\n").unwrap();
        let d = crate::data::Dataset::table(&path)
            .target("kind")
            .drop(["id"])
            .drop_missing_rows()
            .load()
            .unwrap();
        assert_eq!(
            (d.len(), d.classes().to_vec()),
            (2, vec!["a".to_string(), "b".to_string()])
        );
        let spec = serde_json::to_value(&d.spec).unwrap();
        assert_eq!(spec["target"], "kind");
        assert_eq!(spec["drop"], serde_json::json!(["id"]));
        let again: DataSpec = serde_json::from_value(spec).unwrap();
        assert_eq!(again.load().unwrap().fingerprint(), d.fingerprint());
        // With no choices the spec's form is the one archived runs already hold.
        let plain = DataSpec::Csv {
            path: path.clone(),
            table: TableChoices::default(),
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            format!(
                "{{\"kind\":\"csv\",\"path\":{:?}}}",
                path.display().to_string()
            )
        );
    }

    #[test]
    fn idx_truncation_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imgs");
        let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        bytes.extend([1, 2, 3]); // 3 of 8 pixels
        std::fs::write(&path, bytes).unwrap();
        assert!(read_idx_images(&path)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
    }

    #[test]
    fn parquet_with_a_label_column() {
        use arrow::array::{Float32Array, Int64Array, RecordBatch};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        let batch = RecordBatch::try_from_iter([
            (
                "a",
                std::sync::Arc::new(Float32Array::from(vec![0.1, 0.2, 0.3]))
                    as arrow::array::ArrayRef,
            ),
            (
                "label",
                std::sync::Arc::new(Int64Array::from(vec![1, 0, 2])),
            ),
            (
                "b",
                std::sync::Arc::new(Float32Array::from(vec![Some(1.0), None, Some(3.0)])),
            ),
        ])
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let message = parquet(&path, &TableChoices::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("b: 1"),
            "a null is never trained on: {message}"
        );
        let choices = TableChoices {
            drop_missing_rows: true,
            ..TableChoices::default()
        };
        let d = parquet(&path, &choices).unwrap();
        assert_eq!(
            (
                d.len(),
                d.dim(),
                d.num_classes(),
                d.labels("test").unwrap().to_vec()
            ),
            (2, 2, 2, vec![0, 1])
        );
        assert_eq!(d.classes(), vec!["1", "2"]);
        // Or filled with b's mean over the training rows only.
        let filled = TableChoices {
            fill: Some(table::Fill::Mean),
            ..TableChoices::default()
        };
        let d = parquet(&path, &filled).unwrap();
        let b = [Some(1.0), None, Some(3.0)];
        let present: Vec<f64> = d.splits["train"].iter().filter_map(|&r| b[r]).collect();
        let mean = present.iter().sum::<f64>() / present.len() as f64;
        assert_eq!(
            (d.len(), d.table.clone().unwrap().filled["b"].cells),
            (3, 1)
        );
        assert_eq!(d.example(1).unwrap(), [0.2, mean as f32]);
        std::fs::write(&path, b"PAR1 not really").unwrap();
        assert!(parquet(&path, &choices)
            .unwrap_err()
            .to_string()
            .contains("not readable Parquet"));
    }
}
