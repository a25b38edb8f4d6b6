"""The MLflow side of recipe's archive benchmark: the same workload on MLflow's default
local tracking store, through its client API (log_batch, the fastest way it offers to log).

Usage: python mlflow_bench.py DIR RUNS STEPS
Prints one JSON object: seconds per phase (median of 5 for the read phases) and peak RSS
in MiB.
"""
import json
import os
import resource
import sys
import time

root, runs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.chdir(root)
os.environ.setdefault("MLFLOW_TRACKING_URI", "")  # the default store
import mlflow  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

client = MlflowClient()
experiment = client.create_experiment("bench")
timings = {}

t0 = time.perf_counter()
run_ids = []
for r in range(runs):
    run = client.create_run(experiment, run_name=f"run-{r}")
    run_id = run.info.run_id
    run_ids.append(run_id)
    lr = [0.1, 0.01, 0.001][r % 3]
    client.log_batch(run_id, params=[Param("lr", str(lr)), Param("seed", str(r))])
    batch = []
    now = int(time.time() * 1000)
    for step in range(steps):
        loss = 1.0 / (1 + step * lr) + (r % 7) * 1e-3
        for name, value in (("loss", loss), ("acc", 1 - loss), ("lr", lr)):
            batch.append(Metric(name, value, now, step))
        if len(batch) >= 999:
            client.log_batch(run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id, "FINISHED")
timings["log"] = time.perf_counter() - t0

REPEATS = 11  # as on recipe's side


def median_of(f):
    """Median wall time of REPEATS calls, and the last result (a fresh client each time). The
    previous result is freed after the clock stops (the recipe side does the same)."""
    times, result = [], None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        value = f(MlflowClient())
        times.append(time.perf_counter() - t0)
        result = value
    return sorted(times)[len(times) // 2], result


t0 = time.perf_counter()
first = MlflowClient().search_runs([experiment], max_results=50000)
timings["first list"] = time.perf_counter() - t0
assert len(first) == runs, len(first)
del first

timings["list"], listed = median_of(lambda c: c.search_runs([experiment], max_results=50000))
assert len(listed) == runs, len(listed)

timings["filter"], found = median_of(lambda c: c.search_runs(
    [experiment], filter_string="params.lr = '0.01' and metrics.loss < 0.5", max_results=50000))


def diff(c):
    a, b = run_ids[0], run_ids[1]
    curves = {}
    for run_id in (a, b):
        c.get_run(run_id)
        curves[run_id] = {m: c.get_metric_history(run_id, m) for m in ("loss", "acc", "lr")}
    return {m: max(abs(x.value - y.value) for x, y in zip(curves[a][m], curves[b][m])) for m in ("loss", "acc", "lr")}


timings["diff"], _ = median_of(diff)

print(json.dumps({
    "timings": timings,
    "filter_matches": len(found),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "mlflow": mlflow.__version__,
    "tracking_uri": mlflow.get_tracking_uri(),
}))
