"""The linear unit tests for invariance (IUTExample2/2s/3/3s): the data-generating processes,
seeding, the environment layout, hparams, bad input, sweeps, vector featurizers, training."""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from domainbed import algorithms, datasets, hparams_registry, networks
from domainbed.datasets import iut
from domainbed.datasets.base import DatasetArgumentError, MultipleDomainDataset
from domainbed.lib.misc import seed_hash
from domainbed.scripts import sweep, train
from domainbed.sweeps.errors import SweepError
from domainbed.sweeps.job_list import all_test_env_combinations, make_args_list
from domainbed.sweeps.jobs import Job
from domainbed import training
from domainbed.training.build import build_dataset
import support

REPO_ROOT = str(support.REPO_ROOT)
PROBLEMS = ["IUTExample2", "IUTExample2s", "IUTExample3", "IUTExample3s"]
N = 4000          # samples per environment in the moment tests
SMALL = {"iut_n_samples": 100}


def build(name, trial_seed=0, **hparams):
    hparams = {"iut_n_samples": N, **hparams}
    cls = datasets.get_dataset_class(name)
    return cls(None, [cls.test_env(hparams)], hparams, trial_seed=trial_seed)


@pytest.fixture(scope="module")
def built():
    return {name: build(name) for name in PROBLEMS}


def blocks(dataset, env, dim_inv=5):
    """(x_inv, x_spu, y) of one environment as float64 numpy, unscrambled."""
    x, y = dataset[env].tensors
    x = x.double().numpy() @ dataset.scramble.T   # Q is orthogonal: Q^-1 = Q^T
    return x[:, :dim_inv], x[:, dim_inv:], y.numpy()


def assert_close(value, expected, tolerance, what):
    assert np.all(np.abs(np.asarray(value) - expected) <= tolerance), (what, value, expected)


# ---------------------------------------------------------------------------------------
# Layout

@pytest.mark.parametrize("name", PROBLEMS)
def test_layout_names_sizes_dtypes(name):
    dataset = build(name, iut_n_envs=5, iut_dim_inv=3, iut_dim_spu=2, iut_n_samples=21)
    assert len(dataset) == 6
    assert dataset.environments == ["E0", "E1", "E2", "E3", "E4", "test"]
    assert [len(env) for env in dataset] == [21] * 5 + [5 * 21]
    assert dataset.input_shape == (5,) and dataset.num_classes == 2
    for env in dataset:
        x, y = env.tensors
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == (5,)
        assert y.dtype == torch.int64 and set(y.tolist()) <= {0, 1}
    cls = type(dataset)
    assert isinstance(dataset, MultipleDomainDataset) and cls.SEEDED_BY_TRIAL
    assert (cls.N_WORKERS, cls.N_STEPS, cls.CHECKPOINT_FREQ) == (0, 401, 100)
    assert cls.SMALL_IMAGES is False


def test_environment_names_follow_hparams_and_stay_torch_free():
    code = ("import sys, domainbed.datasets as d; "
            "print(d.num_environments('IUTExample2'), "
            "d.num_environments('IUTExample3s', {'iut_n_envs': 6}), "
            "d.get_dataset_class('IUTExample2').environment_names({'iut_n_envs': 2}), "
            "d.num_environments('PACS', {'iut_n_envs': 6})); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "7", "['E0',", "'E1',", "'test']", "4"]


def test_default_environment_list_and_sweep_test_envs():
    cls = datasets.get_dataset_class("IUTExample2")
    assert cls.ENVIRONMENTS == cls.environment_names() == ["E0", "E1", "E2", "test"]
    assert cls.sweep_test_envs(7, False) == cls.sweep_test_envs(7, True) == [[6]]
    base = MultipleDomainDataset
    assert base.sweep_test_envs(4, True) == [[0], [1], [2], [3]]
    assert base.sweep_test_envs(3, False) == [[0], [0, 1], [0, 2], [1], [1, 2], [2]]
    assert base.sweep_test_envs(6, False) == list(all_test_env_combinations(6))


# ---------------------------------------------------------------------------------------
# Example2

def test_example2_environment_parameters():
    dataset = build("IUTExample2", iut_n_envs=8, iut_n_samples=10)
    params = [(env["p"], env["s"]) for env in dataset.env_params]
    assert params[:3] == [(0.95, 0.3), (0.97, 0.5), (0.99, 0.7)]
    assert all(0.9 <= p < 1.0 and 0.3 <= s < 0.7 for p, s in params[3:])
    assert len(set(params[3:])) == 5  # drawn, not repeated


def test_example2_group_frequencies_match_w(built):
    dataset = built["IUTExample2"]
    for e, env in enumerate(dataset.env_params):
        w = iut.example2_group_probabilities(env["p"], env["s"])
        assert abs(w.sum() - 1) < 1e-12
        freq = np.bincount(dataset.groups[e], minlength=4) / N
        assert_close(freq, w, 5 * np.sqrt(w * (1 - w) / N) + 1e-3, f"groups of E{e}")
    # the pooled test env: the mixture of the training environments' w
    mixture = np.mean([iut.example2_group_probabilities(env["p"], env["s"])
                       for env in dataset.env_params], axis=0)
    freq = np.bincount(dataset.groups[3], minlength=4) / (3 * N)
    assert_close(freq, mixture, 5 * np.sqrt(mixture * (1 - mixture) / (3 * N)), "test groups")


def test_example2_block_moments_per_group(built):
    dataset = built["IUTExample2"]
    animal, background = iut.EXAMPLE2_ANIMAL, iut.EXAMPLE2_BACKGROUND
    parts = zip(*(blocks(dataset, e) for e in range(3)))
    x_inv, x_spu, _ = (np.concatenate(part) for part in parts)
    groups = np.concatenate(dataset.groups[:3])
    sd = 1 / np.sqrt(10)
    for k in range(4):
        inv, spu = x_inv[groups == k], x_spu[groups == k]
        n_k = len(inv)
        assert n_k > 50
        assert_close(inv.mean(0), 0.01 * animal[k], 6 * 0.01 * sd / np.sqrt(n_k), f"inv mean {k}")
        assert_close(spu.mean(0), background[k], 6 * sd / np.sqrt(n_k), f"spu mean {k}")
        assert_close(inv.std(0), 0.01 * sd, 0.01 * sd * 6 / np.sqrt(n_k) + 1e-6, f"inv sd {k}")
        assert_close(spu.std(0), sd, sd * 6 / np.sqrt(n_k), f"spu sd {k}")


@pytest.mark.parametrize("name", ["IUTExample2", "IUTExample2s"])
def test_example2_label_is_the_sign_of_the_invariant_sum(built, name):
    dataset = built[name]
    for env in range(4):
        x_inv, _, y = blocks(dataset, env)
        assert np.array_equal(y, (x_inv.sum(1) > 0).astype(np.int64))
        # the label is the animal: cows (groups 0, 1) have a positive invariant sum
        assert np.mean(y == (dataset.groups[env] < 2)) > 0.99


# ---------------------------------------------------------------------------------------
# Example3

def test_example3_class_balance_ordering_and_moments(built):
    dataset = built["IUTExample3"]
    assert len(dataset.env_params) == 3
    for e, env in enumerate(dataset.env_params):
        mu = env["mu"]
        assert mu.shape == (5,)
        x_inv, x_spu, y = blocks(dataset, e)
        assert np.array_equal(y, np.repeat([0, 1], N // 2))  # class 0 first, half and half
        tol = 6 * 0.1 / np.sqrt(N // 2)
        for label, sign in ((0, 1.0), (1, -1.0)):
            inv, spu = x_inv[y == label], x_spu[y == label]
            assert_close(inv.mean(0), sign * 0.1, tol, f"E{e} class {label} inv mean")
            assert_close(spu.mean(0), sign * mu, tol, f"E{e} class {label} spu mean")
            assert_close(inv.std(0), 0.1, 0.1 * 6 / np.sqrt(N // 2), "inv sd")
            assert_close(spu.std(0), 0.1, 0.1 * 6 / np.sqrt(N // 2), "spu sd")
    mus = np.stack([env["mu"] for env in dataset.env_params])
    assert np.all(np.abs(mus) < 5) and mus.std() > 0.3  # N(0, I) draws, distinct per env
    _, _, y_test = blocks(dataset, 3)
    assert np.array_equal(y_test, np.tile(np.repeat([0, 1], N // 2), 3))


def test_example3_odd_sample_count_puts_the_extra_sample_in_class_0():
    dataset = build("IUTExample3", iut_n_samples=11)
    assert dataset[0].tensors[1].tolist() == [0] * 6 + [1] * 5


# ---------------------------------------------------------------------------------------
# The test environment: the spurious block shuffled within each environment

def spurious_signal(name, dataset, env, part=None):
    """A per-sample statistic of the spurious block that predicts the label in training."""
    _, x_spu, y = blocks(dataset, env)
    if part is not None:  # the test env's rows drawn from training environment `part`
        x_spu, y = x_spu[part * N:(part + 1) * N], y[part * N:(part + 1) * N]
    if "Example2" in name:
        return x_spu.mean(1), y   # the background's sign
    mu = dataset.env_params[env if part is None else part]["mu"]
    return x_spu @ mu, y


@pytest.mark.parametrize("name", ["IUTExample2", "IUTExample3"])
def test_label_and_spurious_block_correlate_in_training_not_in_test(built, name):
    dataset = built[name]
    for env in range(3):
        signal, y = spurious_signal(name, dataset, env)
        assert abs(np.corrcoef(signal, y)[0, 1]) > 0.7, (name, env)
    for part in range(3):
        signal, y = spurious_signal(name, dataset, 3, part)
        assert abs(np.corrcoef(signal, y)[0, 1]) < 6 / np.sqrt(N), (name, part)


@pytest.mark.parametrize("name", ["IUTExample2", "IUTExample3"])
def test_test_parts_replay_the_documented_draws(built, name):
    """Replaying the documented draw order: each test part is a fresh draw of its training
    environment, invariant block and labels untouched, spurious rows permuted."""
    dataset = built[name]
    config = dataset.problem_config
    draw_envs, draw_samples = iut.PROCESSES[dataset.PROCESS]
    rng = np.random.RandomState(dataset.data_seed(0))
    params = draw_envs(rng, config)
    train_parts = [draw_samples(rng, env, N, config) for env in params]
    for e, (x_inv, x_spu, y, _) in enumerate(train_parts):
        got_inv, got_spu, got_y = blocks(dataset, e)
        assert np.allclose(got_inv, x_inv, atol=1e-6) and np.allclose(got_spu, x_spu, atol=1e-6)
        assert np.array_equal(got_y, y)
    test_inv, test_spu, test_y = blocks(dataset, 3)
    for part, env in enumerate(params):
        x_inv, x_spu, y, _ = draw_samples(rng, env, N, config)
        permutation = rng.permutation(N)
        rows = slice(part * N, (part + 1) * N)
        assert np.allclose(test_inv[rows], x_inv, atol=1e-6) and np.array_equal(test_y[rows], y)
        assert np.allclose(test_spu[rows], x_spu[permutation], atol=1e-6)
        assert not np.allclose(test_spu[rows], x_spu, atol=1e-6)
        # the same multiset of spurious rows
        assert np.allclose(np.sort(test_spu[rows], axis=0), np.sort(x_spu, axis=0), atol=1e-6)


# ---------------------------------------------------------------------------------------
# Scrambled versions

@pytest.mark.parametrize("name", ["IUTExample2s", "IUTExample3s"])
def test_scrambled_is_the_plain_twin_times_an_orthogonal_q(built, name):
    scrambled, plain = built[name], built[name[:-1]]
    q = scrambled.scramble
    assert q.shape == (10, 10)
    assert np.allclose(q @ q.T, np.eye(10), atol=1e-12)
    assert np.abs(q[:5, 5:]).max() > 0.1 and np.abs(q[5:, :5]).max() > 0.1  # blocks mixed
    assert np.array_equal(plain.scramble, np.eye(10))
    for env in range(4):
        x_s, y_s = scrambled[env].tensors
        x, y = plain[env].tensors
        assert torch.equal(y_s, y)
        assert np.allclose(x_s.double().numpy() @ q.T, x.double().numpy(), atol=1e-5)
        assert np.allclose(x.double().numpy() @ q, x_s.double().numpy(), atol=1e-5)
        assert not np.allclose(x_s.numpy(), x.numpy(), atol=1e-2)


def test_scrambling_matrix_depends_on_the_trial():
    a = build("IUTExample2s", trial_seed=0, iut_n_samples=10).scramble
    b = build("IUTExample2s", trial_seed=1, iut_n_samples=10).scramble
    c = build("IUTExample3s", trial_seed=0, iut_n_samples=10).scramble
    assert not np.allclose(a, b) and not np.allclose(a, c)


# ---------------------------------------------------------------------------------------
# Seeding

def global_rng_states():
    return (random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state())


@pytest.mark.parametrize("name", PROBLEMS)
def test_trial_seed_decides_the_draw_and_the_global_rngs_are_untouched(name):
    before = global_rng_states()
    first, again, other = (build(name, trial_seed=t, iut_n_samples=50) for t in (3, 3, 4))
    after = global_rng_states()
    assert before[0] == after[0] and before[1] == after[1] and torch.equal(before[2], after[2])
    for env in range(4):
        for a, b, c in zip(first[env].tensors, again[env].tensors, other[env].tensors):
            assert torch.equal(a, b)
        assert not torch.equal(first[env].tensors[0], other[env].tensors[0])
    cls = type(first)
    assert cls.data_seed(3) == iut.misc.seed_hash("invariance-unit-tests", cls.PROCESS, 3)


def test_plain_problems_have_distinct_streams():
    assert datasets.get_dataset_class("IUTExample2").data_seed(0) != \
        datasets.get_dataset_class("IUTExample3").data_seed(0)


def test_train_passes_the_trial_seed():
    config = training.parse_command_line(
        ["--dataset", "IUTExample3", "--test_envs", "3", "--trial_seed", "5"])
    hparams = hparams_registry.default_hparams("ERM", "IUTExample3") | SMALL
    cls = datasets.get_dataset_class("IUTExample3")
    built_by_train = build_dataset(cls, config, hparams)
    direct = cls(None, [3], hparams, trial_seed=5)
    assert torch.equal(built_by_train[0].tensors[0], direct[0].tensors[0])
    assert not torch.equal(built_by_train[0].tensors[0], cls(None, [3], hparams)[0].tensors[0])


# ---------------------------------------------------------------------------------------
# Hparams

@pytest.mark.parametrize("name", PROBLEMS)
def test_hparam_defaults_and_no_search_over_the_problem(name):
    defaults = hparams_registry.default_hparams("ERM", name)
    expected = {"iut_n_envs": 3, "iut_dim_inv": 5, "iut_dim_spu": 5, "iut_n_samples": 10000,
                "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "vector_featurizer": "linear",
                "mlp_width": 256, "mlp_depth": 3, "mlp_dropout": 0.0}
    assert {k: defaults[k] for k in expected} == expected
    for seed in range(1, 30):
        drawn = hparams_registry.random_hparams("ERM", name, seed)
        for fixed in ("iut_n_envs", "iut_dim_inv", "iut_dim_spu", "iut_n_samples",
                      "vector_featurizer"):
            assert drawn[fixed] == defaults[fixed]
        assert 1e-4 <= drawn["lr"] <= 1e-2 and 1e-6 <= drawn["weight_decay"] <= 1e-2
        assert 32 <= drawn["batch_size"] < 256 and isinstance(drawn["batch_size"], int)
        assert 64 <= drawn["mlp_width"] < 1024 and drawn["mlp_depth"] in (3, 4, 5)
        assert drawn["mlp_dropout"] in (0.0, 0.1, 0.5)


def test_dataset_declared_hparams_move_no_other_draw():
    erm = hparams_registry.random_hparams("ERM", "IUTExample2", 7)
    vlcs = hparams_registry.random_hparams("ERM", "VLCS", 7)
    for name in ("resnet_dropout", "vit_dropout", "nonlinear_classifier"):
        assert erm[name] == vlcs[name]
    assert erm["lr"] != vlcs["lr"]  # the dataset's own distribution
    assert "vector_featurizer" not in vlcs and "mlp_width" not in vlcs and "iut_n_envs" not in vlcs
    dann = hparams_registry.random_hparams("DANN", "IUTExample2", 7)
    for name in ("mlp_width", "mlp_depth", "mlp_dropout", "lr", "batch_size"):
        assert dann[name] == erm[name], name
    assert 1e-4 <= dann["lr_g"] <= 1e-2 and 1e-4 <= dann["lr_d"] <= 1e-2


# ---------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written

BAD = {
    "test env not the last": (["--test_envs", "0"], "pass --test_envs 3"),
    "out of range": (["--test_envs", "9"], "pass --test_envs 3"),
    "two test envs": (["--test_envs", "2", "3"], "pass --test_envs 3"),
    "last env of other n_envs": (["--test_envs", "3", "--hparams", '{"iut_n_envs": 6}'],
                                 "pass --test_envs 6"),
    "one env": (["--test_envs", "1", "--hparams", '{"iut_n_envs": 1}'], "iut_n_envs"),
    "no invariant block": (["--test_envs", "3", "--hparams", '{"iut_dim_inv": 0}'], "iut_dim_inv"),
    "negative spurious": (["--test_envs", "3", "--hparams", '{"iut_dim_spu": -1}'], "iut_dim_spu"),
    "too few samples": (["--test_envs", "3", "--hparams", '{"iut_n_samples": 9}'], "iut_n_samples"),
    "fractional": (["--test_envs", "3", "--hparams", '{"iut_n_envs": 2.5}'], "must be an integer"),
    "featurizer": (["--test_envs", "3", "--hparams", '{"vector_featurizer": "cnn"}'],
                   "vector_featurizer must be 'linear' or 'mlp'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_are_one_line_errors(case, tmp_path, capsys):
    flags, hint = BAD[case]
    out = tmp_path / "job"
    code = train.main(["--dataset", "IUTExample2", "--output_dir", str(out), *flags])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith("train.py: error: ") and hint in lines[0], lines[0]
    assert captured.out == "" and not out.exists()


def test_bad_test_env_through_the_command_line(tmp_path):
    out = tmp_path / "job"
    done = subprocess.run(
        [sys.executable, "-m", "domainbed.scripts.train", "--dataset", "IUTExample3s",
         "--test_envs", "0", "--output_dir", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "train.py: error: IUTExample3s tests on its last environment only: pass --test_envs 3 "
        "(the 'test' environment after iut_n_envs=3 training environments), got --test_envs 0"]
    assert not out.exists()


def test_dataset_argument_error_is_a_value_error():
    assert issubclass(DatasetArgumentError, ValueError)
    cls = datasets.get_dataset_class("IUTExample2")
    cls.check_arguments([3], {})
    with pytest.raises(DatasetArgumentError, match="iut_n_samples"):
        cls(None, [3], {"iut_n_samples": 3})


# ---------------------------------------------------------------------------------------
# Sweeps

def make_args(dataset_names, hparams, single_test_envs=False):
    return make_args_list(
        n_trials=2, dataset_names=dataset_names, algorithms=["ERM", "IRM"], n_hparams_from=0,
        n_hparams=2, steps=3, data_dir="/tmp/data", task="domain_generalization",
        holdout_fraction=0.2, single_test_envs=single_test_envs, hparams=hparams)


@pytest.mark.parametrize("single_test_envs", [False, True])
def test_sweep_holds_out_only_the_test_environment(single_test_envs):
    args_list = make_args(PROBLEMS, '{"iut_n_envs": 6}', single_test_envs)
    assert len(args_list) == 4 * 2 * 2 * 2
    assert {tuple(args["test_envs"]) for args in args_list} == {(6,)}
    assert all(args["hparams"] == '{"iut_n_envs": 6}' for args in args_list)
    assert {tuple(a["test_envs"]) for a in make_args(["IUTExample2"], None)} == {(3,)}


def upstream_args_list(n_trials, dataset_names, algorithm_names, n_hparams, hparams, single):
    """Upstream's make_args_list (same loops, same dicts)."""
    args_list = []
    for trial_seed in range(n_trials):
        for dataset in dataset_names:
            for algorithm in algorithm_names:
                n_envs = len(datasets.get_dataset_class(dataset).ENVIRONMENTS)
                all_test_envs = ([[i] for i in range(n_envs)] if single
                                 else all_test_env_combinations(n_envs))
                for test_envs in all_test_envs:
                    for hparams_seed in range(0, n_hparams):
                        args = {"dataset": dataset, "algorithm": algorithm, "test_envs": test_envs,
                                "holdout_fraction": 0.2, "hparams_seed": hparams_seed,
                                "data_dir": "/tmp/data", "task": "domain_generalization",
                                "trial_seed": trial_seed,
                                "seed": seed_hash(dataset, algorithm, test_envs,
                                                  hparams_seed, trial_seed),
                                "steps": 3}
                        if hparams is not None:
                            args["hparams"] = hparams
                        args_list.append(args)
    return args_list


@pytest.mark.parametrize("hparams", [None, '{"lr": 0.001}'])
@pytest.mark.parametrize("single_test_envs", [False, True])
def test_sweep_jobs_of_other_datasets_are_upstream_s(hparams, single_test_envs, tmp_path):
    names = ["RotatedMNIST", "Debug28"]
    ours = make_args(names, hparams, single_test_envs)
    theirs = upstream_args_list(2, names, ["ERM", "IRM"], 2, hparams, single_test_envs)
    assert ours == theirs
    assert ([Job(a, str(tmp_path)).output_dir for a in ours]
            == [Job(a, str(tmp_path)).output_dir for a in theirs])


def test_sweep_refuses_bad_problem_hparams_in_one_line(capsys):
    # The library raises (sweep.py prints it as `sweep.py: error: <message>`, exit 2).
    with pytest.raises(SweepError) as exit_info:
        make_args(["IUTExample2"], '{"iut_n_envs": 1}')
    assert exit_info.value.exit_code == 2
    lines = str(exit_info.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith("--hparams: ")
    assert "iut_n_envs" in lines[0]


def test_sweep_launch_with_the_dummy_launcher(tmp_path, capsys):
    sweep.main(["launch", "--datasets", "IUTExample2", "--algorithms", "ERM",
                "--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "sweep"),
                "--command_launcher", "dummy", "--n_hparams", "1", "--n_trials", "1",
                "--hparams", '{"iut_n_envs": 6}', "--skip_confirmation"])
    out = capsys.readouterr().out
    assert "About to launch 1 jobs." in out and "[6]" in out
    assert "--test_envs 6 " in out


# ---------------------------------------------------------------------------------------
# Vector featurizers and algorithms

def test_vector_featurizers():
    hparams = hparams_registry.default_hparams("ERM", "IUTExample2")
    linear = networks.Featurizer((10,), hparams)
    assert isinstance(linear, networks.IdentityFeaturizer) and linear.n_outputs == 10
    assert list(linear.parameters()) == []
    x = torch.randn(4, 10)
    assert torch.equal(linear(x), x)
    mlp = networks.Featurizer((10,), {**hparams, "vector_featurizer": "mlp"})
    assert isinstance(mlp, networks.MLP) and mlp.n_outputs == 256
    assert isinstance(networks.Featurizer((10,), {"mlp_width": 8, "mlp_depth": 3,
                                                  "mlp_dropout": 0.0}), networks.MLP)  # upstream
    with pytest.raises(ValueError, match="vector_featurizer"):
        networks.Featurizer((10,), {**hparams, "vector_featurizer": "cnn"})


ALGORITHMS = ["ERM", "IRM", "IGA", "ANDMask", "Mixup", "FGMix", "InterpMix", "ExtrapMix", "GMix",
              "DANN", "RSC"]


@pytest.fixture(scope="module")
def small_iut():
    return build("IUTExample2", iut_n_samples=32)


@pytest.mark.parametrize("featurizer", ["linear", "mlp"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithms_train_on_vector_inputs(small_iut, algorithm, featurizer):
    assert algorithm in algorithms.ALGORITHMS
    hparams = hparams_registry.default_hparams(algorithm, "IUTExample2")
    hparams.update(vector_featurizer=featurizer, mlp_width=16)
    torch.manual_seed(0)
    model = algorithms.get_algorithm_class(algorithm)(small_iut.input_shape, 2, 3, hparams)
    minibatches = [env.tensors for env in small_iut.datasets[:3]]
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        model.update(minibatches, None)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with torch.no_grad():
        logits = model.predict(small_iut[3].tensors[0])
    assert logits.shape == (96, 2) and torch.isfinite(logits).all()


@pytest.mark.parametrize("featurizer", ["linear", "mlp"])
def test_three_step_training_run(tmp_path, featurizer):
    out = tmp_path / featurizer
    hparams = json.dumps({"iut_n_samples": 50, "batch_size": 16, "vector_featurizer": featurizer})
    code = train.main(["--dataset", "IUTExample2", "--test_envs", "3", "--steps", "3",
                       "--checkpoint_freq", "2", "--hparams", hparams, "--trial_seed", "1",
                       "--output_dir", str(out), "--skip_model_save"])
    assert code == 0 and (out / "done").exists()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2]
    record = records[-1]
    assert record["hparams"]["vector_featurizer"] == featurizer
    assert {f"env{i}_{s}_acc" for i in range(4) for s in ("in", "out")} <= set(record)


def test_oracle_shuffles_training_spurious_block_and_keeps_the_test_environment():
    from domainbed.datasets.iut import IUTExample2

    hparams = {"iut_n_samples": 2000}
    plain = IUTExample2(None, [3], hparams, trial_seed=4)
    oracle = IUTExample2(None, [3], {**hparams, "iut_oracle": True}, trial_seed=4)
    # The test environment (and the labels) are those of the plain run of the same trial.
    assert torch.equal(plain[3].tensors[0], oracle[3].tensors[0])
    for env in range(3):
        x_plain, y_plain = plain[env].tensors
        x_oracle, y_oracle = oracle[env].tensors
        assert torch.equal(y_plain, y_oracle)
        assert torch.equal(x_plain[:, :5], x_oracle[:, :5])   # invariant block untouched
        # The spurious block is a row permutation: same multiset, label information gone.
        assert torch.equal(x_plain[:, 5:].sort(0).values, x_oracle[:, 5:].sort(0).values)
        sign = 2.0 * y_oracle.float() - 1.0
        sign = sign - sign.mean()

        def covariance(x):
            return float((sign[:, None] * (x[:, 5:] - x[:, 5:].mean(0))).mean())

        assert abs(covariance(x_oracle)) < 0.05
        assert covariance(x_plain) > 0.5
