"""The recipe kernel as a user meets it, through jupyter_client against the installed kernel."""

import json
import re
import time
import uuid

import pytest
from jupyter_client.manager import start_new_kernel
from jupyter_client.session import Session

from conftest import recipe


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_new_kernel(kernel_name="recipe", startup_timeout=300)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run(kc, code, timeout=120, **kwargs):
    """Execute `code`; return (reply content, iopub messages of the cell)."""
    outputs = []
    reply = kc.execute_interactive(
        code, timeout=timeout, output_hook=outputs.append, **kwargs
    )
    return reply["content"], outputs


def result_text(outputs):
    return "".join(
        m["content"]["data"].get("text/plain", "")
        for m in outputs
        if m["msg_type"] == "execute_result"
    )


def test_runtime_is_preloaded_and_shared_across_cells(kernel):
    _, kc = kernel
    reply, outputs = run(kc, "Dataset::digits()?.summary()?")
    assert reply["status"] == "ok", reply
    data = [m for m in outputs if m["msg_type"] == "execute_result"][0]["content"]["data"]
    assert "1797 examples" in data["text/html"]
    # The text beside the HTML, for console clients and notebooks converted to text.
    assert data["text/plain"].startswith("digits: 1797 examples"), data.keys()
    # The session attached the runtime in a hidden first cell; a later cell sees the same
    # static only if every cell links one copy of the runtime.
    reply, outputs = run(kc, "recipe::notebook::attached()")
    assert result_text(outputs) == "true"


def test_counter_counts_only_stored_executes(kernel):
    _, kc = kernel
    first, _ = run(kc, "let counted = 1;")
    silent, _ = run(kc, "let quiet = 2;", silent=True)
    unstored, _ = run(kc, "let unstored = 3;", store_history=False)
    second, _ = run(kc, "counted + 1")
    assert second["execution_count"] == first["execution_count"] + 1


def test_panic_is_an_error_and_the_session_lives_on(kernel):
    _, kc = kernel
    run(kc, "let survivor = 41;")
    reply, outputs = run(kc, 'panic!("boom {}", 7);')
    assert reply["status"] == "error"
    assert reply["ename"] == "panic" and "boom 7" in reply["evalue"]
    assert any(m["msg_type"] == "error" for m in outputs)
    _, outputs = run(kc, "survivor + 1")
    assert result_text(outputs) == "42"


def test_compile_error_points_at_the_cell_line(kernel):
    _, kc = kernel
    reply, _ = run(kc, 'let a = 1;\nlet b: i32 = "text";')
    assert reply["status"] == "error" and reply["ename"] == "CompilationError"
    assert "mismatched types" in reply["evalue"]
    assert any("cell line 2" in line for line in reply["traceback"]), reply["traceback"]


def test_partial_lines_stream_before_the_cell_ends(kernel):
    _, kc = kernel
    code = (
        'use std::io::Write;\nprint!("step 1\\r"); std::io::stdout().flush().unwrap();\n'
        'std::thread::sleep(std::time::Duration::from_millis(1500));\nprintln!("done");'
    )
    seen = []
    kc.execute_interactive(code, timeout=60, output_hook=lambda m: seen.append((time.time(), m)))
    streams = [(t, m["content"]["text"]) for t, m in seen if m["msg_type"] == "stream"]
    assert streams[0][1] == "step 1\r", streams
    idle = [t for t, m in seen if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"]
    assert idle[-1] - streams[0][0] > 1.0, "the partial line arrived only at the end"


def test_display_update_and_clear(kernel):
    _, kc = kernel
    code = (
        'let h = DisplayHandle::new(&"10%".to_string());\n'
        'h.update(&"100%".to_string());\n'
        'display(&Html("<b>a</b>".into()));\ndisplay(&Html("<b>b</b>".into()));\n'
        "clear_output(true);"
    )
    reply, outputs = run(kc, code)
    kinds = [m["msg_type"] for m in outputs]
    assert reply["status"] == "ok"
    assert kinds.count("display_data") == 3 and "update_display_data" in kinds
    assert "clear_output" in kinds
    update = [m for m in outputs if m["msg_type"] == "update_display_data"][0]
    first = [m for m in outputs if m["msg_type"] == "display_data"][0]
    assert update["content"]["transient"]["display_id"] == first["content"]["transient"]["display_id"]
    assert update["content"]["data"]["text/plain"] == "100%"


def thread_count(kc):
    _, outputs = run(
        kc,
        'std::fs::read_to_string("/proc/self/status").unwrap().lines()'
        '.find(|l| l.starts_with("Threads")).unwrap().split_whitespace().nth(1).unwrap().parse::<u32>().unwrap()',
    )
    return int(result_text(outputs))


def test_thread_count_stays_flat_over_cells_that_train(kernel):
    _, kc = kernel
    train = (
        "{ let d = Dataset::digits()?; let mut c = TrainConfig::default(); c.steps = 3; "
        "c.eval_every = 3; let t = fit(&d, &c, &Seeds::all(1), &RunOptions::default().quiet())?; }"
    )
    run(kc, train)
    before = thread_count(kc)
    for _ in range(30):
        reply, _ = run(kc, train)
        assert reply["status"] == "ok", reply
    assert thread_count(kc) == before


def test_interrupt_stops_training_and_keeps_variables(kernel, archive):
    km, kc = kernel
    run(kc, "let kept = 1234;")
    code = (
        "let d = Dataset::digits()?; let mut c = TrainConfig::default(); c.steps = 10_000_000; "
        'let t = fit(&d, &c, &Seeds::all(1), &RunOptions::named("interrupted-run")?)?;'
    )
    msg_id = kc.execute(code)
    # Queued behind the training cell, as Run All queues a notebook: Stop stops them too.
    queued = [kc.execute('println!("should not run");'), kc.execute("kept + 1")]
    time.sleep(4)
    km.interrupt_kernel()
    replies = {}
    while len(replies) < 3:
        r = kc.get_shell_msg(timeout=60)
        replies[r["parent_header"]["msg_id"]] = r["content"]["status"]
    assert replies[msg_id] == "ok", replies
    assert [replies[q] for q in queued] == ["aborted", "aborted"], replies
    outputs = iopub_of(kc, msg_id)
    said = "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")
    match = re.search(r"interrupted-run interrupted at step (\d+) of 10000000; "
                      r"run \S+ archived as interrupted", said)
    assert match, said
    # The progress line's last drawing shows the step it stopped at, not an earlier one.
    drawn = [m["content"]["data"]["text/plain"] for m in outputs
             if m["msg_type"] in ("display_data", "update_display_data")]
    assert drawn and drawn[-1].startswith(f"interrupted-run step {match[1]}/10000000"), drawn[-1:]
    _, outputs = run(kc, "kept")
    assert result_text(outputs) == "1234"
    listed = recipe("runs", "list", "--json", "--archive", str(archive))
    runs = [r for r in json.loads(listed.stdout) if r["name"] == "interrupted-run"]
    assert runs and runs[0]["status"] == "interrupted", listed.stdout


def test_a_cell_sent_after_stop_runs(kernel):
    # Stop aborts what was queued when it came; a cell sent after it (while the stopped cell
    # still finishes) was sent knowing, and runs.
    km, kc = kernel
    code = (
        "let d = Dataset::digits()?; let mut c = TrainConfig::default(); c.steps = 10_000_000; "
        'let t = fit(&d, &c, &Seeds::all(2), &RunOptions::named("stopped-then")?.quiet())?; '
        "std::thread::sleep(std::time::Duration::from_secs(3));"
    )
    running = kc.execute(code)
    before = kc.execute("1 + 1")
    time.sleep(4)
    km.interrupt_kernel()
    time.sleep(0.5)
    after = kc.execute("40 + 2")
    replies = {}
    while len(replies) < 3:
        r = kc.get_shell_msg(timeout=60)
        replies[r["parent_header"]["msg_id"]] = r["content"]["status"]
    assert [replies[m] for m in (running, before, after)] == ["ok", "aborted", "ok"], replies


def iopub_of(kc, msg_id, wait=10):
    """The iopub messages of request `msg_id` up to its idle status (those of other requests
    are dropped); stops early when nothing arrives for `wait` s."""
    messages = []
    while True:
        try:
            m = kc.get_iopub_msg(timeout=wait)
        except Exception:
            return messages
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return messages
        messages.append(m)


def test_a_cell_asks_for_input_on_the_stdin_channel(kernel):
    _, kc = kernel
    msg_id = kc.execute('let name = input("your name? ")?; name.len()', allow_stdin=True)
    request = kc.get_stdin_msg(timeout=60)
    assert request["msg_type"] == "input_request"
    assert request["parent_header"]["msg_id"] == msg_id
    assert request["content"]["prompt"] == "your name? "
    kc.input("Ada Lovelace")
    reply = kc.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    _, outputs = run(kc, "name")
    assert result_text(outputs) == '"Ada Lovelace"'
    # Labels for a human baseline, typed one by one: a wrong answer is asked again.
    code = 'let d = Dataset::digits()?; let i = d.split("test")?[0]; ask_labels(&d, "test", &[i])?'
    msg_id = kc.execute(code, allow_stdin=True)
    prompts = []
    for answer in ["banana", "7"]:
        request = kc.get_stdin_msg(timeout=60)
        prompts.append(request["content"]["prompt"])
        kc.input(answer)
    reply = kc.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert prompts[0] == prompts[1] and "example 1 of 1" in prompts[0], prompts
    outputs = iopub_of(kc, msg_id)
    assert result_text(outputs) == "[7]"
    assert any("image/png" in m["content"]["data"].get("text/html", "") or
               "<img" in m["content"]["data"].get("text/html", "")
               for m in outputs if m["msg_type"] == "display_data"), "the example is shown"


def test_input_without_stdin_is_an_error_that_says_why(kernel):
    _, kc = kernel
    reply, _ = run(kc, 'input("your name? ")?', allow_stdin=False)
    assert reply["status"] == "error"
    assert "nobody can answer" in reply["evalue"] and "allow_stdin" in reply["evalue"]


def test_an_unknown_comm_open_is_closed_with_the_reason(kernel):
    _, kc = kernel
    comm_id = uuid.uuid4().hex
    message = kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": "no-such-target", "data": {}})
    kc.shell_channel.send(message)
    closed = [m for m in iopub_of(kc, message["header"]["msg_id"]) if m["msg_type"] == "comm_close"]
    assert closed and closed[0]["content"]["comm_id"] == comm_id
    assert "no-such-target" in closed[0]["content"]["data"]["reason"]


def test_code_that_ignores_the_interrupt_is_killed_and_the_user_told(kernel):
    km, kc = kernel
    msg_id = kc.execute("loop { std::thread::sleep(std::time::Duration::from_millis(50)); }")
    time.sleep(3)
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert "variable" in reply["content"]["evalue"] and "killed" in reply["content"]["evalue"]
    reply, outputs = run(kc, "Dataset::digits()?.len()")
    assert reply["status"] == "ok" and result_text(outputs) == "1797"


def test_kernel_info_and_complete_answer_while_a_cell_runs(kernel):
    _, kc = kernel
    msg_id = kc.execute("std::thread::sleep(std::time::Duration::from_secs(4));")
    time.sleep(1)
    started = time.time()
    kc.kernel_info()
    kc.complete("let x = Datas", 13)
    replies = [kc.get_shell_msg(timeout=10) for _ in range(2)]
    assert time.time() - started < 2, "answers waited for the cell"
    kinds = {r["msg_type"] for r in replies}
    assert kinds == {"kernel_info_reply", "complete_reply"}
    complete = [r for r in replies if r["msg_type"] == "complete_reply"][0]
    assert "Dataset" in complete["content"]["matches"]
    assert kc.get_shell_msg(timeout=30)["parent_header"]["msg_id"] == msg_id


def test_is_complete(kernel):
    _, kc = kernel
    kc.is_complete("fn f() {")
    assert kc.get_shell_msg(timeout=10)["content"]["status"] == "incomplete"


def test_stop_on_error_aborts_the_queue(kernel):
    _, kc = kernel
    failing = kc.execute('panic!("first");')
    queued = kc.execute("1 + 1")
    replies = {}
    while len(replies) < 2:
        r = kc.get_shell_msg(timeout=60)
        replies[r["parent_header"]["msg_id"]] = r["content"]["status"]
    assert replies[failing] == "error" and replies[queued] == "aborted"


def test_forged_or_unsigned_messages_are_ignored(kernel, tmp_path):
    _, kc = kernel
    marker = tmp_path / "executed"
    code = f'std::fs::write("{marker}", "forged").unwrap();'
    for key in (b"not-the-key", b""):
        forger = Session(key=key, username="forger")
        message = forger.msg("execute_request", {
            "code": code, "silent": False, "store_history": True,
            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
        })
        forger.send(kc.shell_channel.socket, message)
    time.sleep(3)
    assert not marker.exists()
    with pytest.raises(Exception):
        kc.get_shell_msg(timeout=1)
    reply, outputs = run(kc, "2 + 2")
    assert result_text(outputs) == "4"


def test_cells_and_runs_record_their_provenance(kernel, archive):
    _, kc = kernel
    code = (
        "let d = Dataset::digits()?; let mut c = TrainConfig::default(); c.steps = 5; c.eval_every = 5;\n"
        'let t = fit(&d, &c, &Seeds::all(3), &RunOptions::named("provenance-run")?.quiet())?;'
    )
    reply, _ = run(kc, code)
    assert reply["status"] == "ok", reply
    import pyarrow.dataset as ds

    cells = ds.dataset(str(archive / "cells"), format="parquet", partitioning="hive").to_table().to_pylist()
    mine = [c for c in cells if c["code"] == code]
    assert len(mine) == 1 and mine[0]["status"] == "ok"
    assert mine[0]["execution_count"] == reply["execution_count"]
    runs = ds.dataset(str(archive / "runs"), format="parquet", partitioning="hive").to_table().to_pylist()
    run_row = [r for r in runs if r["name"] == "provenance-run"][0]
    assert run_row["session_id"] == mine[0]["session_id"]
    assert run_row["cell_execution"] == reply["execution_count"]
    assert run_row["cell_history_hash"] == mine[0]["history_hash"]
    errors = [c for c in cells if c["status"] == "failed"]
    assert errors, "failed cells are recorded too"


def test_a_cell_sent_while_the_session_starts_is_busy_at_once():
    km, kc = start_new_kernel(kernel_name="recipe", startup_timeout=300)
    try:
        msg_id = kc.execute("6 * 7")
        messages, arrived = [], []
        while True:
            m = kc.get_iopub_msg(timeout=120)
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(m)
            arrived.append(time.time())
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
        kinds = [m["msg_type"] for m in messages]
        assert kinds[0] == "status" and messages[0]["content"]["execution_state"] == "busy"
        assert kinds.count("status") == 2, kinds  # one busy, one idle
        # Busy came when the request did, not when the session was up to run it (seconds
        # later on a cold start), and a cell that waited more than a second said so, the
        # note gone once it ran.
        started = kinds.index("execute_input")
        waited = arrived[started] - arrived[0]
        assert waited > 0.5, f"the session was up {waited:.2f} s after busy: no wait to show"
        notes = [i for i, m in enumerate(messages)
                 if m["msg_type"] == "stream" and "starting the Rust session" in m["content"]["text"]]
        if waited > 1.5:
            assert notes, kinds
        if notes:
            assert "clear_output" in kinds[notes[0]:started], kinds
        assert result_text(messages) == "42"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_an_interrupt_while_the_session_starts_aborts_the_queued_cells():
    # kernel_info is answered before the session is up; cells sent meanwhile wait for it, and
    # an interrupt in that time means they should not run.
    km, kc = start_new_kernel(kernel_name="recipe", startup_timeout=300)
    try:
        queued = kc.execute('println!("should not run");')
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=120)
        assert reply["parent_header"]["msg_id"] == queued
        assert reply["content"]["status"] == "aborted", reply["content"]
        # The session is up now, and runs what comes next.
        reply, outputs = run(kc, "40 + 2")
        assert reply["status"] == "ok", reply
        assert result_text(outputs) == "42"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_the_kernelspec_has_its_logos():
    import struct
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("recipe")
    folder = __import__("pathlib").Path(spec.resource_dir)
    assert (folder / "logo-svg.svg").read_text().startswith("<svg")
    for size in (32, 64):
        png = (folder / f"logo-{size}x{size}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24]) == (size, size)
