"""Warm spares: a kernel restart is served by a session started ahead of time, which starts
fresh, records its cells, and ends with the process Jupyter launched, however that ends;
`recipe spares` lists the waiting ones and stops them.

The other kernel tests run with spares off (conftest); these turn them on for their own
kernels only, each with its own archive (so its own launch environment)."""

import glob
import os
import re
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow.dataset as ds
from jupyter_client.manager import KernelManager

from conftest import recipe
from test_behaviour import result_text, run


def start(env):
    km = KernelManager(kernel_name="recipe")
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=300)
    return km, kc


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


def listed():
    """(pid, folder) of every spare `recipe spares` shows as waiting."""
    shown = recipe("spares")
    assert shown.returncode == 0, shown.stderr
    return [(int(pid), folder) for pid, folder in re.findall(r"spare (\d+) for (.+?), waiting", shown.stdout)]


def wait_for_spare(env, within=120):
    """The pid of this environment's spare once `recipe spares` shows it waiting here."""
    deadline = time.time() + within
    while time.time() < deadline:
        mine = [pid for pid, folder in listed() if folder == os.getcwd() and pid in spares_of(env)]
        if mine:
            return mine[0]
        time.sleep(0.2)
    raise AssertionError(f"no spare waiting within {within} s")


@contextmanager
def kernel(env, keep_spares=False):
    """A kernel of this environment; afterwards its channels close and, unless kept, every
    spare of the environment is killed (the test may have ended the kernel itself)."""
    km, kc = start(env)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)
        km.cleanup_resources()
        for pid in [] if keep_spares else spares_of(env):
            os.kill(pid, signal.SIGKILL)


def wait_until_running(kc, msg_id):
    """Wait until the cell sent as `msg_id` starts to run."""
    while True:
        message = kc.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "execute_input":
            return


def spare_env(tmp_path):
    """Spares on, and an archive (so a launch environment) of this test's own."""
    return dict(os.environ, RECIPE_SPARE="1", RECIPE_ARCHIVE=str(tmp_path / "runs"))


def test_a_restart_is_served_by_a_warm_spare(tmp_path):
    env = spare_env(tmp_path)
    # Jupyter tells each kernel its notebook; a spare serves any notebook of the folder.
    with kernel(dict(env, JPY_SESSION_NAME=str(tmp_path / "first.ipynb")), keep_spares=True) as (km, kc):
        reply, _ = run(kc, "let x: i32 = 5;")
        assert reply["status"] == "ok", reply
        # The first kernel starts a spare once its session has been idle a while.
        spare = wait_for_spare(env)
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        assert spare in spares_of(env), "the spare ended with the kernel that started it"

    with kernel(dict(env, JPY_SESSION_NAME=str(tmp_path / "second.ipynb"))) as (km, kc):
        launcher = km.provisioner.pid
        reply, outputs = run(kc, "std::os::unix::process::parent_id()")
        assert reply["status"] == "ok", reply
        # Cells run under the spare's session, not under the process Jupyter launched.
        server = int(result_text(outputs))
        assert server == spare and server != launcher
        # Claimed, it is no longer listed as waiting.
        assert spare not in [pid for pid, _ in listed()]
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
        # kill -9 of the launched process ends the spare serving it, and the cell it runs.
        reply, outputs = run(kc, "std::process::id()")
        cell_process = int(result_text(outputs))
        wait_until_running(kc, kc.execute("std::thread::sleep(std::time::Duration::from_secs(120));"))
        time.sleep(1)
        os.kill(launcher, signal.SIGKILL)
        assert gone(server, within=10), "the spare outlived the process Jupyter launched"
        assert gone(cell_process, within=10), "a running cell outlived its kernel"


def test_a_shutdown_reaches_jupyter_through_the_launched_process(tmp_path):
    env = spare_env(tmp_path)
    with kernel(env, keep_spares=True):
        wait_for_spare(env)
    with kernel(env) as (km, kc):
        launcher = km.provisioner.process
        reply, _ = run(kc, "1 + 1")
        assert reply["status"] == "ok", reply
        # A shutdown request ends the spare, which tells the launched process its exit code.
        kc.shutdown()
        launcher.wait(timeout=30)
        assert launcher.returncode == 0


def test_recipe_spares_stops_a_waiting_spare(tmp_path):
    env = spare_env(tmp_path)
    with kernel(env):
        spare = wait_for_spare(env)
        stopped = recipe("spares", "--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped spare {spare} for {os.getcwd()}" in stopped.stdout
        assert gone(spare, within=10)
        assert spare not in [pid for pid, _ in listed()]


def test_no_spare_starts_while_a_cell_runs(tmp_path):
    # A spare's start takes seconds of CPU; it waits until the kernel has been idle a while.
    env = spare_env(tmp_path)
    with kernel(env) as (km, kc):
        wait_until_running(kc, kc.execute("std::thread::sleep(std::time::Duration::from_secs(10));"))
        time.sleep(7)
        assert spares_of(env) == [], "a spare started while a cell was running"
        reply = kc.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
        wait_for_spare(env)
