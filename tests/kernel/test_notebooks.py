"""Notebooks run headless by `recipe exec` and by nbclient through the installed kernel."""

import json
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from conftest import recipe


def notebook(tmp_path, cells, name="nb.ipynb"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "recipe", "display_name": "Rust (recipe)", "language": "rust"}
    for source, tags in cells:
        cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


TRAIN = [
    ('let steps: usize = 1000;\nlet name = "default-name";', ["parameters"]),
    ("let d = Dataset::digits()?;\nlet mut c = TrainConfig::default();\nc.steps = steps;\nc.eval_every = steps;", None),
    ("let t = fit(&d, &c, &Seeds::all(5), &RunOptions::named(name)?.quiet())?;\nt.config.steps", None),
]


def test_exec_overrides_parameters_and_writes_outputs(tmp_path, archive):
    path = notebook(tmp_path, TRAIN)
    out = tmp_path / "out.ipynb"
    done = recipe("exec", str(path), "-p", "steps=7", "-p", "name=exec-run", "-o", str(out))
    assert done.returncode == 0, done.stderr
    nb = nbformat.read(out, as_version=4)
    assert nb.cells[1].metadata["tags"] == ["injected-parameters"]
    assert "let steps: usize = 7;" in nb.cells[1].source
    assert nb.cells[-1].outputs[-1]["data"]["text/plain"].strip() == "7"
    assert [c.execution_count for c in nb.cells] == [1, 2, 3, 4]
    listed = json.loads(recipe("runs", "list", "--json", "--archive", str(archive)).stdout)
    assert any(r["name"] == "exec-run" and r["status"] == "completed" for r in listed)


def test_exec_takes_a_relative_runtime_path(tmp_path):
    runtime = Path(os.environ["RECIPE_RUNTIME"])
    path = notebook(tmp_path, [("Dataset::digits()?.classes().len()", None)])
    env = {**os.environ, "RECIPE_RUNTIME": os.path.relpath(runtime, runtime.parent.parent)}
    done = recipe("exec", str(path), cwd=runtime.parent.parent, env=env)
    assert done.returncode == 0, done.stderr
    assert nbformat.read(path, as_version=4).cells[0].outputs[-1]["data"]["text/plain"].strip() == "10"


def test_a_cell_result_compiles_once_and_keeps_its_kind(tmp_path):
    # evcxr builds a cell ending in an expression twice when `.evcxr_display()` does not
    # compile; the prelude's DebugResult makes it compile for every Debug value, while the
    # runtime's own values keep their HTML.
    path = notebook(tmp_path, [("1 + 2", None), ("Dataset::digits()?.summary()?", None)])
    done = recipe("exec", str(path), env={**os.environ, "RECIPE_TIMING": "1"})
    assert done.returncode == 0, done.stderr
    assert "Final compile" in done.stderr and "Fallback" not in done.stderr
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].outputs[-1]["data"] == {"text/plain": "3"}
    assert "text/html" in cells[1].outputs[-1]["data"]


def test_exec_fails_on_the_failing_cell_and_keeps_earlier_outputs(tmp_path):
    path = notebook(tmp_path, [('println!("before");', None), ('let x: u8 = "no";', None), ("1", None)])
    done = recipe("exec", str(path))
    assert done.returncode != 0
    assert "cell 2" in done.stderr and "mismatched types" in done.stderr
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].outputs[0]["text"] == "before\n"
    assert nb.cells[1].outputs[0]["output_type"] == "error"
    assert nb.cells[2].outputs == []


def test_exec_explains_bad_input(tmp_path):
    missing = recipe("exec", str(tmp_path / "missing.ipynb"))
    assert missing.returncode != 0 and "read the notebook" in missing.stderr
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json")
    done = recipe("exec", str(broken))
    assert done.returncode != 0 and "not a notebook" in done.stderr
    unknown = recipe("exec", str(notebook(tmp_path, TRAIN)), "-p", "stepz=3")
    assert unknown.returncode != 0 and "no parameter `stepz`" in unknown.stderr


def test_nbclient_runs_a_notebook_through_the_kernel(tmp_path):
    path = notebook(tmp_path, [
        ('let name = "nbclient-run";\nlet steps: usize = 6;', ["parameters"]),
        *TRAIN[1:],
        ("t", None),
    ])
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="recipe", timeout=300, startup_timeout=300).execute()
    assert nb.cells[2].outputs[-1]["data"]["text/plain"].strip() == "6"
    assert "text/html" in nb.cells[3].outputs[-1]["data"]
