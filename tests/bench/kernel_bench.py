"""The kernel benchmark: recipe's kernel against evcxr_jupyter 0.22, side by side, through
jupyter_client. Prints one row per measure with both medians and the ratio (evcxr / recipe:
above 1 means recipe is faster).

Usage: kernel_bench.py --evcxr PATH_TO_evcxr_jupyter [--repeats N]
"""

import argparse
import json
import os
import statistics
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


def session(name: str, runtime_cell: str | None, trivial_repeats: int) -> dict:
    started = time.perf_counter()
    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=600)
    row = {"start to ready": time.perf_counter() - started}
    try:
        if runtime_cell:
            row["first runtime result after start"] = row["start to ready"] + timed_execute(kc, runtime_cell)
        row["first let"] = timed_execute(kc, "let x = 1;")
        row["trivial cell"] = statistics.median(timed_execute(kc, "1 + 2") for _ in range(trivial_repeats))
        if runtime_cell:
            row["cell using runtime types"] = statistics.median(
                timed_execute(kc, "d.summary()?") for _ in range(trivial_repeats)
            )
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return row


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
    for _ in range(args.repeats):
        rows["recipe"].append(session("bench-recipe", "let d = Dataset::digits()?; d.summary()?", 5))
        rows["evcxr"].append(session("bench-evcxr", None, 5))

    print(f"kernel benchmark, medians of {args.repeats} sessions (trivial cells: median of 5 each)")
    print(f"{'measure':<36} {'recipe s':>10} {'evcxr_jupyter s':>16} {'evcxr/recipe':>13}")
    for measure in ["start to ready", "first let", "trivial cell", "first runtime result after start", "cell using runtime types"]:
        ours = [r[measure] for r in rows["recipe"] if measure in r]
        theirs = [r[measure] for r in rows["evcxr"] if measure in r]
        a = statistics.median(ours) if ours else None
        b = statistics.median(theirs) if theirs else None
        ratio = f"{b / a:.2f}x" if a and b else "-"
        fmt = lambda v: f"{v:.3f}" if v is not None else "(needs :dep)"
        print(f"{measure:<36} {fmt(a):>10} {fmt(b):>16} {ratio:>13}")


if __name__ == "__main__":
    main()
