"""Weight averaging around any algorithm (`X+SWAD`, `X+MA`): the SWAD window rule on a
scripted loss sequence, MA and SWAD averages against the iterates they average, the wrapped
algorithm's training left unchanged, BatchNorm recomputation, names through the registry,
hparams, train, sweep and collect_results, and exact resume after SIGUSR1 and SIGKILL."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from domainbed import hparams_registry
from domainbed.algorithms import get_algorithm_class, weight_averaging
from domainbed.algorithms.registry import check_algorithm_name, split_algorithm_name
from domainbed.algorithms.weight_averaging import (LossValley, averaged_tensors,
                                                   recompute_batchnorm)
from domainbed.lib.registry import UnknownNameError
from domainbed.scripts import train
from support import comparable_records  # the records minus timing and paths
import support

REPO_ROOT = str(support.REPO_ROOT)

# The valley of LossValley's docstring, segment by segment (n_converge 3, n_tolerance 6,
# ratio 0.3): it starts at segment 3 (2.5 <= 2.6, 2.7) with threshold 2.6 * 1.3 = 3.38,
# reaches back to segment 2 (3.0 <= 3.38; 4.0 is above), accepts 4 .. 9 as their windows of
# six stay under the threshold, and dies when segment 15 closes (segments 10 .. 15 are all
# above 3.38).
LOSSES = [5.0, 4.0, 3.0, 2.5, 2.6, 2.7, 2.4, 2.8, 3.0, 2.9, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0,
          8.0, 9.0, 10.0]


def test_swad_window_rule_on_a_scripted_loss_sequence():
    valley = LossValley(n_converge=3, n_tolerance=6, tolerance_ratio=0.3)
    accepted_when = {}
    for j, loss in enumerate(LOSSES):
        accepted = valley.add(loss)
        if accepted:
            accepted_when[j] = accepted
        if j == 4:
            assert not valley.converged and valley.at_end() == []
            assert valley.needed() == {0, 1, 2, 3, 4}   # the segments a start may still take
        if j == 5:
            assert valley.start == 3 and valley.threshold == pytest.approx(3.38)
            assert valley.at_end() == [4, 5]     # if training stopped here
            assert valley.needed() == {4, 5}
        if j == 11:
            assert valley.at_end() == [7, 8, 9]  # 10 onwards never gets back under 3.38
    assert accepted_when == {5: [2, 3], 9: [4], 10: [5], 11: [6], 12: [7], 13: [8], 14: [9]}
    assert valley.dead and (valley.first, valley.last) == (2, 9)
    assert valley.at_end() == [] and valley.needed() == set()


def test_swad_window_rule_edge_cases():
    ties = LossValley(3, 6, 0.3)
    assert [ties.add(x) for x in (1.0, 1.0, 1.0)] == [[], [], [0]]   # a tie counts as lowest
    falling = LossValley(3, 6, 0.3)
    for x in (9, 8, 7, 6, 5, 4, 3, 2, 1):
        assert falling.add(x) == []
    assert not falling.converged and falling.at_end() == []
    assert falling.needed() == {4, 5, 6, 7, 8}
    short = LossValley(n_converge=3, n_tolerance=2, tolerance_ratio=0.0)  # N_t < N_c
    assert [short.add(x) for x in (1.0, 2.5, 3.0)] == [[], [], [0]]
    assert short.dead   # segment 1's window (2.5, 3.0) is above the threshold 6.5 / 3
    restored = LossValley(3, 6, 0.3)
    restored.load_state_dict(ties.state_dict())
    assert restored.add(1.0) == ties.add(1.0)
    for bad in ({"n_converge": 0}, {"n_tolerance": 1.5}, {"tolerance_ratio": -1}):
        with pytest.raises(ValueError, match="hparam swad_"):
            LossValley(**{"n_converge": 3, "n_tolerance": 6, "tolerance_ratio": 0.3, **bad})


# ---------------------------------------------------------------------------------------
# Averages against the iterates

def hparams_for(name, **overrides):
    hparams = hparams_registry.default_hparams(name, "Debug28")
    hparams.update(overrides)
    return hparams


def minibatches(step, n_domains=2, size=4):
    generator = torch.Generator().manual_seed(1000 + step)
    return [(torch.randn(size, 3, 28, 28, generator=generator),
             torch.randint(0, 2, (size,), generator=generator)) for _ in range(n_domains)]


def snapshot(module):
    return {name: t.detach().clone() for name, t in averaged_tensors(module).items()}


def mean_of(snapshots):
    return {name: torch.stack([s[name] for s in snapshots]).mean(0) for name in snapshots[0]}


def assert_close(actual, expected):
    assert actual.keys() == expected.keys()
    for name in actual:
        assert torch.allclose(actual[name], expected[name], atol=1e-6), name


def test_ma_at_step_k_is_the_mean_of_the_weights_it_averaged():
    torch.manual_seed(0)
    ma = get_algorithm_class("ERM+MA")((3, 28, 28), 2, 2, hparams_for("ERM+MA", ma_start=3))
    torch.manual_seed(0)
    plain = get_algorithm_class("ERM")((3, 28, 28), 2, 2, hparams_for("ERM"))
    live = []
    for update in range(1, 8):
        ma.update(minibatches(update))
        plain.update(minibatches(update))
        live.append(snapshot(ma.algorithm))
        if update < 3:   # before ma_start: the live weights
            expected = live[-1]
        else:            # from ma_start: the mean of θ_{ma_start-1} .. θ_update
            expected = mean_of(live[3 - 2:])
        assert_close(snapshot(ma.average), expected)
        # The wrapped ERM follows plain ERM's weights exactly.
        assert all(torch.equal(a, b) for a, b in zip(ma.algorithm.parameters(), plain.parameters()))
    assert ma.averaged == 6   # θ_2 .. θ_7
    x = minibatches(99)[0][0]
    assert torch.equal(ma.predict(x), ma.average.predict(x))


def fake_evals(n_envs=3):
    generator = torch.Generator().manual_seed(7)
    evals = []
    for kind in ("in", "out"):
        for env in range(n_envs):
            batch = (torch.randn(4, 3, 28, 28, generator=generator), torch.randint(0, 2, (4,)))
            evals.append((f"env{env}_{kind}", [batch]))
    return evals


def test_swad_records_the_dense_mean_of_its_window(monkeypatch):
    """With the scripted losses above, one segment per two steps: the model of each record
    is the mean of the iterates of the window SWAD would return then."""
    scripted = iter(LOSSES)
    measured = []

    def scripted_loss(model, loaders, device):
        measured.append(snapshot(model))   # the segment's average is what gets measured
        return next(scripted)

    monkeypatch.setattr(weight_averaging, "validation_loss", scripted_loss)
    torch.manual_seed(0)
    swad = get_algorithm_class("ERM+SWAD")((3, 28, 28), 2, 2, hparams_for("ERM+SWAD"))
    live, windows = [], {}
    for step in range(37):
        swad.update(minibatches(step))
        live.append(snapshot(swad.algorithm))
        if step % 2 == 0:
            extra = swad.before_record(fake_evals(), [0], "cpu")
            first, last = extra["swad_first_step"], extra["swad_last_step"]
            windows[step] = (first, last)
            if step // 2 <= 15:
                assert extra["swad_val_loss"] == LOSSES[step // 2]
                segment = [0] if step == 0 else [step - 1, step]
                assert_close(measured[-1], mean_of([live[s] for s in segment]))
            else:   # the valley died at segment 15: nothing more is measured
                assert extra["swad_val_loss"] == -1.0
            assert_close(snapshot(swad.average), mean_of(live[first:last + 1]))
    assert windows[8] == (0, 8)      # segment 4: not converged, the whole run
    assert windows[10] == (3, 10)    # converged at segment 5: segments 2 .. 5 if it stopped
    assert windows[16] == (3, 16)    # segments 2 .. 8
    assert windows[22] == (3, 18)    # 2 .. 9: from 10 on, never back under the threshold
    assert windows[30] == windows[36] == (3, 18)   # dead at segment 15: segments 2 .. 9
    assert len(measured) == 16
    assert len(swad.pending) == 0 and swad.segment.count == 0   # nothing more is kept
    swad.update(minibatches(37))
    assert swad.segment.count == 0   # a dead valley adds nothing


class TinyWithBatchNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)
        self.bn = torch.nn.BatchNorm1d(3)
        self.unused = torch.nn.BatchNorm1d(3)
        self.dropout = torch.nn.Dropout(0.5)   # draws random numbers in train mode

    def predict(self, x):
        return self.dropout(self.bn(self.linear(x)))


def test_batchnorm_is_recomputed_without_touching_the_global_generator():
    torch.manual_seed(0)
    model = TinyWithBatchNorm().eval()
    model.unused.running_mean.fill_(5.0)
    batches = [(torch.randn(6, 3), None), (torch.randn(6, 3), None)]
    with torch.no_grad():
        outputs = [model.linear(x) for x, _ in batches]
    state = torch.get_rng_state()
    assert recompute_batchnorm(model, [batches], "cpu") == 1
    assert torch.equal(torch.get_rng_state(), state)
    expected_mean = torch.stack([o.mean(0) for o in outputs]).mean(0)
    expected_var = torch.stack([o.var(0) for o in outputs]).mean(0)   # unbiased, as BatchNorm
    assert torch.allclose(model.bn.running_mean, expected_mean, atol=1e-6)
    assert torch.allclose(model.bn.running_var, expected_var, atol=1e-6)
    assert model.bn.momentum == 0.1 and not model.training   # as it was
    assert torch.equal(model.unused.running_mean, torch.full((3,), 5.0))   # not reached


# ---------------------------------------------------------------------------------------
# Names and hparams

def test_wrapped_names_resolve_and_bad_ones_say_what_to_do():
    assert split_algorithm_name("FGMix+SWAD") == ("FGMix", "SWAD")
    assert get_algorithm_class("CORAL+MA") is get_algorithm_class("CORAL+MA")
    assert get_algorithm_class("CORAL+MA").BASE is get_algorithm_class("CORAL")
    check_algorithm_name("FGMix+SWAD")
    for bad, hint in [("ERN+SWAD", "Did you mean 'ERM'?"), ("ERM+SWDA", "Did you mean 'SWAD'?"),
                      ("ERM+MA+SWAD", "do not nest"), ("+SWAD", "unknown algorithm ''")]:
        with pytest.raises(UnknownNameError, match=bad.replace("+", r"\+")) as error:
            get_algorithm_class(bad)
        assert hint in str(error.value) and "\n" not in str(error.value)


def test_wrapped_hparams_are_the_algorithms_draws_plus_the_wrappers():
    for seed in (0, 5):
        base = hparams_registry.random_hparams("FGMix", "RotatedMNIST5k", seed)
        swad = hparams_registry.random_hparams("FGMix+SWAD", "RotatedMNIST5k", seed)
        assert {k: swad[k] for k in base} == base
        assert {k: v for k, v in swad.items() if k not in base} == {
            "swad_n_converge": 3, "swad_n_tolerance": 6, "swad_tolerance_ratio": 0.3}
    # Algorithm-dependent entries follow the wrapped algorithm (ARM's batch size of 8).
    assert hparams_registry.default_hparams("ARM+MA", "PACS")["batch_size"] == 8
    assert hparams_registry.default_hparams("ERM+MA", "Debug28")["ma_start"] == 100


# ---------------------------------------------------------------------------------------
# Through train.py

def job_argv(output_dir, algorithm, steps=16, freq=2, hparams=None):
    hparams = {"batch_size": 8, **(hparams or {})}
    return ["--dataset", "Debug28", "--algorithm", algorithm, "--steps", str(steps),
            "--checkpoint_freq", str(freq), "--hparams", json.dumps(hparams, sort_keys=True),
            "--output_dir", str(output_dir)]


SWAD_HPARAMS = {"swad_n_converge": 3, "swad_n_tolerance": 3, "lr": 0.01}
# As the subprocesses (OMP_NUM_THREADS=1): the same kernels.
pytestmark = pytest.mark.usefixtures("one_torch_thread")
RESUMED = {"ERM+SWAD": SWAD_HPARAMS, "FGMix+SWAD": SWAD_HPARAMS, "ERM+MA": {"ma_start": 5}}


def assert_same_run(reference, resumed):
    assert (resumed / "done").exists()
    assert comparable_records(resumed) == comparable_records(reference)
    a = torch.load(reference / "model.pkl", weights_only=True)["model_dict"]
    b = torch.load(resumed / "model.pkl", weights_only=True)["model_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    runs = {}
    for algorithm, hparams in RESUMED.items():
        out = tmp_path_factory.mktemp("reference") / algorithm
        assert train.main(job_argv(out, algorithm, hparams=hparams)) == 0
        runs[algorithm] = out
    return runs


def replayed_windows(records, n_converge, n_tolerance, ratio):
    """(first step, last step) of the model SWAD should report at each record, from the
    records' segment losses alone."""
    steps = [r["step"] for r in records]
    starts = [0] + [s + 1 for s in steps[:-1]]   # segment k: starts[k] .. steps[k]
    valley, windows = LossValley(n_converge, n_tolerance, ratio), []
    for k, record in enumerate(records):
        valley.add(record["swad_val_loss"])
        if not valley.converged:
            first, last = 0, k
        else:
            first, last = valley.first, (valley.at_end() or [valley.last])[-1]
        windows.append((starts[first], steps[last]))
    return windows, valley


def test_swad_through_train_chooses_its_window_and_leaves_the_training_alone(references,
                                                                            tmp_path):
    records = comparable_records(references["ERM+SWAD"])
    windows = [(r["swad_first_step"], r["swad_last_step"]) for r in records]
    expected, valley = replayed_windows(records, 3, 3, 0.3)
    assert windows == expected and valley.converged
    assert windows[0] == (0, 0) and windows[-1][0] > 0   # the valley leaves the start out
    plain = tmp_path / "erm"
    assert train.main(job_argv(plain, "ERM", hparams={"lr": 0.01})) == 0
    erm = comparable_records(plain)
    assert [r["loss"] for r in erm] == [r["loss"] for r in records]
    for ours, theirs in zip(records, erm):   # records differ only by SWAD's keys and model
        assert set(ours) - set(theirs) == {"swad_val_loss", "swad_first_step", "swad_last_step"}
        assert ours["args"]["algorithm"] == "ERM+SWAD" and theirs["args"]["algorithm"] == "ERM"


def signal_at_call(monkeypatch, call, signum):
    original = weight_averaging.AveragingWrapper.update
    calls = {"n": 0}

    def update(self, minibatches, unlabeled=None):
        values = original(self, minibatches, unlabeled)
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signum)
        return values

    monkeypatch.setattr(weight_averaging.AveragingWrapper, "update", update)


@pytest.mark.parametrize("algorithm", ["FGMix+SWAD", "ERM+MA"])
def test_sigusr1_between_records_resumes_exactly(algorithm, references, tmp_path, monkeypatch):
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        signal_at_call(patch, 8, signal.SIGUSR1)   # step 7: a segment half-way through
        argv = job_argv(out, algorithm, hparams=RESUMED[algorithm])
        assert train.main(argv) == 128 + signal.SIGUSR1
    assert not (out / "done").exists()
    assert train.main(argv) == 0
    assert_same_run(references[algorithm], out)


KILLING_TRAIN = """
import os, signal, sys
from domainbed.algorithms import weight_averaging
original = weight_averaging.AveragingWrapper.update
calls = [0]
def update(self, minibatches, unlabeled=None):
    values = original(self, minibatches, unlabeled)
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT_CALL"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return values
weight_averaging.AveragingWrapper.update = update
from domainbed.scripts import train
sys.exit(train.main(sys.argv[1:]))
"""


def test_sigkill_then_restart_resumes_swad_exactly(references, tmp_path):
    out = tmp_path / "killed"
    argv = job_argv(out, "ERM+SWAD", hparams=SWAD_HPARAMS)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT, KILL_AT_CALL="12")
    killed = subprocess.run([sys.executable, "-c", KILLING_TRAIN, *argv], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "done").exists() and (out / "checkpoint.pt").exists()
    assert train.main(argv) == 0
    assert "Resuming from checkpoint.pt at step 11" in (out / "out.txt").read_text()
    assert_same_run(references["ERM+SWAD"], out)


def run_sweep(command, output_dir, *args):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1",
               DOMAINBED_POOL_WORKERS="2")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run([sys.executable, "-m", "domainbed.scripts.sweep", command,
                           "--output_dir", str(output_dir), *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)


def test_sweep_and_collect_results_keep_averaged_runs_apart(tmp_path):
    args = ["--data_dir", "unused", "--datasets", "Debug28", "--algorithms", "ERM",
            "ERM+SWAD", "FGMix+SWAD", "--n_hparams", "1", "--n_trials", "1", "--steps", "2",
            "--single_test_envs", "--skip_confirmation"]
    launched = run_sweep("launch", tmp_path, *args, "--command_launcher", "pool")
    assert launched.returncode == 0, launched.stderr
    status = run_sweep("status", tmp_path, *args)
    assert "9 jobs: 9 done" in status.stdout
    algorithms = {}
    for job in tmp_path.iterdir():
        if job.is_dir():
            record = json.loads((job / "results.jsonl").read_text().splitlines()[-1])
            algorithms.setdefault(record["args"]["algorithm"], set()).add(job.name)
    assert {name: len(jobs) for name, jobs in algorithms.items()} == {
        "ERM": 3, "ERM+SWAD": 3, "FGMix+SWAD": 3}   # nine job hashes
    collected = subprocess.run(
        [sys.executable, "-m", "domainbed.scripts.collect_results", "--input_dir", str(tmp_path)],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True,
        text=True)
    assert collected.returncode == 0, collected.stderr
    rows = [line.split()[0] for line in collected.stdout.splitlines()
            if line.startswith(("ERM", "FGMix"))]
    assert rows.count("ERM") == rows.count("ERM+SWAD") == rows.count("FGMix+SWAD") == 6
    bad = run_sweep("launch", tmp_path / "bad", "--data_dir", "unused", "--datasets", "Debug28",
                    "--algorithms", "ERN+SWAD", "--command_launcher", "dummy")
    assert bad.returncode == 2 and "Did you mean 'ERM'?" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
