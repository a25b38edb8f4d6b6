"""Issues 22 and 28: a person's own code in a cell. candle written as candle's examples
write it (no `:dep`, no type annotations), a net of their own trained by `fit` with the
recipe's checks, and the archive seeing it, all through a real kernel and jupyter_client."""

import json
import time

import pyarrow.dataset as ds

from conftest import ARCHIVE, recipe
from test_behaviour import kernel, result_text, run  # noqa: F401 (kernel is a fixture)

TINY_NET = """
use candle_core::{DType, Device, Tensor};
use candle_nn::{linear, Linear, Module, VarBuilder};

struct Tiny {
    fc1: Linear,
    head: Linear,
}

impl Tiny {
    fn new(inputs: usize, hidden: usize, outputs: usize, vb: VarBuilder) -> candle_core::Result<Tiny> {
        Ok(Tiny {
            fc1: linear(inputs, hidden, vb.pp("fc1"))?,
            head: linear(hidden, outputs, vb.pp("head"))?,
        })
    }
}

impl Model for Tiny {
    fn forward(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        self.head.forward(&self.fc1.forward(&x.flatten_from(1)?)?.relu()?)
    }
}
"""


def ok(kc, code, timeout=180):
    reply, outputs = run(kc, code, timeout=timeout)
    assert reply["status"] == "ok", reply
    return outputs


def test_issue_28_untyped_candle_values_persist_across_cells(kernel):
    _, kc = kernel
    ok(
        kc,
        "use candle_core::{DType, Device, Tensor};\n"
        "let dev = Device::Cpu;\n"
        "let t = Tensor::zeros((2, 3), DType::F32, &dev)?;\n"
        "let vm = candle_nn::VarMap::new();\n"
        'let v = serde_json::json!({"a": 1});',
    )
    assert result_text(ok(kc, "t.dims().to_vec()")) == "[2, 3]"
    assert result_text(ok(kc, "vm.all_vars().len()")) == "0"
    assert result_text(ok(kc, 'v["a"].clone()')) == "Number(1)"


def test_issue_28_a_tensor_made_in_a_cell_goes_into_the_runtime(kernel):
    _, kc = kernel
    ok(kc, "use candle_core::{Device, Tensor};\nlet x = Tensor::ones((3, 4), candle_core::DType::F32, &Device::Cpu)?;")
    # The runtime's check takes the cell's tensor: one copy of candle.
    text = result_text(ok(kc, "recipe::checks::batch_dependency(|x| x.sqr(), &x, 1)?"))
    assert text == "[1]", text
    # And the runtime's tensors are the cell's type.
    text = result_text(ok(kc, "let (b, _) = Dataset::digits()?.batch(&[0, 1], &Device::Cpu)?;\n(b + &x.sum_all()?.broadcast_as((2, 1, 8, 8))?)?.dims().to_vec()"))
    assert text == "[2, 1, 8, 8]", text


def test_issue_28_a_dep_on_a_crate_of_the_runtime_names_the_runtimes_copy(kernel):
    _, kc = kernel
    reply, _ = run(kc, ':dep candle-core = "=0.11.1"')
    assert reply["status"] == "error" and reply["ename"] == "DepError", reply
    assert "use candle_core::...;" in reply["evalue"] and "part of the recipe runtime" in reply["evalue"]


def test_issue_22_a_net_defined_in_a_cell_trains_through_fit_with_every_check(kernel):
    _, kc = kernel
    ok(kc, TINY_NET)
    outputs = ok(
        kc,
        'let spec = ModelSpec::custom("tiny", json!({"hidden": 32}), |vb, io| Tiny::new(io.inputs(), 32, io.outputs, vb))?;\n'
        "let data = Dataset::digits()?.subset(300, 100)?;\n"
        "spec.summary(&data)?",
    )
    html = [m for m in outputs if m["msg_type"] == "execute_result"][0]["content"]["data"]["text/html"]
    assert "fc1.weight" in html and "[32, 64]" in html and "2410 parameters" in html, html
    text = result_text(
        ok(
            kc,
            "let config = TrainConfig { model: spec.clone(), steps: 80, eval_every: 40, lr: 1e-3, ..TrainConfig::default() };\n"
            'let trained = fit(&data, &config, &Seeds::all(1), &RunOptions::named("tiny-in-a-cell")?.quiet())?;\n'
            'trained.metric("test_acc")? > 0.3',
        )
    )
    assert text == "true", text
    # Every check of the registry runs on it.
    text = result_text(
        ok(
            kc,
            "let findings = run_all(&CheckContext { data: &data, config: config.clone(), seeds: Seeds::all(1) })?;\n"
            "findings.iter().map(|f| (f.check.name.clone(), f.check.passed)).collect::<Vec<_>>()",
        )
    )
    for name in ["loss_at_init", "backprop_dependency", "overfit_one_batch"]:
        assert f'("{name}", true)' in text, text
    # The archive sees it as its name and hyperparameters, linked to its cell.
    runs = ds.dataset(str(ARCHIVE / "runs"), format="parquet", partitioning="hive").to_table().to_pylist()
    mine = [r for r in runs if r["name"] == "tiny-in-a-cell"]
    assert len(mine) == 1 and mine[0]["status"] == "completed", mine
    config = json.loads(mine[0]["config"])
    assert config["model"] == {"kind": "custom", "name": "tiny", "hyper": {"hidden": 32}}
    assert mine[0]["session_id"], mine[0]


def test_issue_28_a_tracked_loop_is_archived_and_one_dropped_unfinished_ends_failed(kernel):
    _, kc = kernel
    ok(
        kc,
        "let data = Dataset::digits()?.subset(200, 50)?;\n"
        'let mut run = track("hand-loop", &json!({"lr": 0.1}), &Seeds::all(1), &data)?;\n'
        "for step in 0..5 { run.log(step, &[(\"train_loss\", 1.0 / (step + 1) as f64)])?; }\n"
        "let record = run.finish()?;",
    )
    reply, _ = run(
        kc,
        'let mut broken = track("dropped-loop", &json!({"lr": 0.1}), &Seeds::all(1), &data)?;\n'
        'broken.log(0, &[("train_loss", 2.0)])?;\n'
        'let n: i32 = "not a number".parse()?;',
    )
    assert reply["status"] == "error", reply
    runs = ds.dataset(str(ARCHIVE / "runs"), format="parquet", partitioning="hive").to_table().to_pylist()
    latest = {r["name"]: r for r in sorted(runs, key=lambda r: r["updated_at"])}
    assert latest["hand-loop"]["status"] == "completed" and latest["hand-loop"]["last_step"] == 4
    dropped = latest["dropped-loop"]
    assert dropped["status"] == "failed", dropped
    assert "dropped before finish()" in dropped["error"], dropped["error"]


def test_issue_22_runs_of_code_defined_in_cells_verify_by_replaying_the_session(kernel):
    _, kc = kernel
    ok(kc, TINY_NET)
    ok(
        kc,
        'let spec = ModelSpec::custom("tiny-replayed", json!({"hidden": 16}), |vb, io| Tiny::new(io.inputs(), 16, io.outputs, vb))?;\n'
        "let data = Dataset::digits()?.subset(300, 100)?;\n"
        "let config = TrainConfig { model: spec, steps: 40, eval_every: 20, ..TrainConfig::default() };\n"
        'let trained = fit(&data, &config, &Seeds::all(2), &RunOptions::named("tiny-replayed")?.quiet())?;',
    )
    done = recipe("runs", "verify", "tiny-replayed", timeout=600)
    assert done.returncode == 0, done.stderr
    assert "reproduced bit for bit" in done.stdout, done.stdout
    assert "replaying cell" in done.stderr
    # In the notebook, the session's own definition re-runs it.
    text = result_text(ok(kc, "verify(&Archive::open(Archive::default_root())?, trained.run.as_ref().unwrap())?.reproduced"))
    assert text == "true", text


def test_issue_22_a_replay_names_the_cell_that_read_something_that_changed(kernel, tmp_path):
    _, kc = kernel
    steps = tmp_path / "steps.txt"
    steps.write_text("30")
    ok(
        kc,
        f'let steps: usize = std::fs::read_to_string("{steps}")?.trim().parse()?;\n'
        'let loop_data = Dataset::digits()?.subset(100, 50)?;\n'
        'let mut run = track("reads-a-file", &json!({"steps": steps}), &Seeds::all(1), &loop_data)?;\n'
        'for step in 0..steps { run.log(step, &[("train_loss", 1.0)])?; }\n'
        "run.finish()?;",
    )
    steps.unlink()
    done = recipe("runs", "verify", "reads-a-file", timeout=600)
    assert done.returncode != 0
    assert "fails in the replay" in done.stderr and "No such file" in done.stderr, done.stderr


def test_issue_28_an_interrupt_ends_a_tracked_loop_as_interrupted_and_keeps_the_session(kernel):
    km, kc = kernel
    ok(kc, "let kept_before_loop = 7;")
    msg_id = kc.execute(
        "let loop_data = Dataset::digits()?.subset(100, 50)?;\n"
        'let mut run = track("stopped-loop", &json!({"forever": true}), &Seeds::all(1), &loop_data)?;\n'
        "for step in 0.. {\n"
        "    std::thread::sleep(std::time::Duration::from_millis(20));\n"
        '    run.log(step, &[("train_loss", 1.0)])?;\n'
        "}"
    )
    time.sleep(6)
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    content = reply["content"]
    assert content["status"] == "error", content
    assert "archived as interrupted" in content["evalue"], content["evalue"]
    assert result_text(ok(kc, "kept_before_loop")) == "7"
    runs = ds.dataset(str(ARCHIVE / "runs"), format="parquet", partitioning="hive").to_table().to_pylist()
    stopped = [r for r in runs if r["name"] == "stopped-loop"]
    assert stopped and stopped[-1]["status"] == "interrupted", stopped


def test_a_cell_ending_in_a_loop_shows_no_unit_result(kernel):
    _, kc = kernel
    outputs = ok(kc, 'for i in 0..2 { println!("line {i}"); }')
    assert [m for m in outputs if m["msg_type"] == "execute_result"] == []
    assert result_text(ok(kc, "1 + 1")) == "2"
