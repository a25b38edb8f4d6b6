"""Warm spares: a kernel restart is served by a session started ahead of time, which starts
fresh, records its cells, and ends with the process Jupyter launched, however that ends.

The other kernel tests run with spares off (conftest); this one turns them on for its own
kernels only."""

import glob
import os
import signal
import time
from pathlib import Path

import pyarrow.dataset as ds
from jupyter_client.manager import KernelManager

from conftest import recipe
from test_behaviour import result_text, run

SPARES = Path(f"/tmp/recipe-spares-{os.getuid()}")


def start(env):
    km = KernelManager(kernel_name="recipe")
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=300)
    return km, kc


def sockets():
    return set(glob.glob(str(SPARES / "*.sock")))


def gone(pid, within):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def spares_of(env):
    """Pids of spare processes started with this test's environment."""
    marker = f"RECIPE_ARCHIVE={env['RECIPE_ARCHIVE']}".encode()
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            if b"--spare" not in Path(cmdline).read_bytes():
                continue
            environ = Path(cmdline).with_name("environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(Path(cmdline).parent.name))
    return found


def test_a_restart_is_served_by_a_warm_spare(tmp_path):
    env = dict(os.environ, RECIPE_SPARE="1", RECIPE_ARCHIVE=str(tmp_path / "runs"))
    before = sockets()
    # Jupyter tells each kernel its notebook; a spare serves any notebook of the folder.
    km, kc = start(dict(env, JPY_SESSION_NAME=str(tmp_path / "first.ipynb")))
    try:
        reply, _ = run(kc, "let x: i32 = 5;")
        assert reply["status"] == "ok", reply
        # The first kernel starts a spare once its session is up.
        deadline = time.time() + 120
        while time.time() < deadline and not (sockets() - before):
            time.sleep(0.2)
        assert sockets() - before, "no spare appeared within 120 s"
        # `recipe spares` shows it: its process, the folder it serves, its memory.
        listed = recipe("spares")
        assert listed.returncode == 0, listed.stderr
        mine = [pid for pid in spares_of(env) if f"spare {pid} for {os.getcwd()}," in listed.stdout]
        assert mine, listed.stdout
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)

    km, kc = start(dict(env, JPY_SESSION_NAME=str(tmp_path / "second.ipynb")))
    launcher = km.provisioner.pid
    try:
        reply, outputs = run(kc, "std::os::unix::process::parent_id()")
        assert reply["status"] == "ok", reply
        # Cells run under the spare's session, not under the process Jupyter launched.
        server = int(result_text(outputs))
        assert server != launcher
        assert server in spares_of(env)
        # A fresh session: the first kernel's variable is not there, the count starts at 1.
        assert reply["execution_count"] == 1
        reply, outputs = run(kc, "x")
        assert reply["status"] == "error"
        assert "cannot find value `x`" in reply["evalue"]
        reply, outputs = run(kc, "Dataset::digits()?.summary()?")
        assert reply["status"] == "ok", reply
        # Its cells are recorded in the archive of this launch.
        cells = ds.dataset(tmp_path / "runs" / "cells", format="parquet", partitioning="hive")
        codes = cells.to_table(columns=["code"]).column("code").to_pylist()
        assert "std::os::unix::process::parent_id()" in codes
        # kill -9 of the launched process ends the spare serving it.
        os.kill(launcher, signal.SIGKILL)
        assert gone(server, within=10), "the spare outlived the process Jupyter launched"
    finally:
        kc.stop_channels()
        km.cleanup_resources()
        for pid in spares_of(env):
            os.kill(pid, signal.SIGKILL)
