"""Property-based: the promise of docs/reliability.md under generated input (issue 12).

Generated `--hparams` values and argument combinations for `train`, and corrupted job
directories for `train`, `sweep status` and `collect_results`. Each must end with exit 0
or 2 (3 for a non-finite loss), with a refusal as exactly one line and no traceback;
nothing outside the job directory changes, a refused job changes nothing at all, and no
record is lost (a dropped line is kept in a `*.corrupt-N` copy; a restarted job ends with
every record of the uninterrupted run).

Sized for a 2-core machine: Debug28 with a one-layer featurizer in place of the MNIST CNN
(the network is not what is tested), 1-3 steps, in-process calls, 15-30 examples each.
"""
import contextlib
import io
import json
import os
import shutil
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from domainbed.lib import jobdir  # noqa: E402
from domainbed.scripts import collect_results, sweep, train  # noqa: E402
from domainbed.sweeps.job_list import make_args_list
from domainbed.sweeps.jobs import Job

# Deterministic examples in the suite; DOMAINBED_PROPERTY_EXAMPLES=500 explores (random).
EXPLORE = int(os.environ.get("DOMAINBED_PROPERTY_EXAMPLES", "0"))
SETTINGS = dict(deadline=None, derandomize=not EXPLORE, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def examples(n):
    return EXPLORE or n


@pytest.fixture(scope="module", autouse=True)
def tiny_featurizer():
    """A linear featurizer for Debug28's 3x28x28 inputs: each run costs milliseconds."""
    import torch

    from domainbed import networks

    class Tiny(torch.nn.Module):
        n_outputs = 4

        def __init__(self, input_shape, hparams):
            super().__init__()
            self.linear = torch.nn.Linear(int(torch.tensor(input_shape).prod()), self.n_outputs)

        def forward(self, x):
            return self.linear(x.flatten(1))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(networks, "Featurizer", Tiny)
        yield


def snapshot(root, skip=None):
    """relative path -> bytes (files), 'dir', 'link:<target>' or 'special' for everything
    under root, except below `skip`."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if skip and (rel == skip or rel.startswith(skip + os.sep)):
                continue
            if os.path.islink(path):
                state[rel] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                state[rel] = "dir"
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    state[rel] = f.read()
            else:
                state[rel] = "special"
    return state


def call(main, argv):
    """(exit code, stdout, stderr) of an in-process main(argv); any exception but
    SystemExit propagates (hypothesis reports it as a counterexample)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    code = 0 if code is None else code
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


def assert_clean_ending(code, err, prog, allowed=(0, 2)):
    assert code in allowed, (code, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if code != 0:
        assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    for line in lines:
        assert line.startswith(f"{prog}: "), err


# ---------------------------------------------------------------------------------------
# train: generated --hparams and arguments

JSON_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=5)
VALUES = {   # cheap valid values mixed with every kind of invalid one
    "batch_size": st.integers(-3, 12) | st.floats(allow_nan=True) | JSON_JUNK,
    "lr": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2, 2) | JSON_JUNK,
    "weight_decay": st.floats(-1, 1) | st.just(float("nan")) | JSON_JUNK,
    "resnet_dropout": st.floats(-1, 2) | JSON_JUNK,
    "class_balanced": st.booleans() | JSON_JUNK,
    "nonlinear_classifier": st.booleans() | st.integers(0, 1),
    "data_augmentation": st.booleans(),
}
HPARAMS = st.dictionaries(
    st.sampled_from(list(VALUES)) | st.text(max_size=8), st.none(), max_size=3
).flatmap(lambda keys: st.fixed_dictionaries(
    {k: VALUES.get(k, JSON_JUNK) for k in keys}))
HPARAMS_TEXT = HPARAMS.map(json.dumps) | st.text(max_size=12) | st.sampled_from(
    ["[1]", "null", "{", '{"lr": NaN}', '{"lr": 1e999}', "1e5"])

SEEDS = st.integers(-2, 3) | st.sampled_from([2**32 - 1, 2**32, 2**40])
ARGS = st.fixed_dictionaries({
    "--hparams": st.none() | HPARAMS_TEXT,
    "--test_envs": st.lists(st.integers(-1, 3), min_size=1, max_size=4),
    "--steps": st.sampled_from([1, 2, -1]),
    "--checkpoint_freq": st.sampled_from([None, 1, -5]),
    "--holdout_fraction": st.sampled_from([None, 0.2, 0.5, 0.0, 1.0, -0.1, float("nan")]),
    "--seed": st.none() | SEEDS,
    "--trial_seed": st.none() | SEEDS,
    "--hparams_seed": st.none() | st.sampled_from([0, 1, -1, 2**32]),
    "--task": st.sampled_from([None, "domain_adaptation"]),
    "--uda_holdout_fraction": st.sampled_from([None, 0.5, 1.5]),
    "--algorithm": st.sampled_from(["ERM", "ERM", "Mixup", "ERN"]),
})


GOOD_VALUES = {
    "batch_size": st.integers(1, 8),
    "lr": st.floats(1e-6, 1.0),
    "weight_decay": st.floats(0, 0.1),
    "resnet_dropout": st.floats(0, 0.9),
    "class_balanced": st.booleans(),
    "nonlinear_classifier": st.booleans(),
}
GOOD_ARGS = st.fixed_dictionaries({   # mostly accepted: the runs that reach training
    "--hparams": st.lists(st.sampled_from(list(GOOD_VALUES)), max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: GOOD_VALUES[k] for k in keys})).map(json.dumps),
    "--test_envs": st.sampled_from([[0], [1], [2], [0, 1], [1, 2]]),
    "--steps": st.sampled_from([1, 2]),
    "--checkpoint_freq": st.sampled_from([None, 1]),
    "--holdout_fraction": st.sampled_from([None, 0.2, 0.5]),
    "--seed": st.none() | st.integers(0, 2**32 - 1),
    "--trial_seed": st.none() | st.integers(0, 3),
    "--hparams_seed": st.sampled_from([None, 0, 1, 2]),
    "--task": st.sampled_from([None, None, "domain_adaptation"]),
    "--uda_holdout_fraction": st.sampled_from([None, 0.5]),
    "--algorithm": st.sampled_from(["ERM", "Mixup", "CORAL"]),
})


def train_argv(output_dir, args):
    argv = ["--dataset", "Debug28", "--output_dir", output_dir, "--skip_model_save"]
    for flag, value in args.items():
        if value is None:
            continue
        if flag == "--test_envs":
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    if args["--hparams"] is None:
        argv += ["--hparams", '{"batch_size": 4}']
    return argv


@settings(max_examples=examples(40), **SETTINGS)
@given(args=ARGS | GOOD_ARGS)
def test_train_under_generated_arguments(args):
    with tempfile.TemporaryDirectory() as root:
        before = snapshot(root)
        out = os.path.join(root, "job")
        code, _, err = call(train.main, train_argv(out, args))
        hypothesis.event(f"exit {code}")
        assert_clean_ending(code, err, "train.py", allowed=(0, 2, 3))
        assert snapshot(root, skip="job") == before, "something outside the job changed"
        if code == 2:
            assert not os.path.exists(out), "a refused job wrote its directory"
        if code == 0:
            assert jobdir.is_done(out)


# ---------------------------------------------------------------------------------------
# train: corrupted job directories

CORRUPTIBLE = ["results.jsonl", "checkpoint.pt", "heartbeat.json", "job.json", "failed",
               ".lock", "launch.json", "out.txt", "model.pkl", "done"]
OPERATION = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 400)),
    st.tuples(st.just("replace"), st.binary(max_size=60)),
    st.tuples(st.just("append"), st.binary(max_size=60)),
    st.tuples(st.just("insert line"), st.binary(max_size=40) | st.sampled_from([
        b'{"step": 1}', b'{"step": 1, "args": {}}', b'{"step": 0, "args": {"seed": 5}}'])),
    st.tuples(st.just("duplicate line"), st.integers(0, 3)),
    st.tuples(st.just("directory"), st.none()),
    st.tuples(st.just("fifo"), st.none()),
    st.tuples(st.just("delete"), st.none()),
)
CORRUPTIONS = st.lists(st.tuples(st.sampled_from(CORRUPTIBLE), OPERATION), min_size=1,
                       max_size=3)


def apply_corruption(job_dir, name, operation):
    kind, payload = operation
    path = os.path.join(job_dir, name)
    exists = os.path.lexists(path)
    if kind in ("directory", "fifo", "delete") and exists:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    if kind == "directory":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "truncate" and os.path.isfile(path):
        with open(path, "r+b") as f:
            f.truncate(min(payload, os.path.getsize(path)))
    elif kind == "replace" and not os.path.isdir(path):
        if exists:
            os.remove(path)
        with open(path, "wb") as f:
            f.write(payload)
    elif kind == "append" and (os.path.isfile(path) or not exists):
        with open(path, "ab") as f:
            f.write(payload)
    elif kind == "duplicate line" and os.path.isfile(path):
        with open(path, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        if lines:
            lines.append(lines[payload % len(lines)])
            with open(path, "wb") as f:
                f.write(b"".join(lines))
    elif kind == "insert line" and os.path.isfile(path):
        with open(path, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        lines.insert(len(lines) // 2, payload.replace(b"\n", b" ") + b"\n")
        with open(path, "wb") as f:
            f.write(b"".join(lines))


STEPS = ["--dataset", "Debug28", "--steps", "3", "--checkpoint_freq", "2", "--hparams",
         '{"batch_size": 4}', "--skip_model_save"]


def comparable(record):
    record = dict(record)
    for key in ("step_time", "mem_gb", "args"):
        record.pop(key, None)
    return json.dumps(record, sort_keys=True)


def readable_records(path):
    try:
        return [r for _, _, r in jobdir.read_records_file(path) if r is not None]
    except jobdir.NotRegularFileError:
        return []


@pytest.fixture(scope="module")
def interrupted_job(tmp_path_factory):
    """(a job stopped at step 2 with a checkpoint, the uninterrupted run's records)."""
    from domainbed.algorithms.erm import ERM

    root = tmp_path_factory.mktemp("properties")
    reference = str(root / "reference")
    assert train.main([*STEPS, "--output_dir", reference]) == 0
    stopped = str(root / "stopped")
    original, calls = ERM.update, []

    def crash_at_step_2(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("stop here")
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ERM, "update", crash_at_step_2)
        with pytest.raises(RuntimeError):
            train.main([*STEPS, "--output_dir", stopped])
    jobdir.clear_failed(stopped)
    reference_records = {comparable(r) for r in readable_records(
        os.path.join(reference, "results.jsonl"))}
    return stopped, reference_records


@settings(max_examples=examples(30), **SETTINGS)
@given(corruptions=CORRUPTIONS)
def test_train_in_a_corrupted_job_directory(interrupted_job, corruptions):
    stopped, reference_records = interrupted_job
    with tempfile.TemporaryDirectory() as root:
        job = os.path.join(root, "job")
        shutil.copytree(stopped, job)
        for name, operation in corruptions:
            apply_corruption(job, name, operation)
        outside = snapshot(root, skip="job")
        inside = snapshot(job)
        records_before = {comparable(r) for r in readable_records(
            os.path.join(job, "results.jsonl")) if isinstance(r.get("step"), int)}
        code, _, err = call(train.main, [*STEPS, "--output_dir", job])
        hypothesis.event(f"exit {code}" + (" with warnings" if err else ""))
        assert_clean_ending(code, err, "train.py")
        assert snapshot(root, skip="job") == outside, "something outside the job changed"
        if code == 2 or "already done" in err:
            assert snapshot(job) == inside, "a refused (or done) job changed its directory"
            return
        after = {comparable(r) for r in readable_records(os.path.join(job, "results.jsonl"))}
        assert after == reference_records, "the finished job differs from the uninterrupted run"
        assert records_before & reference_records <= after, "a record of the job was lost"
        for line in err.strip().splitlines():
            assert line.startswith("train.py: warning: "), err


# ---------------------------------------------------------------------------------------
# sweep status and collect_results: read-only, whatever the job directories hold

DEBUG_SWEEP = ["--data_dir", "/tmp/no_data", "--algorithms", "ERM", "--datasets", "Debug28",
               "--n_hparams", "1", "--n_trials", "1"]


def _record(test_envs, step):
    args = {"dataset": "Debug28", "algorithm": "ERM", "test_envs": test_envs, "trial_seed": 0,
            "hparams_seed": 0, "holdout_fraction": 0.2, "steps": None, "output_dir": "x"}
    record = {"args": args, "hparams": {}, "step": step}
    for env in range(3):
        record[f"env{env}_in_acc"] = 0.5 + 0.01 * env + 0.001 * step
        record[f"env{env}_out_acc"] = 0.6 + 0.01 * env
    return record


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A dummy-launched Debug28 sweep whose jobs hold two records each, some done."""
    out = str(tmp_path_factory.mktemp("sweep") / "sweep")
    code, _, err = call(sweep.main, ["launch", "--output_dir", out, *DEBUG_SWEEP,
                                     "--command_launcher", "dummy", "--skip_confirmation"])
    assert code == 0, err
    jobs = [Job(a, out) for a in make_args_list(
        1, ["Debug28"], ["ERM"], 0, 1, None, "/tmp/no_data", "domain_generalization", 0.2,
        False, None)]
    for i, job in enumerate(jobs):
        with open(os.path.join(job.output_dir, "results.jsonl"), "w") as f:
            for step in (0, 5):
                f.write(json.dumps(_record(job.train_args["test_envs"], step)) + "\n")
        jobdir.write_heartbeat(job.output_dir, 5, 10, started=1.0)
        if i % 2:
            with open(os.path.join(job.output_dir, "done"), "w") as f:
                f.write("done")
    return out


JOB_FILES = CORRUPTIBLE + ["results.jsonl"] * 3
SWEEP_CORRUPTIONS = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(JOB_FILES),
                                       OPERATION), min_size=1, max_size=5)


def corrupted_copy(sweep_dir, root, corruptions):
    copy = os.path.join(root, "sweep")
    shutil.copytree(sweep_dir, copy, symlinks=True)
    job_dirs = sorted(os.path.join(copy, d) for d in os.listdir(copy))
    for index, name, operation in corruptions:
        if os.path.isdir(job_dirs[index]):
            apply_corruption(job_dirs[index], name, operation)
    return copy


@settings(max_examples=examples(30), **SETTINGS)
@given(corruptions=SWEEP_CORRUPTIONS)
def test_sweep_status_of_corrupted_jobs(sweep_dir, corruptions):
    with tempfile.TemporaryDirectory() as root:
        copy = corrupted_copy(sweep_dir, root, corruptions)
        before = snapshot(root)
        code, out, err = call(sweep.main, ["status", "--output_dir", copy, *DEBUG_SWEEP])
        assert code == 0 and err == "", err
        assert "6 jobs: " in out and out.rstrip().splitlines()[-1].startswith("ETA: ")
        assert snapshot(root) == before, "status changed something"


@settings(max_examples=examples(25), **SETTINGS)
@given(corruptions=SWEEP_CORRUPTIONS, fmt=st.sampled_from(["text", "latex", "json"]))
def test_collect_results_of_corrupted_jobs(sweep_dir, corruptions, fmt):
    with tempfile.TemporaryDirectory() as root:
        copy = corrupted_copy(sweep_dir, root, corruptions)
        before = snapshot(root)
        code, out, err = call(collect_results.main, ["--input_dir", copy, "--format", fmt])
        hypothesis.event(f"exit {code}")
        assert_clean_ending(code, err, "collect_results")
        after = snapshot(root)
        written = os.path.join("sweep", collect_results.RESULTS_FILE[fmt])
        assert {k: v for k, v in after.items() if k != written} == \
            {k: v for k, v in before.items() if k != written}, "collect changed a job"
        if code == 0:
            assert after[written] == out.encode()
