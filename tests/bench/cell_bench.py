"""The same training run from a notebook cell (recipe's kernel, through jupyter_client) and
from the release binary (`recipe train`), side by side: the median training time of each
(the run's own `train_seconds`, from the archive), their ratio, and whether both runs
reached the same test loss, bit for bit.

Usage: cell_bench.py --recipe PATH_TO_recipe [--repeats N] [--steps N]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from jupyter_client.manager import KernelManager

from kernel_bench import kernelspec, timed_execute

MODELS = {
    "mlp-256": ('{"kind":"mlp","hidden":[256]}', "ModelSpec::Mlp { hidden: vec![256] }"),
    "convnet-32-64": (
        '{"kind":"conv_net","channels":[32,64],"hidden":128}',
        "ModelSpec::ConvNet { channels: [32, 64], hidden: 128 }",
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="recipe-cell-bench-"))
    archive = root / "runs"
    spec = json.loads((Path(os.environ["RECIPE_KERNELSPEC"]) / "kernel.json").read_text())
    kernelspec(root, "bench-recipe", spec["argv"], {**spec.get("env", {}), "RECIPE_ARCHIVE": str(archive)})
    os.environ["JUPYTER_PATH"] = str(root)

    km = KernelManager(kernel_name="bench-recipe")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=600)
    try:
        timed_execute(kc, "let data = Dataset::digits()?;")
        for _ in range(args.repeats):
            for name, (json_spec, rust_spec) in MODELS.items():
                config = f'{{"steps":{args.steps},"eval_every":{args.steps},"model":{json_spec}}}'
                subprocess.run(
                    [args.recipe, "train", "--data", "digits", "--config", config,
                     "--name", f"binary {name}", "--archive", str(archive), "--quiet"],
                    check=True, stdout=subprocess.DEVNULL,
                )
                timed_execute(kc, (
                    f"let config = TrainConfig {{ steps: {args.steps}, eval_every: {args.steps}, "
                    f"model: {rust_spec}, ..TrainConfig::default() }};\n"
                    f'fit(&data, &config, &Seeds::all(0), &RunOptions::named("cell {name}")?.quiet())?;'
                ))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    runs = json.loads(subprocess.run(
        [args.recipe, "runs", "list", "--archive", str(archive), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout)
    print(f"training from a notebook cell against the release binary: digits, {args.steps} steps, "
          f"batch 64, medians of {args.repeats}")
    print(f"{'model':<16} {'binary s':>9} {'cell s':>9} {'cell/binary':>12}  same test loss")
    for name in MODELS:
        of = lambda where: [r for r in runs if r["name"] == f"{where} {name}"]
        binary, cell = of("binary"), of("cell")
        b = statistics.median(r["summary"]["train_seconds"] for r in binary)
        c = statistics.median(r["summary"]["train_seconds"] for r in cell)
        same = {r["summary"]["test_loss"] for r in binary} == {r["summary"]["test_loss"] for r in cell}
        print(f"{name:<16} {b:>9.3f} {c:>9.3f} {c / b:>11.2f}x  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
