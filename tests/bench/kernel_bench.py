"""The kernel benchmark: recipe's kernel against evcxr_jupyter 0.22, side by side, through
jupyter_client. Prints one row per measure with both medians and the ratio (evcxr / recipe:
above 1 means recipe is faster). Both kernels run the same cells for the shared rows (start,
`let x = 1;`, trivial cells); recipe's runtime rows come from a session of their own. recipe's
start rows are cold (warm spares off); the restart rows let the first kernel start a spare and
time the second launch.

Usage: kernel_bench.py --evcxr PATH_TO_evcxr_jupyter [--repeats N]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import KernelManager


def kernelspec(root: Path, name: str, argv: list[str], env: dict) -> None:
    folder = root / "kernels" / name
    folder.mkdir(parents=True)
    spec = {"argv": argv, "display_name": name, "language": "rust", "env": env}
    (folder / "kernel.json").write_text(json.dumps(spec))


def timed_execute(kc, code: str, timeout: float = 900) -> float:
    started = time.perf_counter()
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: None)
    elapsed = time.perf_counter() - started
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"{code!r} failed: {reply['content']}")
    return elapsed


def start(name: str, env: dict | None):
    started = time.perf_counter()
    km = KernelManager(kernel_name=name)
    km.start_kernel(env=env or dict(os.environ))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=600)
    return km, kc, started


def session(name: str, trivial_repeats: int, env: dict | None = None) -> dict:
    """The same cells on both kernels: start, an empty cell (its result is when the kernel can
    run cells: recipe answers kernel_info before its session is up), a first `let`, then
    trivial cells."""
    km, kc, started = start(name, env)
    row = {"start to ready": time.perf_counter() - started}
    try:
        timed_execute(kc, "()")
        row["start to first cell result"] = time.perf_counter() - started
        row["first let"] = timed_execute(kc, "let x = 1;")
        row["trivial cell"] = statistics.median(timed_execute(kc, "1 + 2") for _ in range(trivial_repeats))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return row


def runtime_session(name: str, runtime_cell: str, repeats: int, env: dict) -> dict:
    """recipe only (evcxr_jupyter needs a `:dep` build of the runtime): a cold start to the
    first runtime result, then cells using the runtime's types."""
    km, kc, started = start(name, env)
    try:
        timed_execute(kc, runtime_cell)
        row = {"first runtime result after start": time.perf_counter() - started}
        row["cell using runtime types"] = statistics.median(
            timed_execute(kc, "d.summary()?") for _ in range(repeats)
        )
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return row


def waiting_spares(recipe: str) -> set[str]:
    """Pids of the spares `recipe spares` shows waiting for this folder."""
    shown = subprocess.run([recipe, "spares"], capture_output=True, text=True, check=True).stdout
    return {line.split()[1] for line in shown.splitlines() if f" for {os.getcwd()}," in line}


def restart(name: str, runtime_cell: str, recipe: str) -> dict:
    """A kernel restart with warm spares on: the first kernel starts a spare once its session
    is up; the second launch (same folder and environment) is timed."""
    env = dict(os.environ, RECIPE_SPARE="1")
    before = waiting_spares(recipe)
    km = KernelManager(kernel_name=name)
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=600)
    timed_execute(kc, "1 + 2")
    deadline = time.time() + 120
    while time.time() < deadline and not waiting_spares(recipe) - before:
        time.sleep(0.1)
    kc.stop_channels()
    km.shutdown_kernel(now=False)
    started = time.perf_counter()
    km = KernelManager(kernel_name=name)
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=600)
    row = {"restart to ready (warm spare)": time.perf_counter() - started}
    try:
        timed_execute(kc, "()")
        row["restart to first cell result (warm spare)"] = time.perf_counter() - started
        timed_execute(kc, runtime_cell)
        row["restart to first runtime result (warm spare)"] = time.perf_counter() - started
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    # The restarted kernel starts the next spare after a few seconds; do not leave it behind.
    time.sleep(4)
    for pid in spare_pids():
        os.kill(pid, 9)
    return row


def spare_pids() -> list[int]:
    """Spares started by this benchmark's kernels (found by their JUPYTER_PATH)."""
    marker = f"JUPYTER_PATH={os.environ['JUPYTER_PATH']}".encode()
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"kernel\0--spare" in cmdline.read_bytes():
                if marker in cmdline.with_name("environ").read_bytes().split(b"\0"):
                    found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evcxr", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="recipe-kernel-bench-"))
    recipe_spec = Path(os.environ["RECIPE_KERNELSPEC"])
    spec = json.loads((recipe_spec / "kernel.json").read_text())
    kernelspec(root, "bench-recipe", spec["argv"], spec.get("env", {}))
    kernelspec(root, "bench-evcxr", [args.evcxr, "--control_file", "{connection_file}"], {})
    os.environ["JUPYTER_PATH"] = str(root)

    rows = {"recipe": [], "evcxr": []}
    runtime_cell = "let d = Dataset::digits()?; d.summary()?"
    cold = dict(os.environ, RECIPE_SPARE="0")
    for _ in range(args.repeats):
        rows["recipe"].append(session("bench-recipe", 5, cold))
        rows["recipe"].append(runtime_session("bench-recipe", runtime_cell, 5, cold))
        rows["recipe"].append(restart("bench-recipe", runtime_cell, spec["argv"][0]))
        evcxr = session("bench-evcxr", 5)
        # A restart of evcxr_jupyter is a start.
        evcxr["restart to ready (warm spare)"] = evcxr["start to ready"]
        evcxr["restart to first cell result (warm spare)"] = evcxr["start to first cell result"]
        rows["evcxr"].append(evcxr)

    print(f"kernel benchmark, medians of {args.repeats} sessions (trivial cells: median of 5 each)")
    print(f"{'measure':<46} {'recipe s':>10} {'evcxr_jupyter s':>16} {'evcxr/recipe':>13}")
    measures = [
        "start to ready",
        "start to first cell result",
        "first let",
        "trivial cell",
        "first runtime result after start",
        "cell using runtime types",
        "restart to ready (warm spare)",
        "restart to first cell result (warm spare)",
        "restart to first runtime result (warm spare)",
    ]
    for measure in measures:
        ours = [r[measure] for r in rows["recipe"] if measure in r]
        theirs = [r[measure] for r in rows["evcxr"] if measure in r]
        a = statistics.median(ours) if ours else None
        b = statistics.median(theirs) if theirs else None
        ratio = f"{b / a:.2f}x" if a and b else "-"
        fmt = lambda v: f"{v:.3f}" if v is not None else "(needs :dep)"
        print(f"{measure:<46} {fmt(a):>10} {fmt(b):>16} {ratio:>13}")


if __name__ == "__main__":
    main()
