"""Logs people can look at: optional TensorBoard scalars (train --tensorboard or
DOMAINBED_TENSORBOARD=1) that leave the records alone, and collect_results --plot's
training curves of the selected runs."""
import json
import os
import shutil
import sys
import types

import pytest

from domainbed.lib import plots
from domainbed.training import tensorboard_logs
from domainbed import model_selection
from domainbed.lib import reporting
from domainbed.scripts import train
from domainbed.training import loop

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # a 128-unit MLP
RUN = ["--dataset", "ColoredMNIST5k", "--data_dir", "offline", "--test_envs", "2",
       "--steps", "3", "--checkpoint_freq", "1"]          # records at steps 0, 1, 2


NEEDS_TENSORBOARD = ("tensorboard", "tensorboard not installed: pip install -e "
                     "'.[tensorboard]' to test the event files")


def fix_clock(monkeypatch):
    """train.py's clock from 0, 0.25 s a call: step_time, and so the records, repeat."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=lambda: 0.25 * next(ticks)))


def test_records_are_byte_identical_with_the_log_on_or_off(tmp_path, monkeypatch):
    pytest.importorskip(NEEDS_TENSORBOARD[0], reason=NEEDS_TENSORBOARD[1])
    monkeypatch.delenv(tensorboard_logs.ENV_VAR, raising=False)
    out, runs = tmp_path / "job", {}
    for name, flags, env in (("off", [], None), ("flag", ["--tensorboard"], None),
                             ("environment", [], "1")):
        shutil.rmtree(out, ignore_errors=True)   # the same directory: the same args
        fix_clock(monkeypatch)
        with monkeypatch.context() as patch:
            if env:
                patch.setenv(tensorboard_logs.ENV_VAR, env)
            assert train.main([*RUN, "--output_dir", str(out), *flags]) == 0
        runs[name] = {f: (out / f).read_bytes() for f in ("results.jsonl", "job.json", "out.txt")}
        events = out / tensorboard_logs.SUBFOLDER
        assert events.is_dir() == (name != "off")
        assert name == "off" or any(e.startswith("events.out.tfevents") for e in os.listdir(events))
    assert runs["off"] == runs["flag"] == runs["environment"]
    record = json.loads(runs["off"]["results.jsonl"].decode().splitlines()[0])
    assert "tensorboard" not in record["args"] and len(record["args"]) == 16


def test_event_scalars_are_the_records_names_and_steps(tmp_path, monkeypatch):
    pytest.importorskip(NEEDS_TENSORBOARD[0], reason=NEEDS_TENSORBOARD[1])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv(tensorboard_logs.ENV_VAR, "1")
    out = tmp_path / "job"
    assert train.main([*RUN, "--output_dir", str(out)]) == 0
    records = [json.loads(line) for line in open(out / "results.jsonl")]
    events = EventAccumulator(str(out / tensorboard_logs.SUBFOLDER))
    events.Reload()
    names = {name for name, _ in tensorboard_logs.scalars(records[0])}
    assert set(events.Tags()["scalars"]) == names
    assert {"env0_in_acc", "env2_out_acc", "loss", "step_time", "epoch", "mem_gb"} <= names
    for name in names:
        logged = [(e.step, e.value) for e in events.Scalars(name)]
        assert [s for s, _ in logged] == [r["step"] for r in records] == [0, 1, 2]
        assert [v for _, v in logged] == pytest.approx([r[name] for r in records], rel=1e-6)
    assert set(events.Tags()["tensors"]) >= {"args/text_summary", "hparams/text_summary"}


def test_log_without_the_package_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # import fails
    out = tmp_path / "job"
    assert train.main([*RUN, "--output_dir", str(out), "--tensorboard"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[tensorboard]'" in err
    assert "--tensorboard needs the tensorboard package" in err and not out.exists()
    monkeypatch.setenv(tensorboard_logs.ENV_VAR, "1")
    assert train.main([*RUN, "--output_dir", str(out)]) == 2
    assert f"{tensorboard_logs.ENV_VAR}=1 needs" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------
# collect_results --plot: training curves

def write_sweep(root):
    """2 trials x 3 test envs x 2 hparams draws of one algorithm, records at steps 0 and 10:
    draw 1 validates better (training-domain validation selects it), its held-out
    accuracy is 0.6 + 0.1 * trial at step 0, 0.8 + 0.1 * trial at step 10."""
    for trial in (0, 1):
        for test_env in range(3):
            for seed in (0, 1):
                job = root / f"job_{trial}_{test_env}_{seed}"
                job.mkdir(parents=True)
                lines = []
                for step, base in ((0, 0.6), (10, 0.8)):
                    record = {"args": {"dataset": "ColoredMNIST5k", "algorithm": "ERM",
                                       "test_envs": [test_env], "trial_seed": trial,
                                       "hparams_seed": seed, "output_dir": str(job)},
                              "step": step, "hparams": {}}
                    for env in range(3):
                        record[f"env{env}_out_acc"] = 0.5 + 0.2 * seed
                        record[f"env{env}_in_acc"] = base + 0.1 * trial - 0.3 * (1 - seed)
                    lines.append(json.dumps(record))
                (job / "results.jsonl").write_text("\n".join(lines) + "\n")
                (job / "done").write_text("done")


def test_curve_data_of_the_selected_runs(tmp_path):
    write_sweep(tmp_path)
    records = reporting.load_records(str(tmp_path))
    selected = model_selection.selected_runs(records, model_selection.IIDAccuracySelectionMethod)
    assert len(selected) == 6 and {c["records"][0]["args"]["hparams_seed"] for c in selected} == {1}
    curves = plots.curve_data(selected)
    assert sorted(curves["ColoredMNIST5k"]) == [0, 1, 2]
    points = curves["ColoredMNIST5k"][1]["ERM"]
    assert [step for step, _ in points] == [0, 10]
    assert [acc for _, acc in points] == pytest.approx([65.0, 85.0])   # mean of the 2 trials


def test_collect_results_plots_curves_without_torch(fresh_python, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install -e '.[plots]'")
    write_sweep(tmp_path / "sweep")
    code = ("import sys; from domainbed.scripts import collect_results; "
            f"collect_results.main(['--input_dir', {str(tmp_path / 'sweep')!r}, '--plot', "
            f"{str(tmp_path / 'plots')!r}]); "
            "print(sorted(m for m in ('torch', 'tensorboard') if m in sys.modules))")
    result = fresh_python(code)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    written = sorted(os.listdir(tmp_path / "plots"))
    assert "ColoredMNIST5k_training_domain_validation_set_curves.png" in written
    assert len([name for name in written if name.endswith("_curves.png")]) == 2  # IID, oracle
    assert "wrote 4 plots" in result.stderr   # 2 bar charts, 2 curve charts (no pairs: a note for LOO)
