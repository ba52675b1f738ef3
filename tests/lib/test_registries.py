"""Algorithm, dataset and launcher registries: derived lists, upstream order, lazy torch,
did-you-mean, plug-ins."""
import json
import os
import subprocess
import sys

import pytest

from domainbed import algorithms, datasets
from domainbed.algorithms.registry import UPSTREAM_ORDER
import support

REPO_ROOT = str(support.REPO_ROOT)


def test_registry_listing_does_not_import_torch():
    code = ("import sys; from domainbed import algorithms, datasets; "
            "a = algorithms.ALGORITHMS; d = datasets.DATASETS; "
            "n = datasets.num_environments('Debug28'); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(len(a), len(d), n)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "3"


def test_algorithms_listed_in_upstream_order_first():
    names = algorithms.ALGORITHMS
    upstream = [n for n in names if n in UPSTREAM_ORDER]
    assert upstream == sorted(upstream, key=UPSTREAM_ORDER.index)
    assert names[: len(upstream)] == upstream
    assert names[:1] == ["ERM"] and "Mixup" in names


def test_every_listed_algorithm_is_loadable():
    for name in algorithms.ALGORITHMS:
        cls = algorithms.get_algorithm_class(name)
        assert cls.__name__ == name
    assert algorithms.ERM is algorithms.get_algorithm_class("ERM")


def test_unknown_algorithm_suggests_a_name():
    with pytest.raises(NotImplementedError, match="Did you mean 'Mixup'"):
        algorithms.get_algorithm_class("Mixpu")


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(NotImplementedError, match="Did you mean 'Debug28'"):
        datasets.get_dataset_class("Debug29")


def test_plugin_algorithm_is_registered_from_environment(tmp_path):
    (tmp_path / "my_plugin.py").write_text(
        "from domainbed.algorithms import register_algorithm\n"
        "from domainbed.algorithms.erm import ERM\n"
        "@register_algorithm\n"
        "class MyERM(ERM):\n"
        "    pass\n")
    code = ("from domainbed import algorithms; "
            "print(algorithms.ALGORITHMS[-1], algorithms.get_algorithm_class('MyERM').__name__)")
    env = {"DOMAINBED_PLUGINS": "my_plugin", "PYTHONPATH": str(tmp_path), "PATH": ""}
    import os
    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MyERM", "MyERM"]


PLUGIN = """
import os

from domainbed.algorithms import register_algorithm
from domainbed.algorithms.erm import ERM
from domainbed.command_launchers import register_launcher
from domainbed.datasets import MultipleDomainDataset, register_dataset


@register_dataset
class MyDS(MultipleDomainDataset):
    ENVIRONMENTS = ["a", "b", "c"]
    INPUT_SHAPE = (4,)
    N_STEPS, CHECKPOINT_FREQ, N_WORKERS = 3, 2, 0

    def __init__(self, root, test_envs, hparams):
        import torch

        generator = torch.Generator().manual_seed(0)
        self.datasets = [torch.utils.data.TensorDataset(
            torch.randn(20, 4, generator=generator), torch.randint(0, 2, (20,), generator=generator))
            for _ in self.ENVIRONMENTS]
        self.input_shape, self.num_classes = self.INPUT_SHAPE, 2


@register_algorithm
class MyAlgo(ERM):
    @staticmethod
    def declare_hparams(hparam, dataset):
        hparam("my_scale", 1.0, lambda r: r.uniform(0, 2))


@register_launcher("mine")
def mine(commands):
    with open(os.environ["MY_COMMANDS"], "w") as f:
        f.write("\\n".join(commands))
"""


@pytest.fixture
def plugin_env(tmp_path):
    """The environment of a process that knows the plug-in only from DOMAINBED_PLUGINS."""
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    return {**os.environ, "DOMAINBED_PLUGINS": "my_plugin", "OMP_NUM_THREADS": "1",
            "MY_COMMANDS": str(tmp_path / "commands.txt"),
            "PYTHONPATH": os.pathsep.join([str(tmp_path), REPO_ROOT])}


def run_python(code, env):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_plugin_dataset_algorithm_and_launcher_from_the_environment_only(plugin_env):
    # The dataset first: its registry loads the plug-ins itself (it used to need the
    # algorithm registry to have been touched).
    code = ("import json; from domainbed import datasets, algorithms, command_launchers, "
            "hparams_registry\n"
            "n = datasets.num_environments('MyDS')\n"
            "try:\n    datasets.get_dataset_class('MyDs')\nexcept NotImplementedError as e:\n"
            "    hint = str(e)\n"
            "print(json.dumps([n, datasets.DATASETS[-1], algorithms.ALGORITHMS[-1], "
            "algorithms.get_algorithm_class('MyAlgo').__name__, list(command_launchers.REGISTRY)[-1], "
            "command_launchers.get_launcher('mine').__name__, "
            "hparams_registry.default_hparams('MyAlgo', 'MyDS')['my_scale'], hint]))")
    n, dataset, algorithm, cls, launcher, fn, scale, hint = json.loads(run_python(code, plugin_env))
    assert (n, dataset, algorithm, cls, launcher, fn, scale) == (
        3, "MyDS", "MyAlgo", "MyAlgo", "mine", "mine", 1.0)
    assert "Did you mean 'MyDS'?" in hint


def test_plugin_sweep_and_train_from_the_command_line(plugin_env, tmp_path):
    sweep = [sys.executable, "-m", "domainbed.scripts.sweep", "launch", "--datasets", "MyDS",
             "--algorithms", "MyAlgo", "--command_launcher", "mine", "--n_hparams", "1",
             "--n_trials", "1", "--single_test_envs", "--data_dir", str(tmp_path),
             "--output_dir", str(tmp_path / "sweep"), "--skip_confirmation"]
    out = subprocess.run(sweep, capture_output=True, text=True, env=plugin_env, cwd=REPO_ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    commands = (tmp_path / "commands.txt").read_text().splitlines()
    assert len(commands) == 3 and all("--algorithm MyAlgo" in c for c in commands)
    subprocess.run(commands[0], shell=True, check=True, env=plugin_env, cwd=REPO_ROOT,
                   capture_output=True, timeout=300)
    job = commands[0].split("--output_dir ")[1].split()[0]
    records = [json.loads(line) for line in open(os.path.join(job, "results.jsonl"))]
    assert [r["step"] for r in records] == [0, 2] and os.path.exists(os.path.join(job, "done"))
    assert records[0]["hparams"]["my_scale"] == 1.0


def test_unimportable_plugin_is_one_line(plugin_env):
    env = {**plugin_env, "DOMAINBED_PLUGINS": "my_plugin,no_such_plugin"}
    for argv in (["-m", "domainbed.scripts.sweep", "status", "--data_dir", "d", "--output_dir",
                  "o"],
                 ["-m", "domainbed.scripts.train", "--output_dir", "o"]):
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env,
                             cwd=REPO_ROOT, timeout=300)
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
        assert "DOMAINBED_PLUGINS: cannot import 'no_such_plugin'" in out.stderr


def test_every_algorithm_is_an_algorithm_with_the_loops_hooks():
    # The training loop calls `before_record` on every algorithm (no duck typing): the
    # contract of algorithms/base.py declares it, so every registered class must derive
    # from that base, wrappers included.
    from domainbed.algorithms import algorithm_names, get_algorithm_class
    from domainbed.algorithms.base import Algorithm

    names = list(algorithm_names()) + ["ERM+SWAD", "FGMix+MA"]
    outsiders = [n for n in names if not issubclass(get_algorithm_class(n), Algorithm)]
    assert outsiders == []
    assert Algorithm.before_record(None, [], [0], "cpu") == {}
