"""collect_results --metric NAME: a metric beyond accuracy in the tables, the runs still
selected on accuracy unless --select_by metric."""
import csv
import io
import json
import os
import subprocess
import sys

import pytest

from domainbed.results import metrics
import support

REPO_ROOT = str(support.REPO_ROOT)


def record(test_env, hparams_seed, acc, f1, step=0):
    """Debug28-shaped (3 envs); every split's accuracy `acc` and F1 `f1`, but the test
    env's in-split F1, which is `f1 + 0.3` (so the reported number says where it came from)."""
    args = {"dataset": "Debug28", "algorithm": "ERM", "test_envs": [test_env],
            "trial_seed": 0, "hparams_seed": hparams_seed, "holdout_fraction": 0.2,
            "steps": None, "output_dir": f"job{test_env}{hparams_seed}"}
    result = {"args": args, "hparams": {}, "step": step}
    for env in range(3):
        for split in ("in", "out"):
            result[f"env{env}_{split}_acc"] = acc
            result[f"env{env}_{split}_f1"] = f1
    result[f"env{test_env}_in_f1"] = f1 + 0.3
    return result


def write_sweep(root, with_f1=True):
    # hparams 0: better accuracy, worse F1; hparams 1: the reverse.
    for test_env in range(3):
        for seed, (acc, f1) in enumerate([(0.6, 0.2), (0.4, 0.5)]):
            job = root / f"job{test_env}{seed}"
            job.mkdir()
            line = record(test_env, seed, acc, f1)
            if not with_f1:
                line = {k: v for k, v in line.items() if not k.endswith("_f1")}
            (job / "results.jsonl").write_text(json.dumps(line) + "\n")
            (job / "done").write_text("done")


def collect(root, *args):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "domainbed.scripts.collect_results",
                           "--input_dir", str(root), *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)


def iid_cells(stdout):
    rows = csv.DictReader(io.StringIO(stdout))
    return {r["column"]: float(r["mean"]) for r in rows
            if r["selection_method"].startswith("training") and r["table"] == "Debug28"}


def test_metric_reported_for_the_runs_accuracy_selects_or_its_own_choice(tmp_path):
    write_sweep(tmp_path)
    accuracy = iid_cells(collect(tmp_path, "--format", "csv").stdout)
    assert accuracy["0"] == pytest.approx(60.0)                   # hparams 0 selected
    f1_on_acc = collect(tmp_path, "--format", "csv", "--metric", "f1")
    assert f1_on_acc.returncode == 0, f1_on_acc.stderr
    assert iid_cells(f1_on_acc.stdout)["0"] == pytest.approx(50.0)   # hparams 0's test F1
    rows = list(csv.DictReader(io.StringIO(f1_on_acc.stdout)))
    assert {(r["metric"], r["selected_on"]) for r in rows} == {("f1", "acc")}
    f1_on_f1 = collect(tmp_path, "--format", "csv", "--metric", "f1", "--select_by", "metric")
    assert iid_cells(f1_on_f1.stdout)["0"] == pytest.approx(80.0)    # hparams 1's test F1
    text = collect(tmp_path, "--metric", "f1").stdout
    assert text.startswith("Metric: f1 (x 100; runs selected on accuracy)\n")
    document = json.loads(collect(tmp_path, "--format", "json", "--metric", "f1").stdout)
    assert document["metric"] == {"name": "f1", "selected_on": "acc"}


def test_default_tables_are_upstreams_and_the_records_are_not_changed(tmp_path):
    write_sweep(tmp_path)
    plain = collect(tmp_path)
    assert plain.stdout == collect(tmp_path, "--metric", "acc").stdout
    assert not plain.stdout.startswith("Metric:")
    records = [record(0, 0, 0.6, 0.2)]
    view = metrics.metric_view(records, "f1")
    assert view[0]["env0_in_acc"] == pytest.approx(0.5) and records[0]["env0_in_acc"] == 0.6
    assert view[0]["env1_out_acc"] == 0.6                    # validation keeps its accuracy
    assert metrics.metric_view(records, "f1", "metric")[0]["env1_out_acc"] == 0.2


def test_leave_one_out_validation_keeps_accuracy_in_the_pair_runs():
    pair = record(0, 0, 0.6, 0.2)
    pair["args"]["test_envs"] = [0, 1]
    view = metrics.metric_view([pair], "f1")[0]
    assert view["env1_in_acc"] == 0.6 and view["env0_in_acc"] == 0.6


def test_an_undefined_auroc_is_nan_not_a_crash():
    one = record(0, 0, 0.6, 0.2)
    for key in list(one):
        if key.endswith("_f1"):
            one[key.replace("_f1", "_auroc")] = None
    assert metrics.metric_view([one], "auroc")[0]["env0_in_acc"] != \
        metrics.metric_view([one], "auroc")[0]["env0_in_acc"]   # NaN


@pytest.mark.parametrize("args, message", [
    (["--metric", "f1"], "train with --metrics all"),
    (["--metric", "f1", "--compare_upstream"], "--compare_upstream compares accuracies"),
    (["--metric", "f1", "--auto_lr"], "--auto_lr selects on the auto-lr accuracy"),
    (["--metric", "f2"], "invalid choice"),
])
def test_what_cannot_be_reported_is_one_line(tmp_path, args, message):
    write_sweep(tmp_path, with_f1=False)
    result = collect(tmp_path, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len([line for line in result.stderr.splitlines() if "error" in line]) == 1
    assert not (tmp_path / "results.txt").exists()
