//! Arrays as people save them: `.npy` (a pair: features and labels), `.npz` (one file holding
//! both) and safetensors, read through candle's own readers, every dtype candle reads (floats
//! of 16 to 64 bits, integers, bools) converted once. Labels must be class indices; a
//! truncated or foreign file is an error naming it, never a panic.
//!
//! Not here: tables (see [`super::table`]), IDX and the embedded digits (see `loaders`).

use super::loaders::file_name;
use super::{seeded_splits, DataSpec, Dataset, Target, SPLITS};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// A dataset from flat features and labels, with classes 0..=max label and seeded splits.
fn tabular(
    name: &str,
    spec: DataSpec,
    features: Vec<f32>,
    labels: Vec<u32>,
    shape: Vec<usize>,
) -> Result<Dataset> {
    let classes = labels.iter().max().map_or(0, |m| *m as usize + 1);
    let splits = seeded_splits(labels.len(), &SPLITS);
    let names = (0..classes).map(|c| c.to_string()).collect();
    Dataset::new(
        name,
        spec,
        features,
        Target::Classes { labels, names },
        shape,
        splits,
    )
}

/// of 16 to 64 bits, integers, bools). A truncated or foreign file is an error naming it.
fn read_npy(path: &Path) -> Result<candle_core::Tensor> {
    if !path.exists() {
        return Err(Error::Io(
            path.to_path_buf(),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    candle_core::Tensor::read_npy(path).map_err(|e| {
        Error::Data(format!(
            "{}: not a readable .npy file ({e}); save it with numpy.save",
            path.display()
        ))
    })
}

/// Class indices from a label array (`source` names it in errors): whole numbers from 0 up,
/// else an error naming the first bad index and value (a cast would make -1 class 0 and 2.7
/// class 2 without a word).
fn class_indices(values: &[f64], source: &str) -> Result<Vec<u32>> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v) {
                Ok(v as u32)
            } else {
                Err(Error::Data(format!(
                    "{source}: label {i} is {v}; labels must be class indices (whole numbers \
                     from 0)"
                )))
            }
        })
        .collect()
}

/// A dataset from a features array (N, ...) and a labels array (N,) of class indices, each
/// converted once from whatever dtype it was stored in; `x_source` and `y_source` name the
/// arrays in errors.
fn from_arrays(
    name: &str,
    spec: DataSpec,
    (x, x_source): (candle_core::Tensor, &str),
    (y, y_source): (candle_core::Tensor, &str),
) -> Result<Dataset> {
    use candle_core::DType;
    let rows = x.dims().first().copied().unwrap_or(0);
    if y.rank() != 1 || y.dims()[0] != rows {
        return Err(Error::Data(format!(
            "{x_source} holds {rows} examples but {y_source} has shape {:?}; the labels must be \
             one per example, shape ({rows},)",
            y.dims()
        )));
    }
    let example_shape = example_shape(&x);
    let features: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let labels: Vec<f64> = y.to_dtype(DType::F64)?.to_vec1()?;
    let labels = class_indices(&labels, y_source)?;
    tabular(name, spec, features, labels, example_shape)
}

pub fn npy(features_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let spec = DataSpec::Npy {
        features: features_path.to_path_buf(),
        labels: labels_path.to_path_buf(),
    };
    let (x_source, y_source) = (
        features_path.display().to_string(),
        labels_path.display().to_string(),
    );
    from_arrays(
        &file_name(features_path),
        spec,
        (read_npy(features_path)?, &x_source),
        (read_npy(labels_path)?, &y_source),
    )
}

/// Names a .npz file's features array may have, and its labels array.
pub const NPZ_FEATURES: [&str; 4] = ["x", "X", "features", "data"];
pub const NPZ_LABELS: [&str; 5] = ["y", "Y", "labels", "label", "target"];
/// Keras' layout (`keras.datasets.*.load_data()` saved as one .npz, as `mnist.npz` is): the
/// file's own train and test split.
pub const NPZ_KERAS: [&str; 4] = ["x_train", "y_train", "x_test", "y_test"];

/// Features and labels from one .npz file (numpy.savez), through candle's reader: the arrays
/// named like [`NPZ_FEATURES`] and [`NPZ_LABELS`], else an error listing the names there are.
pub fn npz(path: &Path) -> Result<Dataset> {
    let file = path.display();
    if !path.exists() {
        return Err(Error::Io(
            path.to_path_buf(),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let arrays = candle_core::Tensor::read_npz(path).map_err(|e| {
        Error::Data(format!(
            "{file}: not a readable .npz file ({e}); save it with numpy.savez or savez_compressed"
        ))
    })?;
    let mut arrays: BTreeMap<String, candle_core::Tensor> = arrays.into_iter().collect();
    let spec = DataSpec::Npz {
        path: path.to_path_buf(),
    };
    if NPZ_KERAS.iter().all(|n| arrays.contains_key(*n)) {
        return keras(path, spec, &mut arrays);
    }
    let names: Vec<String> = arrays.keys().cloned().collect();
    let pick = |wanted: &[&str], what: &str| -> Result<String> {
        let found: Vec<&String> = names
            .iter()
            .filter(|n| wanted.contains(&n.as_str()))
            .collect();
        match found[..] {
            [name] => Ok(name.clone()),
            _ => Err(Error::Data(format!(
                "{file}: which array holds the {what}? Exactly one must be named {} (or the file \
                 holds Keras' four: {}); the file holds {}",
                wanted.join(", "),
                NPZ_KERAS.join(", "),
                names.join(", ")
            ))),
        }
    };
    let (x_name, y_name) = (
        pick(&NPZ_FEATURES, "features")?,
        pick(&NPZ_LABELS, "labels")?,
    );
    let mut take = |name: &str| {
        let source = format!("{file} (array {name:?})");
        arrays
            .remove(name)
            .map(|array| (array, source))
            .ok_or_else(|| Error::Data(format!("{file}: no array {name:?}")))
    };
    let (x, x_source) = take(&x_name)?;
    let (y, y_source) = take(&y_name)?;
    from_arrays(&file_name(path), spec, (x, &x_source), (y, &y_source))
}

/// A .npz in Keras' layout: the training arrays then the test arrays as one set, split as
/// the file splits them, the last 10% of its training rows as `val` (as for Fashion-MNIST).
fn keras(
    path: &Path,
    spec: DataSpec,
    arrays: &mut BTreeMap<String, candle_core::Tensor>,
) -> Result<Dataset> {
    let file = path.display();
    let mut take = |name: &str| {
        arrays
            .remove(name)
            .ok_or_else(|| Error::Data(format!("{file}: no array {name:?}")))
    };
    let (x_train, y_train, x_test, y_test) = (
        take("x_train")?,
        take("y_train")?,
        take("x_test")?,
        take("y_test")?,
    );
    let (n_train, n_test) = (x_train.dims()[0], x_test.dims()[0]);
    let joined = |a: &candle_core::Tensor, b: &candle_core::Tensor, what: &str| {
        candle_core::Tensor::cat(&[a, b], 0).map_err(|_| {
            Error::Data(format!(
                "{file}: {what}_train has shape {:?} and {what}_test {:?}: their examples must \
                 have one shape",
                a.dims(),
                b.dims()
            ))
        })
    };
    let x = joined(&x_train, &x_test, "x")?;
    let y = joined(&y_train, &y_test, "y")?;
    let (x_source, y_source) = (
        format!("{file} (x_train then x_test)"),
        format!("{file} (y_train then y_test)"),
    );
    let mut d = from_arrays(&file_name(path), spec, (x, &x_source), (y, &y_source))?;
    let n_val = n_train / 10;
    d.splits = BTreeMap::from([
        ("train".to_string(), (0..n_train - n_val).collect()),
        ("val".to_string(), (n_train - n_val..n_train).collect()),
        ("test".to_string(), (n_train..n_train + n_test).collect()),
    ]);
    Ok(d)
}

pub fn safetensors(path: &Path) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Data(format!("{}: not a safetensors file ({e})", path.display())))?;
    let get = |name: &str| -> Result<candle_core::Tensor> {
        let view = tensors
            .tensor(name)
            .map_err(|_| Error::Data(format!("{}: no tensor named {name:?}", path.display())))?;
        Ok(candle_core::safetensors::Load::load(
            &view,
            &candle_core::Device::Cpu,
        )?)
    };
    let (x, y) = (get("features")?, get("labels")?);
    let example_shape = example_shape(&x);
    let features = x
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let labels = y
        .to_dtype(candle_core::DType::U32)?
        .flatten_all()?
        .to_vec1::<u32>()?;
    tabular(
        &file_name(path),
        DataSpec::Safetensors {
            path: path.to_path_buf(),
        },
        features,
        labels,
        example_shape,
    )
}

/// One example's shape in an array of examples (N, ...): `[1]` for an array of scalars.
fn example_shape(x: &candle_core::Tensor) -> Vec<usize> {
    x.dims()
        .get(1..)
        .map(<[usize]>::to_vec)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec![1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// A .npy file as numpy.save writes it: magic, version 1.0, a header padded to 64 bytes.
    fn npy_file(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn npy_of_every_dtype_loads_and_bad_files_or_labels_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        let features =
            Tensor::from_vec(vec![0.5f32, 1.5, 2.5, 3.5, 4.5, 5.5], (3, 2), &Device::Cpu).unwrap();
        let labels = |values: Vec<f64>, dtype: DType, name: &str| {
            let t = Tensor::from_vec(values, 3, &Device::Cpu).unwrap();
            t.to_dtype(dtype).unwrap().write_npy(at(name)).unwrap();
        };
        labels(vec![2.0, 0.0, 1.0], DType::I64, "y.npy");
        let dtypes = [
            DType::F16,
            DType::F32,
            DType::F64,
            DType::U8,
            DType::I16,
            DType::I32,
            DType::U32,
            DType::I64,
        ];
        for dtype in dtypes {
            let name = format!("x-{dtype:?}.npy");
            features
                .to_dtype(dtype)
                .unwrap()
                .write_npy(at(&name))
                .unwrap();
            let d = npy(&at(&name), &at("y.npy")).unwrap();
            assert_eq!((d.len(), d.dim(), d.num_classes()), (3, 2, 3), "{dtype:?}");
            assert_eq!(d.labels("test").unwrap(), vec![2, 0, 1], "{dtype:?}");
        }
        // Labels saved as numpy bools ('|b1') are classes 0 and 1.
        std::fs::write(at("bool.npy"), npy_file("|b1", "(3,)", &[1, 0, 1])).unwrap();
        let d = npy(&at("x-F32.npy"), &at("bool.npy")).unwrap();
        assert_eq!(
            (d.labels("test").unwrap().to_vec(), d.classes().to_vec()),
            (vec![1, 0, 1], vec!["0".into(), "1".into()])
        );
        let message = |x: &str, y: &str| npy(&at(x), &at(y)).unwrap_err().to_string();
        // A dtype candle does not read (uint64, Fortran order) says which.
        std::fs::write(at("u64.npy"), npy_file("<u8", "(3,)", &[0; 24])).unwrap();
        let e = message("x-F32.npy", "u64.npy");
        assert!(
            e.contains("u64.npy: not a readable .npy file") && e.contains("u8"),
            "{e}"
        );
        // Labels that are not class indices name the first bad one; a cast would hide them.
        labels(vec![0.0, -1.0, 1.0], DType::I64, "negative.npy");
        assert!(message("x-F32.npy", "negative.npy").contains("label 1 is -1"));
        labels(vec![0.0, 1.0, 2.7], DType::F64, "fraction.npy");
        assert!(message("x-F32.npy", "fraction.npy").contains("label 2 is 2.7"));
        Tensor::from_vec(vec![0u8, 1], 2, &Device::Cpu)
            .unwrap()
            .write_npy(at("short.npy"))
            .unwrap();
        assert!(message("x-F32.npy", "short.npy").contains("one per example"));
        // Truncated, foreign and missing files are errors naming the file, never a panic.
        let whole = std::fs::read(at("x-F32.npy")).unwrap();
        std::fs::write(at("cut.npy"), &whole[..whole.len() - 3]).unwrap();
        std::fs::write(at("eight.npy"), b"\x93NUMPY\x01\x00").unwrap();
        std::fs::write(at("text.npy"), b"label,x\n1,2\n").unwrap();
        for bad in ["cut.npy", "eight.npy", "text.npy"] {
            let e = message(bad, "y.npy");
            assert!(
                e.contains(bad) && e.contains("not a readable .npy file"),
                "{e}"
            );
        }
        assert!(message("missing.npy", "y.npy").contains("missing.npy"));
    }

    /// numpy.savez_compressed of x (3, 2) float32 and y [0, 1, 1] int64, made without numpy
    /// by Python's zipfile (ZIP_DEFLATED) around `npy_file`'s bytes:
    /// `z.writestr('x.npy', npy('<f4', '(3, 2)', pack('<6f', 0, 1, 2, 3, 4, 5)))`, the same for
    /// `y.npy` with `pack('<3q', 0, 1, 1)`.
    const SAVEZ_COMPRESSED: &[&str] = &[
        "504b03041400000008002289875dccca9cbd550000009800000005000000782e6e70799bec17ea1b10c9c850",
        "c650ad9e925a9c5ca46ea5a06e9366a2aea3a09e965f54529498179f5f94920a12774bcc294e058a17672416",
        "a402f91ac63a0a469a3a0ab50a64032e063068b007120e4004c40d40bcc00100504b03041400000008002289",
        "875d14479d64490000009800000005000000792e6e70799bec17ea1b10c9c850c650ad9e925a9c5ca46ea5a0",
        "6e9369a1aea3a09e965f54529498179f5f94920a12774bcc294e058a17672416a402f91ac63a9a3a0ab50a14",
        "002e06286044a301504b010214031400000008002289875dccca9cbd55000000980000000500000000000000",
        "00000000800100000000782e6e7079504b010214031400000008002289875d14479d64490000009800000005",
        "0000000000000000000000800178000000792e6e7079504b0506000000000200020066000000e40000000000",
    ];

    #[test]
    fn issue_27_npz_finds_its_arrays_by_name_with_the_npy_checks() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        let x = Tensor::from_vec(vec![0.5f32, 1.5, 2.5, 3.5, 4.5, 5.5], (3, 2), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let y = |values: Vec<i64>| {
            let n = values.len();
            Tensor::from_vec(values, n, &Device::Cpu).unwrap()
        };
        let save = |name: &str, arrays: &[(&str, &Tensor)]| {
            Tensor::write_npz(arrays, at(name)).unwrap();
        };
        // numpy.savez(path, x=..., y=...) and the other names people give the two arrays.
        for (xn, yn) in [
            ("x", "y"),
            ("X", "Y"),
            ("features", "labels"),
            ("data", "target"),
        ] {
            save("d.npz", &[(xn, &x), (yn, &y(vec![2, 0, 1])), ("extra", &x)]);
            let d = npz(&at("d.npz")).unwrap();
            assert_eq!(
                (d.len(), d.dim(), d.labels("test").unwrap().to_vec()),
                (3, 2, vec![2, 0, 1])
            );
            assert_eq!(d.classes(), ["0", "1", "2"]);
            assert_eq!(d.example(1).unwrap(), [2.5, 3.5]);
            assert_eq!(d.spec.load().unwrap().fingerprint(), d.fingerprint());
        }
        let message = |name: &str| npz(&at(name)).unwrap_err().to_string();
        // Names it does not know, or two of a kind: the names the file holds.
        save("names.npz", &[("a", &x), ("b", &y(vec![0, 1, 1]))]);
        let e = message("names.npz");
        assert!(
            e.contains("which array holds the features")
                && e.contains("x, X, features, data")
                && e.contains("the file holds a, b"),
            "{e}"
        );
        assert!(e.contains("x_train, y_train, x_test, y_test"), "{e}");
        save("two.npz", &[("x", &x), ("X", &x), ("y", &y(vec![0, 1, 1]))]);
        assert!(message("two.npz").contains("the file holds X, x, y"));
        // The labels' checks are .npy's, naming the array.
        save("negative.npz", &[("x", &x), ("y", &y(vec![0, -1, 1]))]);
        let e = message("negative.npz");
        assert!(
            e.contains("negative.npz (array \"y\"): label 1 is -1"),
            "{e}"
        );
        let two = Tensor::from_vec(vec![0u8, 1], 2, &Device::Cpu).unwrap();
        save("short.npz", &[("x", &x), ("y", &two)]);
        assert!(message("short.npz").contains("one per example, shape (3,)"));
        // numpy.savez_compressed (deflated entries) loads like savez.
        let compressed: Vec<u8> = SAVEZ_COMPRESSED
            .concat()
            .as_bytes()
            .chunks(2)
            .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
            .collect();
        std::fs::write(at("compressed.npz"), compressed).unwrap();
        let d = Dataset::from_npz(at("compressed.npz")).unwrap();
        assert_eq!((d.len(), d.shape.clone()), (3, vec![2]));
        assert_eq!(d.features, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(d.labels("test").unwrap(), [0, 1, 1]);
        // Truncated, foreign and missing files: errors naming the file.
        let whole = std::fs::read(at("d.npz")).unwrap();
        std::fs::write(at("cut.npz"), &whole[..whole.len() / 2]).unwrap();
        std::fs::write(at("text.npz"), b"x,y\n1,2\n").unwrap();
        for bad in ["cut.npz", "text.npz"] {
            let e = message(bad);
            assert!(
                e.contains(bad) && e.contains("not a readable .npz file"),
                "{e}"
            );
        }
        assert!(message("missing.npz").contains("missing.npz"));
    }

    #[test]
    fn issue_27_npz_in_keras_layout_keeps_its_own_train_and_test_split() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("mnist.npz");
        let images = |n: usize, start: u8| {
            let pixels: Vec<u8> = (0..n * 4).map(|v| start.wrapping_add(v as u8)).collect();
            Tensor::from_vec(pixels, (n, 2, 2), &Device::Cpu).unwrap()
        };
        let labels = |values: Vec<u8>| {
            let n = values.len();
            Tensor::from_vec(values, n, &Device::Cpu).unwrap()
        };
        let (x_train, x_test) = (images(20, 0), images(5, 100));
        let y_train = labels((0..20).map(|i| i % 3).collect());
        let y_test = labels(vec![2, 1, 0, 1, 2]);
        let arrays = [
            ("x_train", &x_train),
            ("y_train", &y_train),
            ("x_test", &x_test),
            ("y_test", &y_test),
        ];
        Tensor::write_npz(&arrays, &at).unwrap();
        let d = Dataset::from_npz(&at).unwrap();
        assert_eq!((d.len(), d.shape.clone()), (25, vec![2, 2]));
        assert_eq!(d.split("train").unwrap(), (0..18).collect::<Vec<_>>());
        assert_eq!(d.split("val").unwrap(), [18, 19]);
        assert_eq!(d.split("test").unwrap(), (20..25).collect::<Vec<_>>());
        assert_eq!(d.example(20).unwrap(), [100.0, 101.0, 102.0, 103.0]);
        assert_eq!(d.labels("test").unwrap()[20..], [2, 1, 0, 1, 2]);
        assert_eq!(d.spec.load().unwrap().fingerprint(), d.fingerprint());
        // Train and test examples of different shapes: an error naming both.
        let odd = images(5, 0).reshape((5, 4)).unwrap();
        let arrays = [
            ("x_train", &x_train),
            ("y_train", &y_train),
            ("x_test", &odd),
            ("y_test", &y_test),
        ];
        Tensor::write_npz(&arrays, &at).unwrap();
        let e = Dataset::from_npz(&at).unwrap_err().to_string();
        assert!(
            e.contains("x_train has shape [20, 2, 2] and x_test [5, 4]"),
            "{e}"
        );
    }

    #[test]
    fn npy_and_safetensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        // np.save of np.arange(6, dtype='<f4').reshape(3, 2) and np.array([0, 1, 1], dtype='|u1')
        let xs: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        std::fs::write(dir.path().join("x.npy"), npy_file("<f4", "(3, 2)", &xs)).unwrap();
        std::fs::write(
            dir.path().join("y.npy"),
            npy_file("|u1", "(3,)", &[0, 1, 1]),
        )
        .unwrap();
        let d = npy(&dir.path().join("x.npy"), &dir.path().join("y.npy")).unwrap();
        assert_eq!(
            (d.len(), d.dim(), d.example(2).unwrap()),
            (3, 2, &[4.0f32, 5.0][..])
        );
        assert!(d.example(3).is_err());

        let x = candle_core::Tensor::from_vec(
            (0..6).map(|i| i as f32).collect::<Vec<_>>(),
            (3, 2),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let y =
            candle_core::Tensor::from_vec(vec![0u32, 1, 1], 3, &candle_core::Device::Cpu).unwrap();
        let path = dir.path().join("d.safetensors");
        candle_core::safetensors::save(
            &std::collections::HashMap::from([
                ("features".to_string(), x),
                ("labels".to_string(), y),
            ]),
            &path,
        )
        .unwrap();
        let s = safetensors(&path).unwrap();
        assert_eq!(s.features, d.features);
        assert_eq!(s.labels("test").unwrap(), d.labels("test").unwrap());
    }
}
