"""The Python side of recipe's table benchmark: pandas.read_csv or pyarrow.csv.read_csv on
the file bench-table wrote, each with its defaults (pyarrow reads with threads, pandas with
its C parser), three times.

Usage: python table_bench.py pandas|pyarrow PATH
Prints one JSON object: the seconds of each load, the rows read, the library's version and
peak RSS in MiB.
"""
import json
import resource
import sys
import time

side, path = sys.argv[1], sys.argv[2]
if side == "pandas":
    import pandas as library

    def load():
        return len(library.read_csv(path))
elif side == "pyarrow":
    import pyarrow as library
    import pyarrow.csv

    def load():
        return pyarrow.csv.read_csv(path).num_rows
else:
    sys.exit(f"unknown side {side}: pandas or pyarrow")

seconds = []
for _ in range(3):
    start = time.perf_counter()
    rows = load()
    seconds.append(time.perf_counter() - start)

print(json.dumps({
    "seconds": seconds,
    "rows": rows,
    "version": library.__version__,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
