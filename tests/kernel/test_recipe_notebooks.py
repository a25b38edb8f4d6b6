"""The eleven recipe notebooks, executed by nbclient through the installed kernel with small
settings, twice: the second pass must reproduce every run bit for bit."""

import json
import re
from pathlib import Path

import nbformat
import pyarrow.dataset as ds
import pytest
from nbclient import NotebookClient

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
SMALL = {"data_name": '"digits"', "steps": "60", "trials": "3", "seeds_n": "3"}


def with_small_parameters(path: Path):
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for name, value in SMALL.items():
        cell.source = re.sub(rf"let {name}(: \w+)? = [^;]+;", rf"let {name}\1 = {value};", cell.source)
    return nb


def execute_all():
    executed = []
    for path in NOTEBOOKS:
        nb = with_small_parameters(path)
        NotebookClient(nb, kernel_name="recipe", timeout=600, startup_timeout=300).execute()
        executed.append(nb)
    return executed


def runs(archive):
    if not (archive / "runs").exists():
        return []
    return ds.dataset(str(archive / "runs"), format="parquet", partitioning="hive").to_table().to_pylist()


@pytest.fixture(scope="module")
def executed_twice(archive):
    before = {(r["run_id"], r["attempt"]) for r in runs(archive)}
    first = execute_all()
    after_first = [r for r in runs(archive) if (r["run_id"], r["attempt"]) not in before]
    second = execute_all()
    return first, after_first, second, runs(archive)


def test_there_are_eleven_notebooks_with_parameters_cells():
    assert len(NOTEBOOKS) == 11
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path.name


def test_every_notebook_runs_without_errors(executed_twice):
    first, _, second, _ = executed_twice
    for nb in first + second:
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                assert output["output_type"] != "error", output


def test_the_archive_holds_the_recipe_runs_with_their_checks(executed_twice):
    _, rows, _, _ = executed_twice
    by_step = {}
    for r in rows:
        by_step.setdefault(r["recipe_step"], set()).add(r["name"])
    assert {"input-independent", "skeleton"} <= by_step["baselines"]
    assert {"mlp-64", "mlp-256", "convnet"} <= by_step["overfit"]
    assert {"reg-none", "reg-dropout", "reg-weight-decay", "reg-augment", "reg-early-stopping"} <= by_step["regularize"]
    assert "tune" in by_step and "squeeze" in by_step and "paper" in by_step
    # Notebook 9: a net of the notebook's own through fit, and the same net in a tracked loop.
    assert {"zoo-mlp-64", "gelu-mlp"} <= by_step["your-own-model"]
    gelu = [r for r in rows if r["name"] == "gelu-mlp"][0]
    assert '"kind":"custom"' in gelu["config"] and '"name":"gelu-mlp"' in gelu["config"], gelu["config"]
    assert "loss_at_init" in gelu["checks"]
    loop = [r for r in rows if r["name"] == "candle-loop"]
    assert len(loop) == 1 and loop[0]["status"] == "completed" and loop[0]["session_id"], loop
    # Notebook 11: the embedded penguins table, two data choices diffed, above its baseline.
    assert {"penguins-zero-inputs", "penguins-filled", "penguins-dropped-rows"} <= by_step["your-table"]
    table_run = {r["name"]: r for r in rows if r["recipe_step"] == "your-table"}
    assert '"fill":"mean"' in table_run["penguins-filled"]["data"]
    assert '"drop_missing_rows":true' in table_run["penguins-dropped-rows"]["data"]
    accuracy = lambda name: json.loads(table_run[name]["summary"])["test_acc"]
    assert accuracy("penguins-filled") > accuracy("penguins-zero-inputs") + 0.2
    # Notebook 10: text. The GPT beats the bigram, archives its samples, and the planted
    # look-ahead's loss is the too-good number the causality check warns of.
    assert {"bigram", "gpt", "gpt-looks-ahead"} <= by_step["text"]
    text_run = {r["name"]: r for r in rows if r["recipe_step"] == "text"}
    bits = lambda name: json.loads(text_run[name]["summary"])["test_bpt"]
    assert bits("gpt-looks-ahead") < bits("bigram")
    assert '"kind":"gpt"' in text_run["gpt"]["config"] and '"kind":"shakespeare"' in text_run["gpt"]["data"]
    assert "samples" in text_run["gpt"]["artifacts"], text_run["gpt"]["artifacts"]
    skeleton = [r for r in rows if r["name"] == "skeleton"][0]
    assert "loss_at_init" in skeleton["checks"]
    mlp256 = [r for r in rows if r["name"] == "mlp-256"][0]
    mlp64 = [r for r in rows if r["name"] == "mlp-64"][0]
    assert mlp256["parent_run"].startswith(mlp64["run_id"])


def test_a_second_execution_reproduces_every_run_bit_for_bit(executed_twice):
    _, first_rows, _, rows = executed_twice
    first_ids = {r["run_id"] for r in first_rows}
    assert first_ids and all(r["attempt"] == 1 for r in first_rows)
    replicas = [r for r in rows if r["attempt"] == 2 and r["run_id"] in first_ids]
    assert {r["run_id"] for r in replicas} == first_ids, "the second pass made runs with other ids"
    assert all(r["reproduced"] for r in replicas), [r["name"] for r in replicas if not r["reproduced"]]


def test_the_executed_notebooks_render_to_html_with_tables_and_plots(executed_twice):
    from nbconvert import HTMLExporter

    first, _, _, _ = executed_twice
    pages = {path.stem: HTMLExporter().from_notebook_node(nb)[0] for path, nb in zip(NOTEBOOKS, first)}
    for name, page in pages.items():
        assert "Hypothesis" in page, name
    assert "<svg" in pages["03-overfit"] and "<table" in pages["04-regularize"]
    assert "booktabs" in pages["08-export-for-paper"] or "toprule" in pages["08-export-for-paper"]
    assert ">FAIL</b> <b>causality</b>" in pages["10-text"] and "reproduced bit for bit" in pages["10-text"]
    # The checklist comes from the runtime: the dropout the notebook varied, the seeds it used.
    assert "hyperparameters varied" in pages["08-export-for-paper"]
    assert "dropout 0 / 0.2" in pages["08-export-for-paper"]
    assert "1, 2, 3, one per run" in pages["08-export-for-paper"]


def test_every_rich_output_has_text_beside_its_html_and_notebooks_stay_small(executed_twice):
    # A console client, nbconvert to markdown or a terminal reader sees the text.
    first, _, _, _ = executed_twice
    for path, nb in zip(NOTEBOOKS, first):
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if "text/html" in data:
                    assert data.get("text/plain", "").strip(), (path.name, cell.source[:80])
        size = len(nbformat.writes(nb).encode())
        assert size < 400_000, f"{path.name} is {size} bytes executed"
