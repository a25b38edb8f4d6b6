//! The runtime as one shared library (the `recipe-cells` crate), built once at install and
//! linked by every cell.
//!
//! An installed runtime is a folder holding `librecipe_cells.so`, the metadata of every crate
//! inside it (rustc reads it to type-check cells) and `manifest.json` (the rustc that built
//! it). Cells are compiled with `--extern recipe=<folder>/librecipe_cells.so` and an rpath to
//! the folder, so the cell process loads the library once and every cell shares its statics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The library file name.
pub const LIB: &str = "librecipe_cells.so";
/// The environment variable that points the kernel at an installed runtime.
pub const RUNTIME_ENV: &str = "RECIPE_RUNTIME";

#[derive(Serialize, Deserialize)]
struct Manifest {
    rustc: String,
    recipe: String,
    files: Vec<String>,
}

/// An installed runtime.
pub struct RuntimeLib {
    pub dir: PathBuf,
}

impl RuntimeLib {
    /// The runtime named by `$RECIPE_RUNTIME`, else the one `recipe install` put in the user's
    /// data folder. Fails with what to run when it is missing or was built by another rustc.
    pub fn locate() -> anyhow::Result<RuntimeLib> {
        let dir = std::env::var_os(RUNTIME_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| data_home().join("recipe").join("runtime"));
        let manifest = dir.join("manifest.json");
        let text = std::fs::read_to_string(&manifest).map_err(|_| {
            anyhow::anyhow!(
                "no recipe runtime at {}: run `recipe install` first",
                dir.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged: run `recipe install` again",
                manifest.display()
            )
        })?;
        let rustc = rustc_version()?;
        if manifest.rustc != rustc {
            bail!(
                "the recipe runtime in {} was built with {} but cells would be compiled with {}: \
                 run `recipe install` again",
                dir.display(),
                manifest.rustc,
                rustc
            );
        }
        if !dir.join(LIB).is_file() {
            bail!(
                "{} is missing: run `recipe install` again",
                dir.join(LIB).display()
            );
        }
        // Cells compile in the session's own folder: a relative path would point elsewhere.
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolve the runtime folder {}", dir.display()))?;
        Ok(RuntimeLib { dir })
    }

    /// The dependency line that shows the runtime's source to evcxr's analyzer (which infers
    /// the types of cell variables) without cargo building it: a dev-dependency, after which
    /// an always-true target table takes any later `:dep` lines as ordinary dependencies.
    /// evcxr writes its dependencies as `name = config` lines under `[dependencies]`.
    pub fn analyzer_dependency(&self) -> (String, String) {
        let cells = self.dir.join("source").join("cells");
        (
            "[dev-dependencies]\nrecipe".to_string(),
            format!(
                "{{ package = \"recipe-cells\", path = {:?} }}\n[target.'cfg(all())'.dependencies]",
                cells.display().to_string()
            ),
        )
    }

    /// The standard library's source for the analyzer (see [`std_source_for_analyzer`]), if
    /// this install has one.
    pub fn std_source(&self) -> Option<PathBuf> {
        let dir = self.dir.join(STD_SOURCE);
        dir.join("core").is_dir().then_some(dir)
    }

    /// The lock file the runtime was built with, so the analyzer sees the same versions.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("source").join("Cargo.lock")
    }

    /// rustc flags for compiling a cell against this runtime, in cargo's encoded form.
    pub fn rustflags(&self) -> String {
        let dir = self.dir.display();
        [
            "-L".to_string(),
            format!("dependency={dir}"),
            "--extern".to_string(),
            format!("recipe={dir}/{LIB}"),
            "-C".to_string(),
            "prefer-dynamic".to_string(),
            "-C".to_string(),
            format!("link-arg=-Wl,-rpath,{dir}"),
        ]
        .join("\x1f")
    }
}

/// `rustc --version` of the rustc on PATH (the one evcxr compiles cells with), asked once per
/// process: kernel_info replies carry it.
pub fn rustc_version() -> anyhow::Result<String> {
    static VERSION: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            let out = Command::new("rustc").arg("--version").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .clone()
        .context("could not run rustc (is a Rust toolchain on PATH?)")
}

/// The folder of an installed runtime holding the analyzer's standard library source.
const STD_SOURCE: &str = "std-source";

/// Files of the standard library's source the analyzer goes without, each replaced by an
/// empty module: the x86 intrinsics (`std::arch::x86`, `std::arch::x86_64`; 8 MB of the
/// 34 MB it reads), portable SIMD (`std::simd`, unstable: no stable cell can name it), and
/// two crates private to std: its copy of the backtrace crate and the compiler's builtins.
const LEFT_OUT_OF_STD: [&str; 5] = [
    "stdarch/crates/core_arch/src/x86/mod.rs",
    "stdarch/crates/core_arch/src/x86_64/mod.rs",
    "portable-simd/crates/core_simd/src/mod.rs",
    "backtrace/src/lib.rs",
    "compiler-builtins/compiler-builtins/src/lib.rs",
];

/// The toolchain's standard library source (`rust-src`), if installed.
fn toolchain_std_source() -> anyhow::Result<Option<PathBuf>> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("run rustc")?;
    if !out.status.success() {
        bail!(
            "`rustc --print sysroot` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let library = sysroot.join("lib/rustlib/src/rust/library");
    Ok(library.join("core").is_dir().then_some(library))
}

/// The standard library's source as a session's analyzer reads it (through `RUST_SRC_PATH`):
/// `library` without [`LEFT_OUT_OF_STD`]. The analyzer reads and resolves all of std at the
/// start of every session; without those modules that takes a third less (session start to
/// runtime attached 3.13 -> 2.38 s, the first `let` 1.47 -> 1.17 s, medians of 7). Cells
/// still compile against the whole standard library: only the analyzer (variable types,
/// completion) does not know the intrinsics.
///
/// Files are hard links to the toolchain's (copies where links cannot be made), except the
/// workspace files at the top, which are copied so that nothing run on the copy can write
/// into the toolchain. Nothing is ever opened for writing at a path that exists: a file left
/// there (a hard link to the toolchain's) is removed first, so the toolchain's files are never
/// written through a link.
fn std_source_for_analyzer(library: &Path, to: &Path) -> anyhow::Result<()> {
    link_tree(library, to, Path::new(""))
}

fn link_tree(from: &Path, to: &Path, relative: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("list {}", from.display()))? {
        let entry = entry?;
        let (path, target) = (entry.path(), to.join(entry.file_name()));
        let relative = relative.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            link_tree(&path, &target, &relative)?;
            continue;
        }
        removed(std::fs::remove_file(&target), &target)?;
        if LEFT_OUT_OF_STD.iter().any(|l| Path::new(l) == relative) {
            std::fs::write(&target, "//! Left out of the analyzer's copy of std.\n")?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&path)?, &target)?;
        } else if relative.parent() == Some(Path::new("")) || !hard_linked(&path, &target)? {
            std::fs::copy(&path, &target).with_context(|| format!("copy {}", path.display()))?;
        }
    }
    Ok(())
}

/// The result of removing `path`, where a path that was not there counts as removed.
fn removed(result: std::io::Result<()>, path: &Path) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Hard-link `path` at `target`; false where the file system cannot (another device, no
/// links allowed, too many links), any other failure is an error.
fn hard_linked(path: &Path, target: &Path) -> anyhow::Result<bool> {
    match std::fs::hard_link(path, target) {
        Ok(()) => Ok(true),
        Err(e)
            if [libc::EXDEV, libc::EPERM, libc::EMLINK]
                .contains(&e.raw_os_error().unwrap_or(0)) =>
        {
            Ok(false)
        }
        Err(e) => {
            Err(e).with_context(|| format!("link {} at {}", path.display(), target.display()))
        }
    }
}

/// The toolchain's `libstd-*.so`, which the library and every cell load.
fn std_library() -> anyhow::Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir"])
        .output()
        .context("run rustc")?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    std::fs::read_dir(&dir)
        .with_context(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("libstd-") && name.ends_with(".so")
        })
        .with_context(|| format!("no libstd-*.so in {}", dir.display()))
}

/// `$XDG_DATA_HOME` or `~/.local/share`.
pub fn data_home() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share")
        })
}

/// Where `recipe install` puts things.
pub struct InstallPlan {
    /// The workspace holding the runtime's source.
    pub source: PathBuf,
    /// `<prefix>/share` (or the user's data folder).
    pub share: PathBuf,
    /// The kernelspec folder Jupyter reads.
    pub kernelspec: PathBuf,
}

impl InstallPlan {
    pub fn new(prefix: Option<&Path>, source: Option<&Path>) -> anyhow::Result<InstallPlan> {
        let source = match source {
            Some(s) => s.to_path_buf(),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        if !source.join("cells").join("Cargo.toml").is_file() {
            bail!(
                "{} is not the recipe workspace (no cells/Cargo.toml): pass --source DIR",
                source.display()
            );
        }
        // Paths written into the kernelspec must not depend on the folder Jupyter starts in.
        let prefix = prefix.map(std::path::absolute).transpose()?;
        let prefix = prefix.as_deref();
        let share = match prefix {
            Some(p) => p.join("share"),
            None => data_home(),
        };
        let kernels = match (prefix, std::env::var_os("JUPYTER_DATA_DIR")) {
            (None, Some(d)) => PathBuf::from(d),
            _ => share.join("jupyter"),
        };
        Ok(InstallPlan {
            source,
            kernelspec: kernels.join("kernels").join("recipe"),
            share,
        })
    }

    /// Build the runtime library, copy it with what rustc needs, write the kernelspec.
    pub fn run(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        eprintln!(
            "building the recipe runtime library (release) in {}",
            self.source.display()
        );
        let files = build_runtime(&self.source)?;
        let built = started.elapsed();

        let root = self.share.join("recipe");
        let dir = root.join("runtime");
        let staging = root.join("runtime.new");
        // One install at a time per folder: the staging folder is this install's alone.
        std::fs::create_dir_all(&root)?;
        let lock_path = root.join("install.lock");
        let lock = std::fs::File::create(&lock_path)?;
        // SAFETY: flock on an open file descriptor; released when `lock` is closed.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            bail!(
                "lock {}: {}",
                lock_path.display(),
                std::io::Error::last_os_error()
            );
        }
        removed(std::fs::remove_dir_all(&staging), &staging)?;
        std::fs::create_dir_all(&staging)?;
        let mut names = Vec::new();
        let mut bytes = 0u64;
        for file in &files {
            let name = file.file_name().context("artifact without a name")?;
            bytes += std::fs::copy(file, staging.join(name))
                .with_context(|| format!("copy {}", file.display()))?;
            names.push(name.to_string_lossy().into_owned());
        }
        names.sort();
        let manifest = Manifest {
            rustc: rustc_version()?,
            recipe: env!("CARGO_PKG_VERSION").into(),
            files: names,
        };
        std::fs::write(
            staging.join("manifest.json"),
            serde_json::to_vec_pretty(&manifest)?,
        )?;
        crate::analyzer_source::copy_source(&self.source, &staging.join("source"))?;
        match toolchain_std_source()? {
            Some(library) => std_source_for_analyzer(&library, &staging.join(STD_SOURCE))?,
            None => eprintln!(
                "note: the toolchain has no rust-src: cells will run, but the analyzer cannot \
                 infer types from std (`rustup component add rust-src`, then install again)"
            ),
        }
        // The kernel binary travels with its runtime, so one install is one consistent pair.
        let exe = std::env::current_exe()?;
        std::fs::copy(&exe, staging.join("recipe"))
            .with_context(|| format!("copy {}", exe.display()))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir)?;

        std::fs::create_dir_all(&self.kernelspec)?;
        let spec = serde_json::json!({
            "argv": [dir.join("recipe"), "kernel", "--connection-file", "{connection_file}"],
            "display_name": "Rust (recipe)",
            "language": "rust",
            "interrupt_mode": "message",
            "env": { RUNTIME_ENV: dir },
            "metadata": { "debugger": false },
        });
        std::fs::write(
            self.kernelspec.join("kernel.json"),
            serde_json::to_vec_pretty(&spec)?,
        )?;
        for (name, bytes) in LOGOS {
            std::fs::write(self.kernelspec.join(name), bytes)?;
        }
        println!(
            "installed kernel \"Rust (recipe)\": kernelspec {}, runtime {} ({} files, {} MiB); \
             build {:.1} s",
            self.kernelspec.display(),
            dir.display(),
            manifest.files.len(),
            bytes / (1 << 20),
            built.as_secs_f64()
        );
        Ok(())
    }
}

/// The kernel's logo in the sizes a front end looks for in the kernelspec (the launcher's
/// tile, the notebook's corner): a loss curve falling on a page. The PNGs are the SVG drawn
/// at 32 and 64 pixels.
const LOGOS: [(&str, &[u8]); 3] = [
    ("logo-svg.svg", include_bytes!("../logo/logo-svg.svg")),
    ("logo-32x32.png", include_bytes!("../logo/logo-32x32.png")),
    ("logo-64x64.png", include_bytes!("../logo/logo-64x64.png")),
];

/// `cargo build --release -p recipe-cells`; the library and the metadata of every crate in it.
fn build_runtime(source: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(source)
        .args([
            "rustc",
            "--release",
            "-p",
            "recipe-cells",
            "--lib",
            "--message-format=json-render-diagnostics",
            "--",
            // Cells link std dynamically (evcxr's default), so the library must too: one
            // std for the library and every cell. It finds std next to itself.
            "-C",
            "prefer-dynamic",
            "-C",
            "link-arg=-Wl,-rpath,$ORIGIN",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo (is a Rust toolchain on PATH?)")?;
    if !out.status.success() {
        bail!("building the runtime library failed (see cargo's output above)");
    }
    let mut files = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let kinds = message["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if kinds.iter().any(|k| k == "custom-build") {
            continue;
        }
        for file in message["filenames"].as_array().into_iter().flatten() {
            let Some(path) = file.as_str() else { continue };
            // Cells link the library itself; of the crates inside it rustc needs only their
            // metadata. Proc macros are shared objects of their own.
            if [".rmeta", ".so"].iter().any(|ext| path.ends_with(ext)) {
                files.push(PathBuf::from(path));
            }
        }
    }
    if !files.iter().any(|f| f.ends_with(LIB)) {
        bail!("cargo did not report {LIB}; is `cells` a member of the workspace?");
    }
    files.push(std_library()?);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_analyzers_std_links_the_toolchains_files_and_leaves_out_x86_intrinsics() {
        let root = tempfile::tempdir().unwrap();
        let (library, copy) = (root.path().join("library"), root.path().join("copy"));
        let intrinsics = library.join(LEFT_OUT_OF_STD[0]);
        std::fs::create_dir_all(intrinsics.parent().unwrap()).unwrap();
        std::fs::create_dir_all(library.join("core/src")).unwrap();
        std::fs::write(&intrinsics, "pub unsafe fn _mm_pause() {}\n").unwrap();
        std::fs::write(library.join("core/src/lib.rs"), "pub mod option;\n").unwrap();
        std::fs::write(library.join("Cargo.lock"), "# lock\n").unwrap();

        // A copy left half-made (an install that stopped) holds links to the toolchain's
        // files where the new copy writes: they must be replaced, never written through.
        std::fs::create_dir_all(copy.join("core/src")).unwrap();
        std::fs::create_dir_all(copy.join(LEFT_OUT_OF_STD[0]).parent().unwrap()).unwrap();
        std::fs::hard_link(&intrinsics, copy.join(LEFT_OUT_OF_STD[0])).unwrap();
        std::fs::hard_link(library.join("Cargo.lock"), copy.join("Cargo.lock")).unwrap();
        std::fs::hard_link(
            library.join("core/src/lib.rs"),
            copy.join("core/src/lib.rs"),
        )
        .unwrap();

        std_source_for_analyzer(&library, &copy).unwrap();

        let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let core = "core/src/lib.rs";
        assert_eq!(inode(&library.join(core)), inode(&copy.join(core)));
        assert_ne!(
            inode(&library.join("Cargo.lock")),
            inode(&copy.join("Cargo.lock"))
        );
        assert_eq!(
            std::fs::read_to_string(copy.join("Cargo.lock")).unwrap(),
            "# lock\n"
        );
        let left_out = std::fs::read_to_string(copy.join(LEFT_OUT_OF_STD[0])).unwrap();
        assert!(!left_out.contains("_mm_pause"), "{left_out}");
        // The toolchain's own files are untouched.
        assert!(std::fs::read_to_string(&intrinsics)
            .unwrap()
            .contains("_mm_pause"));
        assert_eq!(
            std::fs::read_to_string(library.join("Cargo.lock")).unwrap(),
            "# lock\n"
        );
    }
}
