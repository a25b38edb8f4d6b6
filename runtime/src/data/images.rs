//! Images from folders, as people keep them: one subfolder per class, PNG and JPEG files
//! decoded by the `image` crate.
//!
//! The layout ([`Dataset::image_folder`]):
//! - `ROOT/train/CLASS/*.png` and `ROOT/test/CLASS/*.jpg`: the folder's own split is kept,
//!   and the last 10% of each training class (in file-name order) is `val`;
//! - else `ROOT/CLASS/*`: a seeded 70/10/20 split, like the other loaders.
//!
//! Loading, in order:
//! 1. list the class folders (sorted; a class only `test/` holds is an error) and their files
//!    (sorted by name; files that are not `.png`, `.jpg` or `.jpeg` are left out and counted);
//! 2. decode each file; one that cannot be decoded is skipped, and the dataset's notes name
//!    it with the decoder's reason (never a panic, never a silent gap);
//! 3. make every image one shape: the size asked for ([`ImageFolder::size`], resized with a
//!    triangle filter), else the first image's size, and an image of another size is an
//!    error naming it; one channel when every image is grayscale or when asked
//!    ([`ImageFolder::grayscale`]), else three;
//! 4. scale to [0, 1], lay out as (channels, height, width).
//!
//! [`Dataset::write_image_folder`] writes a dataset of images in this layout (8-bit gray or
//! RGB PNGs), so a folder can be made from data at hand.
//!
//! Not here: augmentation (the trainer's), other formats, images larger than memory.

use super::{seeded_splits, DataSpec, Dataset, Target, SPLITS};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The choices about an image folder, recorded in its [`DataSpec`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageChoices {
    /// (height, width) every image is resized to; `None`: they must share one size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<(usize, usize)>,
    /// Convert to one channel even when some images have colour.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grayscale: bool,
}

/// An image folder about to be loaded ([`Dataset::image_folder`]).
#[derive(Clone, Debug)]
pub struct ImageFolder {
    pub(super) root: PathBuf,
    pub(super) choices: ImageChoices,
}

impl ImageFolder {
    /// Resize every image to `height` x `width` (a triangle filter), so images of several
    /// sizes can make one dataset.
    pub fn size(mut self, height: usize, width: usize) -> ImageFolder {
        self.choices.size = Some((height, width));
        self
    }

    /// Convert every image to one gray channel.
    pub fn grayscale(mut self) -> ImageFolder {
        self.choices.grayscale = true;
        self
    }

    /// Decode the folder (see the module header for the steps and the errors).
    pub fn load(&self) -> Result<Dataset> {
        load(&self.root, &self.choices)
    }
}

impl Dataset {
    /// Write this dataset's images as an image folder: `dir/train/CLASS/NNNNN.png` for the
    /// train and val examples, `dir/test/CLASS/NNNNN.png` for the test ones (NNNNN the
    /// example's index; a `/` in a class name, as in Fashion-MNIST's `T-shirt/top`, becomes
    /// `_`), 8-bit PNGs scaled from the set's value range. Loading the folder
    /// gives the same classes and, up to 8-bit rounding, the same pixels; its `val` is then
    /// the last 10% of each training class. Returns the number of files written. An error
    /// for anything but classes of (1 or 3, H, W) images, and for a folder that is not empty.
    pub fn write_image_folder(&self, dir: impl AsRef<Path>) -> Result<usize> {
        let dir = dir.as_ref();
        let labels = self.labels("writing an image folder")?;
        // Files left from another write would join this one's when the folder is loaded.
        if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(Error::Invalid(format!(
                "{}: the folder is not empty; write an image folder to a new or empty folder \
                 (remove this one first if it is an old copy)",
                dir.display()
            )));
        }
        let [channels @ (1 | 3), height, width] = self.shape[..] else {
            return Err(Error::Invalid(format!(
                "{} has examples of shape {:?}; an image folder holds images of shape \
                 (1 or 3, height, width)",
                self.name, self.shape
            )));
        };
        let (lo, hi) = self.value_range;
        let byte = |v: f32| {
            (((v - lo) / (hi - lo).max(f32::EPSILON)).clamp(0.0, 1.0) * 255.0).round() as u8
        };
        let mut written = 0;
        for (split, indices) in &self.splits {
            let folder = if split == "test" { "test" } else { "train" };
            for &i in indices {
                let class = dir
                    .join(folder)
                    .join(folder_name(self.class_name(labels[i])));
                std::fs::create_dir_all(&class).map_err(|e| Error::Io(class.clone(), e))?;
                let pixels = self.row(i);
                let plane = height * width;
                // (C, H, W) planes to interleaved (H, W, C) bytes.
                let bytes: Vec<u8> = (0..plane)
                    .flat_map(|p| (0..channels).map(move |c| c * plane + p))
                    .map(|k| byte(pixels[k]))
                    .collect();
                let color = if channels == 1 {
                    image::ExtendedColorType::L8
                } else {
                    image::ExtendedColorType::Rgb8
                };
                let path = class.join(format!("{i:05}.png"));
                image::save_buffer(&path, &bytes, width as u32, height as u32, color)
                    .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
                written += 1;
            }
        }
        Ok(written)
    }
}

/// A class name as a folder name: path separators become `_`.
fn folder_name(class: &str) -> String {
    class.replace(['/', '\\'], "_")
}

/// The files of one split: (class index, path), and the class names.
struct Listing {
    classes: Vec<String>,
    /// (split, its (class, file) in class then file-name order), train before test; the
    /// split is `all` when the folder has none of its own.
    files: Vec<(String, Vec<(u32, PathBuf)>)>,
    /// Files left out for their extension.
    others: usize,
}

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The subfolders of `dir`, sorted by name.
fn subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::Io(dir.to_path_buf(), e))?.path();
        if path.is_dir() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The image files of a class folder, sorted, and how many other files it holds.
fn image_files(dir: &Path) -> Result<(Vec<PathBuf>, usize)> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
    let (mut images, mut others) = (Vec::new(), 0);
    for entry in entries {
        let path = entry.map_err(|e| Error::Io(dir.to_path_buf(), e))?.path();
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if path.is_file() && EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str()) {
            images.push(path);
        } else if path.is_file() {
            others += 1;
        }
    }
    images.sort();
    Ok((images, others))
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Step 1: the classes and their files, by split when the folder has `train/` and `test/`.
fn list(root: &Path) -> Result<Listing> {
    if !root.is_dir() {
        return Err(Error::Data(format!(
            "{}: not a folder; an image folder holds one subfolder per class (or train/ and \
             test/, each with one subfolder per class)",
            root.display()
        )));
    }
    let (train, test) = (root.join("train"), root.join("test"));
    let split_roots: Vec<(String, PathBuf)> = if train.is_dir() && test.is_dir() {
        vec![("train".into(), train), ("test".into(), test)]
    } else {
        vec![("all".into(), root.to_path_buf())]
    };
    let classes: Vec<String> = subfolders(&split_roots[0].1)?
        .iter()
        .map(|p| name_of(p))
        .collect();
    if classes.is_empty() {
        return Err(Error::Data(format!(
            "{}: no class folders; put each class's images in a subfolder named after it \
             (cat/1.png, dog/1.png), optionally under train/ and test/",
            split_roots[0].1.display()
        )));
    }
    let mut files = Vec::new();
    let mut others = 0;
    for (split, dir) in &split_roots {
        let mut listed = Vec::new();
        for folder in subfolders(dir)? {
            let name = name_of(&folder);
            let Some(class) = classes.iter().position(|c| *c == name) else {
                return Err(Error::Data(format!(
                    "{}: class {name:?} is not among the training classes ({})",
                    folder.display(),
                    classes.join(", ")
                )));
            };
            let (images, other) = image_files(&folder)?;
            others += other;
            listed.extend(images.into_iter().map(|p| (class as u32, p)));
        }
        files.push((split.clone(), listed));
    }
    Ok(Listing {
        classes,
        files,
        others,
    })
}

/// Steps 2 and 3 for one file: the decoded image, or why not.
fn decode(path: &Path) -> std::result::Result<image::DynamicImage, String> {
    let reader = image::ImageReader::open(path).map_err(|e| e.to_string())?;
    let reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    reader.decode().map_err(|e| e.to_string())
}

fn load(root: &Path, choices: &ImageChoices) -> Result<Dataset> {
    // 1. Classes and files.
    let listing = list(root)?;
    let all: Vec<(String, u32, PathBuf)> = (listing.files.iter())
        .flat_map(|(split, files)| {
            files
                .iter()
                .map(move |(c, p)| (split.clone(), *c, p.clone()))
        })
        .collect();
    // 2. Decode; skip what cannot be read, saying so.
    let mut decoded = Vec::new();
    let mut skipped = Vec::new();
    for (split, class, path) in all {
        match decode(&path) {
            Ok(image) => decoded.push((split, class, path, image)),
            Err(reason) => skipped.push(format!("{}: {reason}", path.display())),
        }
    }
    let Some(first) = decoded.first() else {
        return Err(Error::Data(format!(
            "{}: no readable .png, .jpg or .jpeg image in its class folders{}",
            root.display(),
            skipped
                .first()
                .map_or(String::new(), |s| format!(" (first: {s})"))
        )));
    };
    // 3. One shape.
    let (height, width) = match choices.size {
        Some(size) => size,
        None => (first.3.height() as usize, first.3.width() as usize),
    };
    let gray = choices.grayscale || decoded.iter().all(|d| !d.3.color().has_color());
    let channels = if gray { 1 } else { 3 };
    let mut features = Vec::with_capacity(decoded.len() * channels * height * width);
    for (_, _, path, image) in &decoded {
        let sized = (image.height() as usize, image.width() as usize);
        let image = match choices.size {
            Some(_) if sized != (height, width) => image.resize_exact(
                width as u32,
                height as u32,
                image::imageops::FilterType::Triangle,
            ),
            None if sized != (height, width) => {
                return Err(Error::Data(format!(
                    "{}: {}x{} pixels, but {} is {height}x{width}; resize them all with \
                     .size(HEIGHT, WIDTH)",
                    path.display(),
                    sized.0,
                    sized.1,
                    first.2.display()
                )))
            }
            _ => image.clone(),
        };
        // 4. (C, H, W) in [0, 1].
        if gray {
            features.extend(image.to_luma8().pixels().map(|p| p.0[0] as f32 / 255.0));
        } else {
            let rgb = image.to_rgb8();
            for c in 0..3 {
                features.extend(rgb.pixels().map(|p| p.0[c] as f32 / 255.0));
            }
        }
    }
    let labels: Vec<u32> = decoded.iter().map(|d| d.1).collect();
    let splits = splits(
        &decoded
            .iter()
            .map(|d| (d.0.as_str(), d.1))
            .collect::<Vec<_>>(),
    );
    let spec = DataSpec::ImageFolder {
        path: root.to_path_buf(),
        choices: choices.clone(),
    };
    let target = Target::Classes {
        labels,
        names: listing.classes,
    };
    let name = name_of(root);
    let mut d = Dataset::new(
        &name,
        spec,
        features,
        target,
        vec![channels, height, width],
        splits,
    )?;
    d.value_range = (0.0, 1.0);
    if listing.others > 0 {
        d.notes.push(format!(
            "{} files that are not .png, .jpg or .jpeg left out",
            listing.others
        ));
    }
    if !skipped.is_empty() {
        eprintln!(
            "{name}: {} unreadable images skipped; the first: {}",
            skipped.len(),
            skipped[0]
        );
        d.notes.push(format!(
            "{} unreadable images skipped: {}",
            skipped.len(),
            skipped.join("; ")
        ));
    }
    Ok(d)
}

/// The splits of the decoded images, each (folder split, class) in load order: the folder's
/// own train and test, the last 10% of each training class as val; or a seeded 70/10/20.
fn splits(images: &[(&str, u32)]) -> BTreeMap<String, Vec<usize>> {
    if images.iter().all(|(split, _)| *split == "all") {
        return seeded_splits(images.len(), &SPLITS);
    }
    let mut out: BTreeMap<String, Vec<usize>> = ["train", "val", "test"]
        .into_iter()
        .map(|s| (s.to_string(), Vec::new()))
        .collect();
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, (split, class)) in images.iter().enumerate() {
        match *split {
            "train" => by_class.entry(*class).or_default().push(i),
            _ => out.entry("test".into()).or_default().push(i),
        }
    }
    for members in by_class.values() {
        let n_val = members.len() / 10;
        let (train, val) = members.split_at(members.len() - n_val);
        out.entry("train".into()).or_default().extend(train);
        out.entry("val".into()).or_default().extend(val);
    }
    for indices in out.values_mut() {
        indices.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::show::Show;

    /// A `size` x `size` image of one class: class 0 dark on the left, class 1 on the right,
    /// with a little variation per index.
    fn picture(class: u32, k: u32, size: u32, colour: bool) -> image::DynamicImage {
        let pixel = |x: u32, y: u32| {
            let lit = if class == 0 {
                x < size / 2
            } else {
                x >= size / 2
            };
            let v = if lit {
                200 + (k * 7 + y) % 50
            } else {
                (k * 3 + x) % 40
            } as u8;
            [v, if colour { 255 - v } else { v }, v]
        };
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(size, size, |x, y| {
            image::Rgb(pixel(x, y))
        }))
    }

    /// Writes `n` images per class (cat, dog) under `dir`, PNG for even k and JPEG for odd.
    fn write_classes(dir: &Path, n: u32, size: u32, colour: bool) {
        for (class, name) in ["cat", "dog"].iter().enumerate() {
            let folder = dir.join(name);
            std::fs::create_dir_all(&folder).unwrap();
            for k in 0..n {
                let image = picture(class as u32, k, size, colour);
                let image = if colour { image } else { image.grayscale() };
                let file = folder.join(format!("{k:03}.{}", ["png", "jpg"][k as usize % 2]));
                image.save(&file).unwrap();
            }
        }
    }

    #[test]
    fn issue_22_an_image_folder_loads_by_class_and_skips_what_it_cannot_read_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write_classes(dir.path(), 10, 8, false);
        std::fs::write(dir.path().join("cat/broken.png"), b"not a png").unwrap();
        std::fs::write(dir.path().join("dog/notes.txt"), b"not an image").unwrap();
        let d = Dataset::image_folder(dir.path()).load().unwrap();
        assert_eq!(d.classes(), ["cat", "dog"]);
        assert_eq!(
            (d.len(), d.shape.clone()),
            (20, vec![1, 8, 8]),
            "gray: one channel"
        );
        assert_eq!(d.labels("t").unwrap()[..10], [0; 10]);
        assert!(d.features.iter().all(|v| (0.0..=1.0).contains(v)));
        let splits: usize = d.splits.values().map(Vec::len).sum();
        assert_eq!(splits, 20);
        let summary = d.summary().unwrap().text();
        assert!(
            summary.contains("1 unreadable images skipped") && summary.contains("broken.png"),
            "{summary}"
        );
        assert!(summary.contains("1 files that are not .png"), "{summary}");
        // The spec loads the same bits again.
        assert_eq!(d.spec.load().unwrap().fingerprint(), d.fingerprint());
    }

    #[test]
    fn issue_22_train_and_test_folders_are_kept_and_colour_makes_three_channels() {
        let dir = tempfile::tempdir().unwrap();
        write_classes(&dir.path().join("train"), 20, 6, true);
        write_classes(&dir.path().join("test"), 4, 6, true);
        let d = Dataset::image_folder(dir.path()).load().unwrap();
        assert_eq!((d.len(), d.shape.clone()), (48, vec![3, 6, 6]));
        let sizes: Vec<usize> = ["train", "val", "test"]
            .iter()
            .map(|s| d.split(s).unwrap().len())
            .collect();
        assert_eq!(
            sizes,
            [36, 4, 8],
            "the last 10% of each training class is val"
        );
        let test = d.split("test").unwrap();
        assert!(
            test.iter().all(|&i| i >= 40),
            "test images come after train's"
        );
        let gray = Dataset::image_folder(dir.path())
            .grayscale()
            .load()
            .unwrap();
        assert_eq!(gray.shape, [1, 6, 6]);
        assert_ne!(gray.fingerprint().hash, d.fingerprint().hash);
        // A class only test/ holds is an error naming it.
        std::fs::create_dir_all(dir.path().join("test/bird")).unwrap();
        let e = Dataset::image_folder(dir.path())
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("class \"bird\" is not among the training classes (cat, dog)"),
            "{e}"
        );
    }

    #[test]
    fn issue_22_sizes_must_agree_unless_resized_and_bad_folders_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        write_classes(dir.path(), 3, 8, false);
        picture(0, 9, 12, false)
            .grayscale()
            .save(dir.path().join("cat/big.png"))
            .unwrap();
        let e = Dataset::image_folder(dir.path())
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("big.png: 12x12 pixels") && e.contains(".size(HEIGHT, WIDTH)"),
            "{e}"
        );
        let d = Dataset::image_folder(dir.path()).size(4, 4).load().unwrap();
        assert_eq!((d.len(), d.shape.clone()), (7, vec![1, 4, 4]));

        let empty = tempfile::tempdir().unwrap();
        let e = Dataset::image_folder(empty.path())
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("no class folders"), "{e}");
        let e = Dataset::image_folder(empty.path().join("missing"))
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a folder"), "{e}");
        std::fs::create_dir_all(empty.path().join("cat")).unwrap();
        std::fs::write(empty.path().join("cat/a.png"), b"junk").unwrap();
        let e = Dataset::image_folder(empty.path())
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("no readable") && e.contains("a.png"), "{e}");
    }

    #[test]
    fn issue_22_a_written_image_folder_loads_back_the_same_classes_and_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let digits = Dataset::digits().unwrap().subset(60, 20).unwrap();
        let written = digits.write_image_folder(dir.path()).unwrap();
        let kept: usize = digits.splits.values().map(Vec::len).sum();
        assert_eq!(written, kept);
        let back = Dataset::image_folder(dir.path()).load().unwrap();
        assert_eq!((back.len(), back.shape.clone()), (kept, vec![1, 8, 8]));
        assert_eq!(back.split("test").unwrap().len(), 20);
        // Example #i is the file NNNNN.png: same class, pixels within 8-bit rounding.
        let first = digits.split("test").unwrap()[0];
        let path = dir
            .path()
            .join(format!("test/{}/{first:05}.png", digits.target_text(first)));
        let pixels = image::open(&path).unwrap().to_luma8();
        for (a, b) in digits.row(first).iter().zip(pixels.pixels()) {
            assert!((a - b.0[0] as f32 / 255.0).abs() <= 0.5 / 255.0 + 1e-6);
        }
        assert!(back.classes().iter().all(|c| digits.classes().contains(c)));
        let e = digits
            .write_image_folder(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not empty"), "{e}");
        let table = crate::train::testing::penguins();
        let e = table
            .write_image_folder(dir.path().join("table"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("an image folder holds images of shape"), "{e}");
    }

    #[test]
    fn issue_22_a_net_trains_on_an_image_folder_with_every_check_and_reproduces() {
        use crate::checks::{run_all, CheckContext};
        use crate::train::testing::{archived, small_head};
        use crate::{fit, Seeds, TrainConfig};
        let dir = tempfile::tempdir().unwrap();
        write_classes(&dir.path().join("pictures"), 30, 8, false);
        let data = Dataset::image_folder(dir.path().join("pictures"))
            .load()
            .unwrap();
        let config = TrainConfig {
            model: small_head(16),
            steps: 60,
            eval_every: 30,
            ..TrainConfig::default()
        };
        let seeds = Seeds::all(2);
        let findings = run_all(&CheckContext {
            data: &data,
            config: config.clone(),
            seeds,
        })
        .unwrap();
        let failed: Vec<String> = (findings.iter())
            .filter(|f| !f.check.passed)
            .map(|f| f.text())
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
        let runs = dir.path().join("runs");
        let a = fit(&data, &config, &seeds, &archived(&runs, "a")).unwrap();
        let b = fit(&data, &config, &seeds, &archived(&runs, "a")).unwrap();
        assert!(a.metric("test_acc").unwrap() > 0.9, "{:?}", a.summary);
        assert_eq!(a.curves, b.curves, "same identity, same bits");
    }
}
