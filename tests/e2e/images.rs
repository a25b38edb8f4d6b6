//! A folder of images from a shell: `recipe data` and `recipe train` on the folder layout
//! people keep (train/ and test/, a subfolder per class, PNG and JPEG), with a file that is
//! not an image and one that cannot be decoded, and a run that verifies bit for bit.

use crate::{recipe, recipe_ok};
use std::path::Path;

/// `n` 6x6 images per class under `dir/CLASS/`: "left" lit on the left half, "right" on the
/// right; PNG for even k, JPEG for odd.
fn write_classes(dir: &Path, n: u32) {
    for (class, name) in ["left", "right"].iter().enumerate() {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for k in 0..n {
            let image = image::GrayImage::from_fn(6, 6, |x, _| {
                let lit = (x < 3) == (class == 0);
                image::Luma([if lit {
                    200 + (k % 50) as u8
                } else {
                    (k % 30) as u8
                }])
            });
            let file = folder.join(format!("{k:03}.{}", ["png", "jpg"][k as usize % 2]));
            image.save(&file).unwrap();
        }
    }
}

#[test]
fn issue_22_recipe_trains_on_a_folder_of_images_and_verifies_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    write_classes(&pics.join("train"), 20);
    write_classes(&pics.join("test"), 5);
    std::fs::write(pics.join("train/left/broken.png"), b"not a png").unwrap();
    std::fs::write(pics.join("train/right/readme.txt"), b"notes").unwrap();

    let shown = recipe_ok(dir.path(), &["data", "--data", "pics"]);
    for expected in [
        "pics: 50 examples of shape [1, 6, 6]; splits test 10, train 36, val 4",
        "1 unreadable images skipped",
        "broken.png",
        "1 files that are not .png, .jpg or .jpeg left out",
        "left ",
    ] {
        assert!(shown.contains(expected), "{expected}: {shown}");
    }
    let resized = recipe_ok(dir.path(), &["data", "--data", "pics", "--size", "3x3"]);
    assert!(resized.contains("of shape [1, 3, 3]"), "{resized}");
    for (args, expected) in [
        (
            vec!["data", "--data", "pics", "--size", "3by3"],
            "--size takes HEIGHTxWIDTH",
        ),
        (
            vec!["data", "--data", "pics", "--target", "y"],
            "is a folder of images",
        ),
        (vec!["data", "--grayscale"], "not one"),
    ] {
        let out = recipe(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expected), "{expected}: {err}");
    }

    let config = r#"{"steps": 120, "eval_every": 60, "lr": 0.003}"#;
    let trained = recipe_ok(
        dir.path(),
        &[
            "train", "--quiet", "--data", "pics", "--name", "pics", "--config", config,
        ],
    );
    assert!(trained.contains("test_acc     1.000"), "{trained}");
    let verified = recipe_ok(dir.path(), &["runs", "verify", "pics"]);
    assert!(verified.contains("reproduced bit for bit"), "{verified}");
}
