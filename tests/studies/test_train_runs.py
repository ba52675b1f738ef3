"""`benchmark --run_cost` on an image dataset: whole train.py runs, timed (train_runs.py)."""
import json
import os
import subprocess
import sys

import pytest

from domainbed.studies import benchmark, train_runs
from domainbed.training import timing
import support

REPO_ROOT = str(support.REPO_ROOT)

# A stand-in for an upstream checkout: its train.py checks that the launcher patched
# torchvision (no weight download) and writes upstream-shaped records.
FAKE_UPSTREAM_TRAIN = """
import argparse, json, os, sys, torchvision.models as models
parser = argparse.ArgumentParser()
for flag in ("data_dir", "dataset", "algorithm", "output_dir", "hparams"):
    parser.add_argument("--" + flag)
parser.add_argument("--test_envs", type=int, nargs="+")
parser.add_argument("--steps", type=int)
parser.add_argument("--checkpoint_freq", type=int)
args = parser.parse_args()
net = models.resnet18(pretrained=True)      # upstream's call: must not download
assert sum(p.numel() for p in net.parameters()) > 0
os.makedirs(args.output_dir, exist_ok=True)
hparams = dict(json.loads(args.hparams), batch_size=json.loads(args.hparams).get("batch_size", 32))
with open(os.path.join(args.output_dir, "results.jsonl"), "w") as f:
    for step in range(0, args.steps, args.checkpoint_freq):
        record = {"step": step, "step_time": 0.05, "hparams": hparams,
                  "args": {"test_envs": args.test_envs}}
        record.update({f"env{i}_in_acc": 0.5 for i in range(4)})
        f.write(json.dumps(record) + "\\n")
"""


def test_synthetic_tree_is_pacs_shaped(tmp_path):
    from PIL import Image

    train_runs.make_synthetic_tree(str(tmp_path), images_per_class=2)
    domains = sorted(os.listdir(tmp_path / "PACS"))
    assert domains == train_runs.PACS_DOMAINS
    for domain in domains:
        assert sorted(os.listdir(tmp_path / "PACS" / domain)) == train_runs.PACS_CLASSES
    image = Image.open(tmp_path / "PACS" / "sketch" / "person" / "1.jpg")
    assert image.size == (227, 227) and image.format == "JPEG"


def test_wall_time_summary_round_trips():
    clock = timing.PhaseClock()
    with clock("steps"):
        sum(range(1000))
    parsed = timing.parse_summary(clock.summary())
    assert set(parsed) == {"total", "other", *timing.PHASES}
    assert parsed["total"] >= parsed["steps"] >= 0
    assert timing.parse_summary("0.5  0.2  3") is None


def test_bad_variants_and_upstream_paths_are_one_line_errors(tmp_path, capsys):
    argv = ["--run_cost", "--dataset", "PACS", "--work_dir", str(tmp_path)]
    assert benchmark.main(argv + ["--variants", "default,fastest"]) == 2
    assert "unknown fastest; choose from" in capsys.readouterr().err
    assert benchmark.main(argv + ["--upstream", str(tmp_path)]) == 2
    assert "is not a DomainBed checkout" in capsys.readouterr().err
    assert benchmark.main(argv + ["--variants", "upstream"]) == 2
    assert "needs --upstream PATH" in capsys.readouterr().err


def test_runs_end_to_end_at_a_tiny_size(tmp_path):
    """Our default pipeline and a stand-in upstream: the table's numbers come from the
    runs' records and out.txt (ResNet-18, 1 image a class, 3 steps: CPU-sized)."""
    upstream = tmp_path / "upstream"
    (upstream / "domainbed" / "scripts").mkdir(parents=True)
    (upstream / "domainbed" / "__init__.py").write_text("")
    (upstream / "domainbed" / "scripts" / "__init__.py").write_text("")
    (upstream / "domainbed" / "scripts" / "train.py").write_text(FAKE_UPSTREAM_TRAIN)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "domainbed.scripts.benchmark", "--run_cost", "--dataset", "PACS",
         "--variants", "default", "--upstream", str(upstream), "--images_per_class", "1",
         "--batch_size", "2", "--run_steps", "3", "--run_checkpoint_freq", "2",
         "--hparams", '{"resnet18": true}', "--work_dir", str(tmp_path / "work"), "--json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    upstream_run, ours = report["runs"]
    assert upstream_run["variant"] == "upstream" and "error" not in upstream_run, upstream_run
    assert ours["variant"] == "default" and "error" not in ours, ours
    assert report["baseline"] == "upstream" and upstream_run["ratio_run"] == pytest.approx(1.0)
    assert ours["images"] == 3 * 2 * 3            # steps x batch x training envs
    assert ours["phases_s"]["steps"] > 0 and ours["phases_s"]["evaluation"] > 0
    assert ours["images_per_s_run"] == pytest.approx(ours["images"] / ours["wall_s"])
    assert upstream_run["images_per_s_loop"] == pytest.approx(2 * 3 / 0.05)
    records = [json.loads(line) for line in
               open(tmp_path / "work" / "runs" / "default" / "results.jsonl")]
    assert [r["step"] for r in records] == [0, 2]
    assert records[0]["hparams"]["resnet18"] is True and records[0]["hparams"]["pretrained"] is False
