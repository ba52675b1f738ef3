"""scripts/train.py: upstream's outputs (records, out.txt, model.pkl, done) and its
reliability outputs (job.json, heartbeat, failed, exit codes)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from domainbed import hparams_registry, training
from domainbed.algorithms import get_algorithm_class
from domainbed.lib import jobdir, misc
from domainbed.scripts import train
from domainbed.training import timing
import support

REPO_ROOT = str(support.REPO_ROOT)
SMALL_BATCH = '{"batch_size": 8}'   # keeps CPU cost low; only args.hparams changes
ARGS_KEYS = {
    "algorithm", "checkpoint_freq", "data_dir", "dataset", "holdout_fraction", "hparams",
    "hparams_seed", "output_dir", "save_model_every_checkpoint", "seed", "skip_model_save",
    "steps", "task", "test_envs", "trial_seed", "uda_holdout_fraction",
}


def run_train(*flags, env=None):
    # OMP_NUM_THREADS sets the threads (out.txt names it), not conftest's DOMAINBED_THREADS
    full_env = {k: v for k, v in os.environ.items() if k != "DOMAINBED_THREADS"}
    full_env.update(OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT, **(env or {}))
    return subprocess.run([sys.executable, "-m", "domainbed.scripts.train", *flags],
                          cwd=REPO_ROOT, env=full_env, capture_output=True, text=True,
                          timeout=300)


def read_records(output_dir):
    with open(os.path.join(output_dir, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "job"
    proc = run_train("--dataset", "Debug28", "--algorithm", "ERM", "--steps", "5",
                     "--checkpoint_freq", "2", "--hparams", SMALL_BATCH, "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_records_follow_the_upstream_schema(debug_run):
    out, _ = debug_run
    records = read_records(out)
    assert [r["step"] for r in records] == [0, 2, 4]
    env_keys = {f"env{i}_{split}_acc" for i in range(3) for split in ("in", "out")}
    for record in records:
        assert set(record) == env_keys | {"args", "hparams", "epoch", "loss", "mem_gb",
                                          "step", "step_time"}
        assert set(record["args"]) == ARGS_KEYS
        assert record["args"]["test_envs"] == [0]
        assert record["args"]["output_dir"] == str(out)
        assert record["hparams"] == dict(hparams_registry.default_hparams("ERM", "Debug28"),
                                         batch_size=8)
        assert all(0 <= record[k] <= 1 for k in env_keys)
        assert record["mem_gb"] >= 0 and record["step_time"] > 0
    # steps_per_epoch = min in-split length / batch = 13 / 8 on Debug28's 16-item envs.
    assert records[1]["epoch"] == pytest.approx(2 / (13 / 8))
    # Lines are sort_keys JSON with default separators, as upstream writes them.
    with open(out / "results.jsonl") as f:
        first_line = f.readline()
    assert first_line == json.dumps(records[0], sort_keys=True) + "\n"


def test_out_txt_blocks_and_table(debug_run):
    out, proc = debug_run
    text = (out / "out.txt").read_text()
    assert text == proc.stdout, "out.txt is a copy of stdout"
    lines = text.splitlines()
    env_at, args_at, hp_at = (lines.index(t) for t in ("Environment:", "Args:", "HParams:"))
    assert env_at == 0 and env_at < args_at < hp_at
    assert [l.split(":")[0] for l in lines[1:args_at]] == [
        "\tPython", "\tPyTorch", "\tTorchvision", "\tCUDA", "\tCUDNN", "\tNumPy", "\tPIL"]
    arg_lines = lines[args_at + 1:hp_at]
    assert [l.split(":")[0].strip() for l in arg_lines] == sorted(ARGS_KEYS)
    assert "\ttest_envs: [0]" in arg_lines and "\tdata_dir: None" in arg_lines
    # ours: one line naming the input pipeline, after the HParams block
    pipeline_at = hp_at + 1 + len(read_records(out)[0]["hparams"])
    assert lines[pipeline_at].startswith("Pipeline: default (")
    # ours (issue 36): the threads the run got, after the pipeline line
    assert lines[pipeline_at + 1].startswith("Threads: 1 (OMP_NUM_THREADS; ")
    table = [l for l in lines[pipeline_at + 2:] if not l.startswith("\t")]
    # Ours: the last line says where the wall time went (training/timing.py).
    wall = timing.parse_summary(table.pop())
    assert set(wall) == {"total", "other", *timing.PHASES}
    assert wall["steps"] > 0 and wall["evaluation"] > 0 and wall["total"] >= wall["steps"]
    header, rows = table[0], table[1:]
    records = read_records(out)
    keys = sorted(k for k in records[0] if k not in ("args", "hparams"))
    assert header == misc.format_row(keys, colwidth=12)
    assert rows == [misc.format_row([r[k] for k in keys], colwidth=12) for r in records]
    assert (out / "err.txt").read_text() == ""


def test_model_pkl_done_and_job_files(debug_run):
    out, _ = debug_run
    saved = torch.load(out / "model.pkl", weights_only=False)
    assert set(saved) == {"args", "model_input_shape", "model_num_classes",
                          "model_num_domains", "model_hparams", "model_dict"}
    assert saved["model_num_domains"] == 2 and saved["model_num_classes"] == 2
    assert tuple(saved["model_input_shape"]) == (3, 28, 28)
    algorithm = get_algorithm_class("ERM")((3, 28, 28), 2, 2, saved["model_hparams"])
    algorithm.load_state_dict(saved["model_dict"])  # upstream's way of reloading
    assert (out / "done").read_bytes() == b"done"
    assert not (out / "checkpoint.pt").exists(), "a done job keeps no resume state"
    assert not jobdir.is_failed(out)
    job_args = json.loads((out / "job.json").read_text())["args"]
    assert "output_dir" not in job_args and job_args["steps"] == 5
    beat = jobdir.read_heartbeat(out)
    assert (beat["step"], beat["n_steps"]) == (5, 5)
    assert not jobdir.is_running(out)


def test_done_job_is_not_run_again(debug_run, capsys):
    out, _ = debug_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code = train.main(["--dataset", "Debug28", "--algorithm", "ERM", "--steps", "5",
                       "--checkpoint_freq", "2", "--hparams", SMALL_BATCH,
                       "--output_dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert "already done" in captured.err and captured.out == ""
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_random_hparams_and_test_env_prefix(tmp_path):
    out = tmp_path / "job"
    code = train.main(["--dataset", "Debug28", "--steps", "2", "--test_env", "2",
                       "--hparams_seed", "3", "--trial_seed", "1", "--hparams", SMALL_BATCH,
                       "--skip_model_save", "--output_dir", str(out)])
    assert code == 0
    records = read_records(out)
    expected = hparams_registry.random_hparams("ERM", "Debug28", misc.seed_hash(3, 1))
    assert expected["lr"] != hparams_registry.default_hparams("ERM", "Debug28")["lr"]
    assert records[-1]["hparams"] == dict(expected, batch_size=8)
    assert records[-1]["args"]["test_envs"] == [2]
    assert [r["step"] for r in records] == [0, 1]
    assert not (out / "model.pkl").exists()
    assert (out / "done").read_bytes() == b"done"


def test_checkpoint_steps_and_model_per_checkpoint(tmp_path):
    out = tmp_path / "job"
    code = train.main(["--dataset", "Debug28", "--steps", "7", "--checkpoint_freq", "3",
                       "--hparams", SMALL_BATCH, "--save_model_every_checkpoint",
                       "--output_dir", str(out)])
    assert code == 0
    assert [r["step"] for r in read_records(out)] == [0, 3, 6]
    assert sorted(p.name for p in out.glob("model_step*.pkl")) == [
        "model_step0.pkl", "model_step3.pkl", "model_step6.pkl"]


def test_domain_adaptation_names_uda_by_list_position(tmp_path):
    out = tmp_path / "job"
    code = train.main(["--dataset", "Debug28", "--steps", "1", "--test_envs", "2",
                       "--task", "domain_adaptation", "--uda_holdout_fraction", "0.5",
                       "--hparams", SMALL_BATCH, "--skip_model_save", "--output_dir", str(out)])
    assert code == 0
    record = read_records(out)[0]
    assert "env0_uda_acc" in record and "env2_uda_acc" not in record


PLUGIN = """
import math
from domainbed.algorithms.erm import ERM
from domainbed.algorithms.registry import register_algorithm

@register_algorithm
class {name}(ERM):
    def update(self, minibatches, unlabeled=None):
        vals = super().update(minibatches, unlabeled)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 4:  # at step 3
            if {mode!r} == "nan":
                vals["loss"] = math.nan
            else:
                raise RuntimeError("simulated crash")
        return vals
"""


def run_breaking_algorithm(tmp_path, monkeypatch, mode):
    name = f"BreaksAtStep3{mode.capitalize()}"
    (tmp_path / f"plugin_{mode}.py").write_text(PLUGIN.format(name=name, mode=mode))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DOMAINBED_PLUGINS", f"plugin_{mode}")
    out = tmp_path / "job"
    argv = ["--dataset", "Debug28", "--algorithm", name, "--steps", "6",
            "--checkpoint_freq", "2", "--hparams", SMALL_BATCH, "--output_dir", str(out)]
    return out, argv


def assert_failed_at_step_3(out):
    assert not (out / "done").exists() and not (out / "model.pkl").exists()
    assert jobdir.read_failed(out)["step"] == 3
    assert [r["step"] for r in read_records(out)] == [0, 2]


def test_non_finite_loss_stops_with_failed(tmp_path, monkeypatch, capsys):
    out, argv = run_breaking_algorithm(tmp_path, monkeypatch, "nan")
    assert train.main(argv) == training.EXIT_NON_FINITE
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "non-finite loss (nan) at step 3" in err_lines[0]
    assert_failed_at_step_3(out)
    assert "non-finite loss" in jobdir.read_failed(out)["reason"]
    assert "non-finite loss" in (out / "err.txt").read_text()


def test_exception_writes_failed_and_is_reraised(tmp_path, monkeypatch):
    out, argv = run_breaking_algorithm(tmp_path, monkeypatch, "crash")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.main(argv)
    assert_failed_at_step_3(out)
    assert jobdir.read_failed(out)["reason"] == "RuntimeError: simulated crash"
    err_txt = (out / "err.txt").read_text()
    assert "Traceback" in err_txt and "simulated crash" in err_txt
    assert "simulated crash" in (out / "out.txt").read_text()  # upstream: stderr is in out.txt too
    assert not jobdir.is_running(out)
    # A later start resumes from the last checkpoint (after step 2) and clears `failed`;
    # its fresh algorithm counts calls from 1 again, so it does not crash before the end.
    assert train.main(argv) == 0
    assert not jobdir.is_failed(out) and (out / "done").exists()
    assert [r["step"] for r in read_records(out)] == [0, 2, 4, 5]
    assert "Resuming from checkpoint.pt at step 3" in (out / "out.txt").read_text()


def test_progress_bar_only_on_a_terminal():
    import io

    from domainbed.lib.progress import progress_bar

    class FakeTerminal(io.StringIO):
        def isatty(self):
            return True

    quiet = io.StringIO()
    bar = progress_bar(10, initial=2, stream=quiet)
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ""

    terminal = FakeTerminal()
    bar = progress_bar(10, initial=2, stream=terminal)
    bar.update(3)
    bar.refresh()
    assert "5/10" in terminal.getvalue()
    bar.close()
