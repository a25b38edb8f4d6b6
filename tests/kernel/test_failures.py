"""Issue 21, part 1: a cell that fails is a failed cell, whichever way it fails: an error
reply over the protocol, an aborted queue, a non-zero `recipe exec`, a `failed` row in the
`cells` table. Panics are one short error pointing at the cell's line."""

import os

import nbformat
import pyarrow.dataset as ds
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import recipe
from test_behaviour import result_text, run
from test_notebooks import notebook


@pytest.fixture(scope="module")
def kernel():
    # As a user starts it: without RUST_BACKTRACE (the shell running the tests may set it).
    env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    km, kc = start_new_kernel(kernel_name="recipe", startup_timeout=300, env=env)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def streams(outputs):
    return "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")


def errors(outputs):
    return [m["content"] for m in outputs if m["msg_type"] == "error"]


def test_issue_21_a_question_mark_error_is_an_error_reply_shown_once(kernel):
    _, kc = kernel
    reply, outputs = run(kc, 'let kept = 1;\nlet v: i32 = "abc".parse()?;\nv')
    assert reply["status"] == "error", reply
    assert reply["ename"] == "Error"
    assert reply["evalue"] == "invalid digit found in string"
    assert "invalid digit" in reply["traceback"][0]
    assert len(errors(outputs)) == 1
    assert "invalid digit" not in streams(outputs), "the error was also printed as a stream"


def test_issue_21_an_io_error_and_a_runtime_error_keep_their_messages(kernel):
    _, kc = kernel
    reply, _ = run(kc, 'std::fs::read("/nonexistent")?;')
    assert reply["status"] == "error" and "No such file or directory" in reply["evalue"], reply
    reply, _ = run(kc, 'let d = Dataset::from_csv("/nonexistent/table.csv")?;')
    assert reply["status"] == "error", reply
    assert "/nonexistent/table.csv" in reply["evalue"], reply["evalue"]


def test_issue_21_what_the_cell_printed_before_failing_stays_in_its_stream(kernel):
    _, kc = kernel
    code = 'println!("first");\neprintln!("a warning");\nstd::thread::sleep(std::time::Duration::from_millis(300));\nlet v: u8 = "300".parse()?;'
    reply, outputs = run(kc, code)
    assert reply["status"] == "error"
    assert reply["evalue"] == "number too large to fit in target type"
    text = streams(outputs)
    assert "first" in text and "a warning" in text


def test_issue_21_stop_on_error_aborts_the_queue_after_a_question_mark_error(kernel):
    _, kc = kernel
    failing = kc.execute('let v: i32 = "x".parse()?;')
    queued = kc.execute('println!("must not run");')
    replies = {}
    while len(replies) < 2:
        r = kc.get_shell_msg(timeout=60)
        replies[r["parent_header"]["msg_id"]] = r["content"]["status"]
    assert replies[failing] == "error" and replies[queued] == "aborted"
    # Without stop_on_error the next cell runs.
    kc.execute('let w: i32 = "x".parse()?;', stop_on_error=False)
    ran = kc.execute("40 + 2")
    while True:
        r = kc.get_shell_msg(timeout=60)
        if r["parent_header"]["msg_id"] == ran:
            assert r["content"]["status"] == "ok"
            break


def test_issue_21_the_session_lives_on_after_an_error(kernel):
    _, kc = kernel
    run(kc, "let before_error = 41;")
    reply, _ = run(kc, 'let lost = 5;\nlet n: i32 = "?".parse()?;')
    assert reply["status"] == "error"
    _, outputs = run(kc, "before_error + 1")
    assert result_text(outputs) == "42"


def test_issue_21_a_panic_is_one_short_error_at_the_cell_line(kernel):
    _, kc = kernel
    reply, outputs = run(kc, "let a = 1;\nlet v: Vec<i32> = Vec::new();\nlet x = v[a + 2];")
    assert reply["status"] == "error" and reply["ename"] == "panic", reply
    assert "index out of bounds" in reply["evalue"]
    trace = "\n".join(reply["traceback"])
    assert "cell line 3" in trace, trace
    assert "evcxr" not in trace and "backtrace" not in trace, trace
    assert len(reply["traceback"]) <= 3, trace
    text = streams(outputs)
    assert "panicked" not in text and "index out of bounds" not in text, text
    assert len(errors(outputs)) == 1


def test_issue_21_an_unwrap_points_at_its_line_and_an_earlier_cells_panic_at_its_code(kernel):
    _, kc = kernel
    reply, _ = run(kc, "let o: Option<u8> = None;\n\no.unwrap();")
    assert reply["ename"] == "panic" and "None" in reply["evalue"]
    assert any("cell line 3" in line for line in reply["traceback"]), reply["traceback"]
    # A panic from a function defined in an earlier cell names its code.
    run(kc, 'fn explode() -> u8 {\n    panic!("from an earlier cell")\n}')
    reply, _ = run(kc, "explode();")
    assert reply["evalue"] == "from an earlier cell"
    assert any('panic!("from an earlier cell")' in line for line in reply["traceback"]), reply


def test_issue_21_rust_backtrace_brings_the_backtrace_back():
    env = {**os.environ, "RUST_BACKTRACE": "1"}
    km, kc = start_new_kernel(kernel_name="recipe", startup_timeout=300, env=env)
    try:
        reply, _ = run(kc, 'panic!("with a trace");')
        assert reply["ename"] == "panic" and reply["evalue"] == "with a trace"
        assert any("backtrace" in line for line in reply["traceback"])
        assert len(reply["traceback"]) > 5
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_issue_21_failed_cells_are_recorded_as_failed(kernel, archive):
    _, kc = kernel
    code = 'let marker_21 = 1;\nlet q: i32 = "failed-cell-21".parse()?;'
    reply, _ = run(kc, code)
    assert reply["status"] == "error"
    cells = ds.dataset(str(archive / "cells"), format="parquet", partitioning="hive").to_table().to_pylist()
    mine = [c for c in cells if c["code"] == code]
    assert len(mine) == 1 and mine[0]["status"] == "failed", mine
    assert "invalid digit" in mine[0]["error"]


def test_issue_21_exec_fails_on_a_question_mark_error_naming_the_cell(tmp_path):
    path = notebook(tmp_path, [('println!("before");', None), ('let v: i32 = "abc".parse()?;', None), ("1", None)])
    done = recipe("exec", str(path))
    assert done.returncode == 1, done.stderr
    assert "cell 2 of" in done.stderr and "invalid digit found in string" in done.stderr
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[1].outputs[-1]["output_type"] == "error"
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None


def test_issue_21_nbclient_stops_at_a_question_mark_error(tmp_path):
    path = notebook(tmp_path, [('let v: i32 = "abc".parse()?;', None), ('println!("after");', None)])
    nb = nbformat.read(path, as_version=4)
    with pytest.raises(CellExecutionError, match="invalid digit"):
        NotebookClient(nb, kernel_name="recipe", timeout=120, startup_timeout=300).execute()
    assert nb.cells[1].get("outputs", []) == []
