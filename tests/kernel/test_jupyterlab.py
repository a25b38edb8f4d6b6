"""The kernel as a person meets it: JupyterLab in Chromium, driven by Playwright.

A notebook is opened in JupyterLab, its cells run one after another with Shift+Enter, and the
page is read as a person reads it: the live progress line counts steps while the training
cell runs, the loss plot is drawn with its ticks, and Stop stops the queued cells too.
Screenshots go to $RECIPE_SCREENSHOTS when it is set.

Skipped, saying why, where Debian's chromium or the Python packages are not installed.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install jupyterlab)")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

TOKEN = "recipe-test-token"
CELLS = [
    "let data = Dataset::digits()?;",
    'let config = TrainConfig { steps: 30_000, eval_every: 3000, ..TrainConfig::default() };\n'
    'let trained = fit(&data, &config, &Seeds::all(1), &RunOptions::named("lab-run")?)?;',
    'curves(&Archive::open(Archive::default_root())?, &Runs::of_trained([&trained])?, "train_loss")?',
    # Run and stopped in part 3, with a cell queued behind it.
    'let long = fit(&data, &TrainConfig { steps: 1_000_000, ..config.clone() }, &Seeds::all(2), '
    '&RunOptions::named("lab-long")?)?;',
    'println!("the queued cell ran");',
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    notebook = {
        "cells": [
            {"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
             "outputs": [], "source": source}
            for i, source in enumerate(CELLS)
        ],
        "metadata": {"kernelspec": {"name": "recipe", "display_name": "Rust (recipe)", "language": "rust"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / "lab.ipynb").write_text(json.dumps(notebook))
    port = free_port()
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"JupyterLab did not start in 60 s: {(root / 'lab.log').read_text()[-2000:]}")
    yield url
    server.terminate()
    server.wait(timeout=30)


def screenshot(page, name):
    folder = os.environ.get("RECIPE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_a_notebook_in_jupyterlab_shows_live_progress_a_plot_and_stop_stops_it(lab):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(f"{lab}/lab/tree/lab.ipynb?token={TOKEN}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        # The kernel is named in the toolbar once it is up.
        page.wait_for_selector("text=Rust (recipe)", timeout=120_000)
        cells = page.locator(".jp-Notebook .jp-Cell")
        cells.nth(0).click()
        for _ in range(3):
            page.keyboard.press("Shift+Enter")

        # 1. While the training cell runs, its progress line counts steps in place.
        progress = cells.nth(1).locator(".jp-OutputArea-output", has_text="lab-run step")
        progress.first.wait_for(timeout=300_000)
        seen = set()
        deadline = time.time() + 120
        while time.time() < deadline and len(seen) < 3:
            text = progress.first.inner_text()
            seen.update(re.findall(r"step (\d+)/30000", text))
            time.sleep(0.3)
        assert len(seen) >= 2, f"the progress line did not move: {seen}"
        screenshot(page, "1-training")

        # 2. The plot of the finished run: an SVG with ticks and a legend naming the run.
        plot = cells.nth(2).locator(".jp-OutputArea-output svg")
        plot.first.wait_for(timeout=300_000)
        svg = plot.first.inner_html()
        assert "lab-run (" in svg and svg.count("<line") >= 6, svg[:400]
        progress_text = progress.first.inner_text()
        assert "step 30000/30000" in progress_text, progress_text
        screenshot(page, "2-plot")

        # 3. Stop during a long cell: the cell says where it stopped, the queued one never runs.
        page.keyboard.press("Shift+Enter")  # cell 4 trains for a long time
        page.keyboard.press("Shift+Enter")  # cell 5 waits behind it
        long_progress = cells.nth(3).locator(".jp-OutputArea-output", has_text="lab-long step")
        long_progress.first.wait_for(timeout=120_000)
        time.sleep(2)
        page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").click()
        page.locator(".lm-Menu-itemLabel", has_text="Interrupt Kernel").click()
        stopped = cells.nth(3).locator(".jp-OutputArea-output", has_text="archived as interrupted")
        stopped.first.wait_for(timeout=60_000)
        said = re.search(r"lab-long interrupted at step (\d+) of 1000000", stopped.first.inner_text())
        assert said, stopped.first.inner_text()
        assert f"lab-long step {said[1]}/1000000" in long_progress.first.inner_text()
        time.sleep(2)
        screenshot(page, "3-stopped")
        # The queued cell was sent and answered (its prompt has a number, not `*` or blank)
        # but aborted: it has no output.
        prompt = cells.nth(4).locator(".jp-InputPrompt").inner_text()
        assert re.fullmatch(r"\[\d+\]:", prompt.strip()), prompt
        assert cells.nth(4).locator(".jp-OutputArea-output").count() == 0
        browser.close()
