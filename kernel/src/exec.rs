//! `recipe exec NOTEBOOK`: run a notebook headless, in-process, and write its outputs back.
//!
//! A cell tagged `parameters` sets defaults; `-p key=value` overrides them papermill style,
//! in a cell tagged `injected-parameters` inserted right after it. A failing cell stops the
//! run: the notebook is written with the outputs so far and the error is shown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use recipe::notebook::Io;
use recipe_archive::Archive;
use serde_json::{json, Value};

use crate::session::{Outcome, Session, Sink};

/// Run `path`, overriding parameters, and write the executed notebook to `output` (or back to
/// `path`). Returns an error naming the failed cell.
pub fn run(
    path: &Path,
    parameters: &[(String, String)],
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the notebook {}", path.display()))?;
    let mut notebook: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a notebook (invalid JSON)", path.display()))?;
    check_notebook(&notebook, path)?;
    inject_parameters(&mut notebook, parameters)?;
    let output: PathBuf = output.map_or_else(|| path.to_path_buf(), Path::to_path_buf);

    let outputs: Arc<Mutex<CellOutputs>> = Arc::default();
    let sink: Sink = {
        let outputs = outputs.clone();
        Arc::new(move |io: Io| outputs.lock().unwrap().push(io))
    };
    let archive = Archive::open(Archive::default_root())?;
    let mut session = Session::start(sink, Some(archive))?;
    let started = Instant::now();
    let cells = notebook["cells"].as_array_mut().context("no cells")?;
    let count = cells.len();
    let mut failure = None;
    for (index, cell) in cells.iter_mut().enumerate() {
        if cell["cell_type"] != "code" {
            continue;
        }
        let source = source_text(&cell["source"]);
        outputs.lock().unwrap().begin(index);
        let cell_started = Instant::now();
        let outcome = session.execute(&source, true);
        let mut cell_outputs = outputs.lock().unwrap().take();
        cell["execution_count"] = json!(session.execution_count);
        match outcome {
            Outcome::Ok { data } => {
                if !data.is_empty() {
                    cell_outputs.push(json!({
                        "output_type": "execute_result",
                        "execution_count": session.execution_count,
                        "data": bundle_json(&data),
                        "metadata": {},
                    }));
                }
            }
            Outcome::Error {
                ename,
                evalue,
                traceback,
            } => {
                cell_outputs.push(json!({
                    "output_type": "error",
                    "ename": ename,
                    "evalue": evalue,
                    "traceback": traceback,
                }));
                failure = Some((index, ename, evalue, traceback));
            }
        }
        cell["outputs"] = Value::Array(cell_outputs);
        eprintln!(
            "recipe exec: cell {}/{count} done in {:.1} s",
            index + 1,
            cell_started.elapsed().as_secs_f64()
        );
        if failure.is_some() {
            break;
        }
    }
    // Later cells keep no outputs from an earlier run.
    if let Some((failed, ..)) = &failure {
        for cell in notebook["cells"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .skip(failed + 1)
        {
            if cell["cell_type"] == "code" {
                cell["outputs"] = json!([]);
                cell["execution_count"] = Value::Null;
            }
        }
    }
    outputs.lock().unwrap().apply_late_updates(&mut notebook);
    write_notebook(&output, &notebook)?;
    match failure {
        None => {
            eprintln!(
                "recipe exec: {} ran in {:.1} s; wrote {}",
                path.display(),
                started.elapsed().as_secs_f64(),
                output.display()
            );
            Ok(())
        }
        Some((index, ename, evalue, traceback)) => {
            eprintln!("{}", traceback.join("\n"));
            bail!(
                "cell {} of {} failed: {ename}: {evalue} (outputs so far written to {})",
                index + 1,
                path.display(),
                output.display()
            )
        }
    }
}

fn check_notebook(notebook: &Value, path: &Path) -> anyhow::Result<()> {
    if notebook["nbformat"].as_i64() != Some(4) {
        bail!(
            "{} is not an nbformat 4 notebook (nbformat is {})",
            path.display(),
            notebook["nbformat"]
        );
    }
    let cells = notebook["cells"]
        .as_array()
        .with_context(|| format!("{} has no `cells` list", path.display()))?;
    for (i, cell) in cells.iter().enumerate() {
        if !cell["cell_type"].is_string()
            || !(cell["source"].is_string() || cell["source"].is_array())
        {
            bail!(
                "cell {} of {} has no cell_type or source",
                i + 1,
                path.display()
            );
        }
    }
    Ok(())
}

/// A cell's source: nbformat allows one string or a list of lines.
fn source_text(source: &Value) -> String {
    match source {
        Value::String(s) => s.clone(),
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

/// Insert a cell that rebinds each overridden parameter after the `parameters` cell.
fn inject_parameters(notebook: &mut Value, parameters: &[(String, String)]) -> anyhow::Result<()> {
    if parameters.is_empty() {
        return Ok(());
    }
    let cells = notebook["cells"].as_array_mut().context("no cells")?;
    let at = cells
        .iter()
        .position(|c| {
            c["metadata"]["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|t| t == "parameters"))
        })
        .context("the notebook has no cell tagged `parameters` to override")?;
    let defaults = parse_parameters(&source_text(&cells[at]["source"]));
    let mut lines = vec!["// Parameters injected by `recipe exec -p`.".to_string()];
    for (name, value) in parameters {
        let Some((ty, default)) = defaults.get(name) else {
            bail!(
                "no parameter `{name}` in the parameters cell (it has: {})",
                defaults.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        let ty = if ty.is_empty() {
            String::new()
        } else {
            format!(": {ty}")
        };
        lines.push(format!(
            "let {name}{ty} = {};",
            literal_like(default, value)
        ));
    }
    let cell = json!({
        "cell_type": "code",
        "execution_count": null,
        "metadata": {"tags": ["injected-parameters"]},
        "outputs": [],
        "source": lines.join("\n"),
    });
    cells.insert(at + 1, cell);
    Ok(())
}

/// `let name[: type] = value;` lines of a parameters cell: name -> (type annotation or "",
/// default value's text).
fn parse_parameters(source: &str) -> BTreeMap<String, (String, String)> {
    let mut found = BTreeMap::new();
    for line in source.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("let ") else {
            continue;
        };
        let rest = rest.strip_prefix("mut ").unwrap_or(rest);
        let Some((left, right)) = rest.split_once('=') else {
            continue;
        };
        let (name, ty) = left.split_once(':').unwrap_or((left, ""));
        let name = name.trim();
        let value = right.split("//").next().unwrap_or(right);
        let value = value.trim().trim_end_matches(';').trim();
        if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            found.insert(name.to_string(), (ty.trim().to_string(), value.to_string()));
        }
    }
    found
}

/// `value` written as a literal of the same kind as `default`: a string stays a string, a
/// float stays a float.
fn literal_like(default: &str, value: &str) -> String {
    if default.starts_with('"') && !value.starts_with('"') {
        return format!("{value:?}");
    }
    let is_float = default.contains('.') || default.contains('e') && default.parse::<f64>().is_ok();
    if is_float && value.parse::<i64>().is_ok() {
        return format!("{value}.0");
    }
    value.to_string()
}

fn bundle_json(data: &BTreeMap<String, String>) -> Value {
    Value::Object(
        data.iter()
            .map(|(mime, content)| (mime.clone(), Value::String(content.clone())))
            .collect(),
    )
}

/// Outputs as nbformat wants them: streams merged, display updates applied by id.
#[derive(Default)]
struct CellOutputs {
    current: Vec<Value>,
    /// display_id -> where it was shown: (cell index, output index). Updates that target an
    /// earlier cell are applied when the notebook is written.
    shown: BTreeMap<String, Vec<(usize, usize)>>,
    late: Vec<(usize, usize, Value)>,
    cell: usize,
    clear_pending: bool,
}

impl CellOutputs {
    fn begin(&mut self, cell: usize) {
        self.cell = cell;
        self.current.clear();
        self.clear_pending = false;
    }

    fn take(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.current)
    }

    fn push(&mut self, io: Io) {
        if self.clear_pending && !matches!(io, Io::Clear { .. }) {
            self.current.clear();
            self.clear_pending = false;
        }
        match io {
            Io::Stream { name, text } => {
                if let Some(last) = self.current.last_mut() {
                    if last["output_type"] == "stream" && last["name"] == name.as_str() {
                        let joined = format!("{}{text}", last["text"].as_str().unwrap_or(""));
                        last["text"] = Value::String(joined);
                        return;
                    }
                }
                self.current
                    .push(json!({"output_type": "stream", "name": name, "text": text}));
            }
            Io::Display {
                data,
                display_id,
                update,
            } => {
                let output = json!({
                    "output_type": "display_data",
                    "data": bundle_json(&data),
                    "metadata": {},
                });
                if let (true, Some(id)) = (update, &display_id) {
                    for &(cell, index) in self.shown.get(id).into_iter().flatten() {
                        if cell == self.cell {
                            if let Some(slot) = self.current.get_mut(index) {
                                slot["data"] = output["data"].clone();
                            }
                        } else {
                            self.late.push((cell, index, output["data"].clone()));
                        }
                    }
                    return;
                }
                if let Some(id) = display_id {
                    self.shown
                        .entry(id)
                        .or_default()
                        .push((self.cell, self.current.len()));
                }
                self.current.push(output);
            }
            Io::Clear { wait } => {
                if wait {
                    self.clear_pending = true;
                } else {
                    self.current.clear();
                }
            }
            Io::Panic | Io::PanicReport { .. } | Io::Failed { .. } => {}
        }
    }

    fn apply_late_updates(&self, notebook: &mut Value) {
        for (cell, index, data) in &self.late {
            if let Some(slot) = notebook["cells"][*cell]["outputs"].get_mut(*index) {
                slot["data"] = data.clone();
            }
        }
    }
}

fn write_notebook(path: &Path, notebook: &Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("ipynb.tmp");
    let mut text = serde_json::to_string_pretty(notebook)?;
    text.push('\n');
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_keep_their_kind() {
        let defaults = parse_parameters(
            "let steps: usize = 1500;\nlet lr: f64 = 3e-4; // Adam\nlet data = \"digits\";",
        );
        assert_eq!(defaults["steps"], ("usize".to_string(), "1500".to_string()));
        assert_eq!(defaults["lr"].1, "3e-4");
        assert_eq!(literal_like(&defaults["lr"].1, "1"), "1.0");
        assert_eq!(
            literal_like(&defaults["data"].1, "fashion-mnist"),
            "\"fashion-mnist\""
        );
        assert_eq!(literal_like(&defaults["steps"].1, "20"), "20");
    }

    #[test]
    fn unknown_parameter_is_an_error() {
        let mut nb = json!({"nbformat": 4, "cells": [
            {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "let steps: usize = 10;", "outputs": []}
        ]});
        let err = inject_parameters(&mut nb, &[("stepz".into(), "3".into())]).unwrap_err();
        assert!(err.to_string().contains("it has: steps"), "{err}");
        inject_parameters(&mut nb, &[("steps".into(), "3".into())]).unwrap();
        assert_eq!(nb["cells"][1]["metadata"]["tags"][0], "injected-parameters");
        assert!(source_text(&nb["cells"][1]["source"]).contains("let steps: usize = 3;"));
    }

    #[test]
    fn streams_merge_and_updates_replace() {
        let mut out = CellOutputs::default();
        out.begin(0);
        out.push(Io::Stream {
            name: "stdout".into(),
            text: "a".into(),
        });
        out.push(Io::Stream {
            name: "stdout".into(),
            text: "b\n".into(),
        });
        let shown = |text: &str| Io::Display {
            data: BTreeMap::from([("text/plain".into(), text.into())]),
            display_id: Some("p".into()),
            update: false,
        };
        out.push(shown("10%"));
        out.push(Io::Display {
            data: BTreeMap::from([("text/plain".into(), "100%".into())]),
            display_id: Some("p".into()),
            update: true,
        });
        let cell = out.take();
        assert_eq!(cell.len(), 2);
        assert_eq!(cell[0]["text"], "ab\n");
        assert_eq!(cell[1]["data"]["text/plain"], "100%");
    }
}
