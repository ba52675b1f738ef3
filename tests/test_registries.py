"""Algorithm and dataset registries: derived lists, upstream order, lazy torch, did-you-mean."""
import subprocess
import sys

import pytest

from domainbed import algorithms, datasets
from domainbed.algorithms.registry import UPSTREAM_ORDER


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
