//! The source the analyzer reads: the runtime's three crates and the crates a cell writes
//! code against (candle, candle-nn, serde_json), each with a manifest that names only the
//! others.
//!
//! evcxr's analyzer infers the type of every `let` of a cell from source, not from compiled
//! metadata, and a variable whose type it cannot write out is not kept. So the crates whose
//! values cells hold must be in its view. It reads every file of every crate in that view,
//! once per session and again for each cell, so the view is kept to what cells name:
//!
//! - the runtime (`archive`, `runtime`, `cells`), whose types every notebook holds;
//! - candle-core, candle-nn and serde_json, copied from where cargo keeps them, so a bare
//!   `let t = Tensor::zeros(..)?;` or `let v = json!(..);` persists;
//! - not arrow, parquet, gemm, half or the rest of what those depend on: tens of crates and
//!   thousands of files, for types no notebook holds. A value of one of them needs its type
//!   written out.
//!
//! Every manifest is rewritten to depend on the crates of that view alone (no build
//! scripts, no features), so `cargo metadata` resolves it from these folders with no
//! registry and the analyzer walks nothing else.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The runtime's crates, by folder.
const MEMBERS: [&str; 3] = ["archive", "runtime", "cells"];

/// The external crates in the analyzer's view, by package name; copied to `vendor/NAME`.
pub const VENDORED: [&str; 3] = ["candle-core", "candle-nn", "serde_json"];

/// Copy the source of the workspace at `workspace` for the analyzer into `to`.
pub fn copy_source(workspace: &Path, to: &Path) -> anyhow::Result<()> {
    let keep: Vec<&str> = ["recipe", "recipe-archive", "recipe-cells"]
        .into_iter()
        .chain(VENDORED)
        .collect();
    for member in MEMBERS {
        copy_tree(&workspace.join(member), &to.join(member))?;
        rewrite_manifest(&to.join(member).join("Cargo.toml"), &keep)?;
    }
    for (name, dir) in registry_sources(workspace)? {
        let vendored = to.join("vendor").join(&name);
        copy_tree(&dir.join("src"), &vendored.join("src"))?;
        std::fs::copy(dir.join("Cargo.toml"), vendored.join("Cargo.toml"))?;
        rewrite_manifest(&vendored.join("Cargo.toml"), &keep)?;
        point_at(&vendored.join("Cargo.toml"), &VENDORED, "..")?;
    }
    let root = std::fs::read_to_string(workspace.join("Cargo.toml"))?;
    std::fs::write(to.join("Cargo.toml"), workspace_manifest(&root)?)?;
    // The lock file of this view, written by cargo from these folders alone: it also proves
    // now, not in a session, that the view resolves without a registry.
    metadata(to).context("resolve the analyzer's view of the runtime")?;
    Ok(())
}

/// `cargo metadata` of the workspace at `dir`, offline, for this machine's platform (the
/// crates of other platforms were never fetched).
fn metadata(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(dir)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(host_triple()?)
        .output()
        .context("run cargo metadata (is a Rust toolchain on PATH?)")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The platform rustc compiles for by default (`host:` of `rustc -vV`).
fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("run rustc (is a Rust toolchain on PATH?)")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV names no host")
}

/// The folder of each [`VENDORED`] crate that the workspace's lock file chose, from
/// `cargo metadata` (which reads what cargo has already fetched; no network).
fn registry_sources(workspace: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let metadata = metadata(workspace)?;
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    VENDORED
        .iter()
        .map(|name| {
            let manifest = packages
                .iter()
                .find(|p| p["name"] == *name)
                .and_then(|p| p["manifest_path"].as_str())
                .with_context(|| format!("the workspace does not depend on {name}"))?;
            let dir = Path::new(manifest)
                .parent()
                .context("a manifest path without a folder")?;
            Ok((name.to_string(), dir.to_path_buf()))
        })
        .collect()
}

/// Rewrite a crate manifest in place so it names only the crates in `keep` (see
/// [`analyzer_manifest`]).
fn rewrite_manifest(path: &Path, keep: &[&str]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let trimmed = analyzer_manifest(&text, keep)
        .with_context(|| format!("read the manifest {}", path.display()))?;
    std::fs::write(path, trimmed)?;
    Ok(())
}

/// A crate manifest for the analyzer: its dependencies on the crates in `keep` only, no dev
/// or build dependencies, no target-specific tables, no features, no build script and no
/// targets besides the library.
fn analyzer_manifest(manifest: &str, keep: &[&str]) -> anyhow::Result<String> {
    let mut table: toml::Table = manifest.parse()?;
    for dropped in [
        "dev-dependencies",
        "build-dependencies",
        "target",
        "features",
        "bench",
        "bin",
        "example",
        "test",
    ] {
        table.remove(dropped);
    }
    if let Some(toml::Value::Table(package)) = table.get_mut("package") {
        package.remove("build");
    }
    if let Some(toml::Value::Table(dependencies)) = table.get_mut("dependencies") {
        dependencies.retain(|name, spec| {
            let package = spec
                .get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(name);
            keep.contains(&package)
        });
        // A kept dependency is the whole crate as the analyzer sees it: no optional parts.
        for (_, spec) in dependencies.iter_mut() {
            if let toml::Value::Table(spec) = spec {
                spec.remove("features");
                spec.remove("optional");
            }
        }
    }
    Ok(toml::to_string(&table)?)
}

/// Point the dependencies of a vendored manifest on the other vendored crates at their
/// copies in `dir` (relative to the manifest's folder), instead of the registry. A renamed
/// dependency (candle-nn's `candle`, which is candle-core) keeps its name.
fn point_at(path: &Path, names: &[&str], dir: &str) -> anyhow::Result<()> {
    let mut table: toml::Table = std::fs::read_to_string(path)?.parse()?;
    if let Some(toml::Value::Table(dependencies)) = table.get_mut("dependencies") {
        for (name, spec) in dependencies.iter_mut() {
            let package = spec
                .get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(name)
                .to_string();
            if names.contains(&package.as_str()) {
                let mut copy = path_dependency(&format!("{dir}/{package}"));
                if package != *name {
                    if let toml::Value::Table(copy) = &mut copy {
                        copy.insert("package".into(), package.into());
                    }
                }
                *spec = copy;
            }
        }
    }
    std::fs::write(path, toml::to_string(&table)?)?;
    Ok(())
}

/// The workspace manifest for the analyzer: the runtime's crates as members, the vendored
/// crates as path dependencies, every other workspace dependency as it was (none is used).
fn workspace_manifest(root: &str) -> anyhow::Result<String> {
    let mut table: toml::Table = root.parse()?;
    let workspace = table
        .get_mut("workspace")
        .and_then(toml::Value::as_table_mut)
        .context("the root manifest has no [workspace]")?;
    workspace.insert(
        "members".into(),
        toml::Value::Array(MEMBERS.iter().map(|m| toml::Value::from(*m)).collect()),
    );
    let dependencies = workspace
        .entry("dependencies")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(dependencies) = dependencies {
        for name in VENDORED {
            dependencies.insert(name.into(), path_dependency(&format!("vendor/{name}")));
        }
    }
    Ok(toml::to_string(&table)?)
}

fn path_dependency(path: &str) -> toml::Value {
    let mut spec = toml::Table::new();
    spec.insert("path".into(), path.into());
    toml::Value::Table(spec)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("list {}", from.display()))? {
        let entry = entry?;
        let (path, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "target" {
                copy_tree(&path, &target)?;
            }
        } else {
            std::fs::copy(&path, &target).with_context(|| format!("copy {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_for_the_analyzer_keeps_only_the_crates_in_its_view() {
        let manifest = r#"
[package]
name = "candle-nn"
version = "0.11.1"
build = "build.rs"

[lib]
path = "src/lib.rs"

[[bench]]
name = "bench_main"
harness = false

[dependencies.candle]
version = "0.11.1"
package = "candle-core"
features = ["cuda"]

[dependencies.half]
version = "2"

[dependencies.serde_json]
version = "1"
optional = true

[dev-dependencies.anyhow]
version = "1"

[features]
cuda = ["candle/cuda"]

[target.'cfg(target_os = "macos")'.dependencies.metal]
version = "0.27"
"#;
        let trimmed: toml::Table = analyzer_manifest(manifest, &["candle-core", "serde_json"])
            .unwrap()
            .parse()
            .unwrap();
        let dependencies = trimmed["dependencies"].as_table().unwrap();
        let mut names: Vec<&String> = dependencies.keys().collect();
        names.sort();
        assert_eq!(names, ["candle", "serde_json"]);
        assert_eq!(
            dependencies["candle"].as_table().unwrap().get("features"),
            None
        );
        assert_eq!(
            dependencies["serde_json"]
                .as_table()
                .unwrap()
                .get("optional"),
            None
        );
        for dropped in ["dev-dependencies", "features", "target", "bench"] {
            assert!(!trimmed.contains_key(dropped), "{dropped} kept");
        }
        assert!(!trimmed["package"].as_table().unwrap().contains_key("build"));
        assert!(trimmed.contains_key("lib"));
    }

    #[test]
    fn the_workspace_manifest_points_the_vendored_crates_at_their_copies() {
        let root = "[workspace]\nmembers = [\"archive\", \"runtime\", \"cells\", \"kernel\"]\n\
                    [workspace.dependencies]\ncandle-core = \"=0.11.1\"\nblake3 = \"1.8\"\n";
        let table: toml::Table = workspace_manifest(root).unwrap().parse().unwrap();
        let workspace = table["workspace"].as_table().unwrap();
        assert_eq!(
            workspace["members"].as_array().unwrap().len(),
            3,
            "the kernel is not in the analyzer's view"
        );
        let dependencies = workspace["dependencies"].as_table().unwrap();
        assert_eq!(
            dependencies["candle-core"]["path"].as_str(),
            Some("vendor/candle-core")
        );
        assert_eq!(dependencies["blake3"].as_str(), Some("1.8"));
    }
}
