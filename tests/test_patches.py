"""patches/apply_fgmix.py: FGMix installed in an upstream-layout DomainBed checkout.

The checkout is a stand-in written here (tmp_path) after the documented upstream layout
(interface doc §0, §5, §8): self-contained, so the patched code runs without this project.
"""
import difflib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import types

import pytest
import support

REPO_ROOT = support.REPO_ROOT
PATCHES_DIR = REPO_ROOT / "patches"
FGMIX_PACKAGE = REPO_ROOT / "domainbed" / "algorithms" / "fgmix"
EDITED = ["domainbed/algorithms.py", "domainbed/hparams_registry.py"]
PACKAGE = "domainbed/fgmix"

sys.path.insert(0, str(PATCHES_DIR))
import apply_fgmix  # noqa: E402
import plugin_codegen  # noqa: E402

# Every variant the package registers, read from our registry (not a hand-kept list).
VARIANTS = plugin_codegen.generate_package()[1]

# -- the stand-in upstream checkout -----------------------------------------------------------
STANDIN = {
    "domainbed/__init__.py": "",
    # Upstream's lib/ has no __init__.py (a namespace package).
    "domainbed/lib/misc.py": '''
        import hashlib


        def seed_hash(*args):
            """MD5 of str(args), modulo 2**31."""
            args_str = str(args)
            return int(hashlib.md5(args_str.encode("utf-8")).hexdigest(), 16) % (2**31)
    ''',
    "domainbed/networks.py": '''
        import torch.nn as nn


        class TinyCNN(nn.Module):
            n_outputs = 8

            def __init__(self, input_shape):
                super().__init__()
                self.conv = nn.Conv2d(input_shape[0], self.n_outputs, 3, stride=4, padding=1)
                self.pool = nn.AdaptiveAvgPool2d(1)

            def forward(self, x):
                return self.pool(self.conv(x).relu()).flatten(1)


        def Featurizer(input_shape, hparams):
            if tuple(input_shape[1:3]) == (28, 28):
                return TinyCNN(input_shape)
            raise NotImplementedError


        def Classifier(in_features, out_features, is_nonlinear=False):
            if is_nonlinear:
                return nn.Sequential(nn.Linear(in_features, in_features // 2), nn.ReLU(),
                                     nn.Linear(in_features // 2, out_features))
            return nn.Linear(in_features, out_features)
    ''',
    "domainbed/algorithms.py": '''
        import torch
        import torch.nn.functional as F

        from domainbed import networks

        ALGORITHMS = [
            'ERM',
            'Mixup'
        ]


        def get_algorithm_class(algorithm_name):
            if algorithm_name not in globals():
                raise NotImplementedError("Algorithm not found: {}".format(algorithm_name))
            return globals()[algorithm_name]


        class Algorithm(torch.nn.Module):
            def __init__(self, input_shape, num_classes, num_domains, hparams):
                super(Algorithm, self).__init__()
                self.hparams = hparams


        class ERM(Algorithm):
            def __init__(self, input_shape, num_classes, num_domains, hparams):
                super(ERM, self).__init__(input_shape, num_classes, num_domains, hparams)
                self.featurizer = networks.Featurizer(input_shape, hparams)
                self.classifier = networks.Classifier(self.featurizer.n_outputs, num_classes)
                self.network = torch.nn.Sequential(self.featurizer, self.classifier)
                self.optimizer = torch.optim.Adam(self.network.parameters(), lr=hparams["lr"])

            def update(self, minibatches, unlabeled=None):
                x = torch.cat([x for x, y in minibatches])
                y = torch.cat([y for x, y in minibatches])
                loss = F.cross_entropy(self.predict(x), y)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                return {'loss': loss.item()}

            def predict(self, x):
                return self.network(x)


        class Mixup(ERM):
            pass
    ''',
    "domainbed/hparams_registry.py": '''
        import numpy as np
        from domainbed.lib import misc


        def _hparams(algorithm, dataset, random_seed):
            SMALL_IMAGES = ['Debug28', 'RotatedMNIST', 'ColoredMNIST']
            hparams = {}

            def _hparam(name, default_val, random_val_fn):
                assert(name not in hparams)
                random_state = np.random.RandomState(misc.seed_hash(random_seed, name))
                hparams[name] = (default_val, random_val_fn(random_state))

            _hparam('data_augmentation', True, lambda r: True)
            _hparam('resnet_dropout', 0., lambda r: r.choice([0., 0.1, 0.5]))
            _hparam('nonlinear_classifier', False, lambda r: bool(r.choice([False, False])))

            if algorithm == 'Mixup':
                _hparam('mixup_alpha', 0.2, lambda r: 10**r.uniform(-1, 1))

            if dataset in SMALL_IMAGES:
                _hparam('lr', 1e-3, lambda r: 10**r.uniform(-4.5, -2.5))
                _hparam('weight_decay', 0., lambda r: 0.)
                _hparam('batch_size', 64, lambda r: int(2**r.uniform(3, 9)))
            else:
                _hparam('lr', 5e-5, lambda r: 10**r.uniform(-5, -3.5))
                _hparam('weight_decay', 0., lambda r: 10**r.uniform(-6, -2))
                _hparam('batch_size', 32, lambda r: int(2**r.uniform(3, 5.5)))

            return hparams


        def default_hparams(algorithm, dataset):
            return {a: b for a, (b, c) in _hparams(algorithm, dataset, 0).items()}


        def random_hparams(algorithm, dataset, seed):
            return {a: c for a, (b, c) in _hparams(algorithm, dataset, seed).items()}
    ''',
    "domainbed/datasets.py": '''
        import torch


        class Debug28:
            ENVIRONMENTS = ['0', '1', '2']

            def __init__(self, root, test_envs, hparams):
                self.input_shape = (3, 28, 28)
                self.num_classes = 2
                self.datasets = [torch.utils.data.TensorDataset(
                    torch.randn(16, *self.input_shape), torch.randint(0, 2, (16,)))
                    for _ in self.ENVIRONMENTS]
    ''',
}

# Run inside the patched stand-in with only the stand-in importable; prints JSON.
STANDIN_RUN = '''
import json, pathlib, sys
import torch
import domainbed
from domainbed import algorithms, datasets, hparams_registry
assert pathlib.Path(domainbed.__file__).resolve().parent == pathlib.Path.cwd().resolve() / "domainbed", domainbed.__file__
names, seeds = json.loads(sys.argv[1])
torch.manual_seed(0)
dataset = datasets.Debug28("", [0], {})
minibatches = [(env.tensors[0][:8], env.tensors[1][:8]) for env in dataset.datasets]
report = {"ALGORITHMS": algorithms.ALGORITHMS, "random": {}, "logs": {}}
for name in names:
    hparams = hparams_registry.default_hparams(name, "Debug28")
    algorithm = algorithms.get_algorithm_class(name)(dataset.input_shape, 2, 3, hparams)
    logs = [algorithm.update(minibatches) for _ in range(2)]
    logits = algorithm.predict(minibatches[0][0])
    assert logits.shape == (8, 2) and bool(torch.isfinite(logits).all()), name
    report["logs"][name] = logs
    report["random"][name] = {str(s): hparams_registry.random_hparams(name, "Debug28", s)
                              for s in seeds}
print(json.dumps(report))
'''


def write_standin(root):
    for path, text in STANDIN.items():
        file = root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def run_tool(*args):
    """The documented command, as a subprocess: (exit status, stdout, stderr)."""
    out = subprocess.run([sys.executable, str(PATCHES_DIR / "apply_fgmix.py"), *map(str, args)],
                         capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


@pytest.fixture(scope="module")
def fgmix_source():
    assert FGMIX_PACKAGE.is_dir(), f"{FGMIX_PACKAGE} is missing: the patch has nothing to install"
    return FGMIX_PACKAGE


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return snapshot(write_standin(tmp_path_factory.mktemp("upstream")))


@pytest.fixture(scope="module")
def patched(fgmix_source, tmp_path_factory):
    root = write_standin(tmp_path_factory.mktemp("patched"))
    status, stdout, stderr = run_tool(root)
    assert status == 0, stderr
    assert "installed" in stdout
    return root


# -- the command on the stand-in --------------------------------------------------------------
def test_installed_package_is_exactly_what_the_generator_writes(patched):
    files, names = plugin_codegen.generate_package()
    installed = {p: (patched / p).read_text() for p in snapshot(patched) if p.startswith(PACKAGE)}
    assert installed == files
    modules = {p.name for p in FGMIX_PACKAGE.glob("*.py")}
    assert set(files) == {f"{PACKAGE}/{m}" for m in modules | {"_upstream.py", "_per_sample.py",
                                                                 "_rho_ball.py"}}
    for path, text in files.items():
        header, content = plugin_codegen.split_header(text)
        assert header.startswith("# GENERATED FILE") and plugin_codegen.content_hash_matches(text)
        if path.endswith(("/_upstream.py", "/_per_sample.py", "/_rho_ball.py")):
            continue
        # A package module is our module with only its project imports rewritten.
        ours = (FGMIX_PACKAGE / pathlib.Path(path).name).read_text().splitlines()
        theirs = content.splitlines()
        changed = [line for op, a, b, c, d in difflib.SequenceMatcher(
            None, ours, theirs, autojunk=False).get_opcodes() if op != "equal"
            for line in ours[a:b]]
        assert all(line.startswith("from domainbed.") for line in changed), (path, changed)
        assert "domainbed/algorithms/fgmix/" in header
    for name in ("per_sample", "rho_ball"):   # copied verbatim
        assert (patched / PACKAGE / f"_{name}.py").read_text().endswith(
            (REPO_ROOT / f"domainbed/algorithms/{name}.py").read_text())
    assert names == VARIANTS and len(set(names)) == len(names) >= 15
    assert run_tool(patched, "--check")[:2] == (0, f"{patched}: patched, up to date\n")


def test_upstream_files_only_gain_lines(patched, pristine):
    for path in EDITED:
        before = pristine[path].decode().splitlines()
        after = (patched / path).read_text().splitlines()
        opcodes = difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes()
        assert {op for op, *_ in opcodes} == {"equal", "insert"}, path
        assert len(after) > len(before)
    assert set(snapshot(patched)) == set(pristine) | set(plugin_codegen.generate_package()[0])


def test_patched_standin_trains_every_variant_with_our_hparams(patched):
    from domainbed import hparams_registry
    from domainbed.lib.misc import seed_hash

    seeds = [0, seed_hash(1, 0), seed_hash(2, 1)]
    out = subprocess.run([sys.executable, "-c", STANDIN_RUN, json.dumps([VARIANTS, seeds])],
                         cwd=patched, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["ALGORITHMS"] == ["ERM", "Mixup"] + VARIANTS
    for name in VARIANTS:
        specific = _declared_names(name)
        assert specific and all(n.startswith("fgmix_") for n in specific)
        for seed in seeds:
            ours = hparams_registry.random_hparams(name, "Debug28", seed)
            theirs = report["random"][name][str(seed)]
            assert {n: theirs[n] for n in specific} == {n: ours[n] for n in specific}, name
        assert all(set(log) >= {"loss", "mixed_loss"} for log in report["logs"][name])
    assert "fgmix_rho" in _declared_names("FGMix")


def _declared_names(algorithm):
    from domainbed.algorithms import get_algorithm_class

    names = []
    get_algorithm_class(algorithm).declare_hparams(lambda n, d, f: names.append(n), "Debug28")
    return names


def test_applying_twice_changes_nothing(patched):
    before = snapshot(patched)
    mtimes = {p: (patched / p).stat().st_mtime_ns for p in before}
    status, stdout, _ = run_tool(patched)
    assert status == 0 and "nothing changed" in stdout
    assert snapshot(patched) == before
    assert {p: (patched / p).stat().st_mtime_ns for p in before} == mtimes


def test_diff_applies_to_a_fresh_copy_and_gives_the_same_tree(patched, fgmix_source, tmp_path):
    fresh = write_standin(tmp_path / "fresh")
    patch_file = tmp_path / "fgmix.patch"
    assert apply_fgmix.main([str(fresh), "--diff", str(patch_file)]) == 0
    assert snapshot(fresh) == snapshot(write_standin(tmp_path / "untouched"))  # nothing applied
    if shutil.which("git"):
        command = ["git", "apply", str(patch_file)]
    elif shutil.which("patch"):
        command = ["patch", "-p1", "-i", str(patch_file)]
    else:
        pytest.skip("neither git nor patch is installed")
    result = subprocess.run(command, cwd=fresh, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert snapshot(fresh) == snapshot(patched)
    assert apply_fgmix.main([str(fresh), "--check"]) == 0


def test_check_detects_unpatched_and_stale_trees(fgmix_source, tmp_path, capsys):
    root = write_standin(tmp_path / "tree")
    assert apply_fgmix.main([str(root), "--check"]) == 1
    assert "not patched" in capsys.readouterr().out
    assert apply_fgmix.main([str(root)]) == 0
    module = root / PACKAGE / "variants.py"
    module.write_text(module.read_text().replace("class FGMix(", "class FGMixEdited("))
    assert apply_fgmix.main([str(root), "--check"]) == 1
    assert "edited by hand" in capsys.readouterr().out
    assert apply_fgmix.main([str(root)]) == 0  # regenerates the module
    assert module.read_text() == plugin_codegen.generate_package()[0][f"{PACKAGE}/variants.py"]


def test_crlf_files_stay_crlf(fgmix_source, tmp_path):
    root = write_standin(tmp_path / "tree")
    for path in EDITED:
        file = root / path
        file.write_bytes(file.read_bytes().replace(b"\n", b"\r\n"))
    before = {path: (root / path).read_bytes() for path in EDITED}
    assert apply_fgmix.main([str(root)]) == 0
    for path in EDITED:
        after = (root / path).read_bytes()
        assert after.count(b"\n") == after.count(b"\r\n") > before[path].count(b"\n")
    assert apply_fgmix.main([str(root), "--check"]) == 0


@pytest.mark.parametrize("breakage, expected", [
    ({"domainbed/algorithms.py": None}, "missing domainbed/algorithms.py"),
    ({"domainbed/algorithms.py": "ALGORITHMS = ('ERM',)\n"}, "no module-level `ALGORITHMS = [...]`"),
    ({"domainbed/hparams_registry.py": "def hparams():\n    return {}\n"}, "no module-level `def _hparams(`"),
    ({"domainbed/algorithms.py": "ALGORITHMS = ['ERM', 'FGMix']\n"}, "already lists FGMix"),
])
def test_unrecognised_trees_are_refused_untouched(fgmix_source, tmp_path, breakage, expected):
    root = write_standin(tmp_path / "tree")
    for path, text in breakage.items():
        if text is None:
            (root / path).unlink()
        else:
            (root / path).write_text(text)
    before = snapshot(root)
    status, stdout, stderr = run_tool(root)
    assert status == 2 and expected in stderr and len(stderr.strip().splitlines()) == 1
    assert snapshot(root) == before


# -- the generated classes behave like ours ---------------------------------------------------
def _load_package(files, where, name):
    """The generated package as `name` in *this* environment (our networks)."""
    folder = where / name
    folder.mkdir(parents=True)
    for path, text in files.items():
        (folder / pathlib.Path(path).name).write_text(text)
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return _load_package(plugin_codegen.generate_package()[0],
                         tmp_path_factory.mktemp("generated"), "generated_fgmix")


@pytest.mark.parametrize("name", VARIANTS)
def test_generated_classes_update_exactly_like_ours(generated, name):
    import torch

    from domainbed import hparams_registry
    from domainbed.algorithms import get_algorithm_class

    # A small MLP featurizer (upstream's hparam names) keeps this fast on a CPU.
    hparams = {**hparams_registry.default_hparams(name, "Debug28"),
               "mlp_width": 16, "mlp_depth": 3, "mlp_dropout": 0.0}
    generator = torch.Generator().manual_seed(1)
    minibatches = [(torch.randn(6, 10, generator=generator),
                    torch.randint(0, 3, (6,), generator=generator)) for _ in range(3)]
    runs = []
    for cls in (get_algorithm_class(name), getattr(generated, name)):
        torch.manual_seed(0)
        algorithm = cls((10,), 3, 3, hparams)
        logs = [algorithm.update(minibatches) for _ in range(2)]
        runs.append((logs, algorithm.predict(minibatches[0][0]), algorithm.state_dict()))
    (ours_logs, ours_pred, ours_state), (gen_logs, gen_pred, gen_state) = runs
    assert gen_logs == ours_logs
    assert torch.equal(gen_pred, ours_pred)
    assert gen_state.keys() == ours_state.keys()


# -- the generator on its own -----------------------------------------------------------------
def _generate_from(tmp_path, source):
    path = tmp_path / "fgmix.py"
    path.write_text(source)
    return plugin_codegen.generate_package(path)


def test_generator_keeps_code_unchanged_and_copies_per_sample(tmp_path):
    import torch

    from domainbed.algorithms import per_sample

    source = textwrap.dedent('''
        """Doc."""
        from domainbed.algorithms.base import Algorithm as Base
        from domainbed.algorithms.registry import register_algorithm
        from domainbed.algorithms import per_sample


        @register_algorithm
        class Mine(Base):
            NOTE = "per_sample.head_residuals"

            @staticmethod
            def gradients(z, logits, y):
                return per_sample.head_gradients(z, logits, y)  # per_sample.
    ''')
    files, names = _generate_from(tmp_path, source)
    assert names == ["Mine"]
    init = plugin_codegen.split_header(files[f"{PACKAGE}/__init__.py"])[1]
    kept = [line for line in source.splitlines() if not line.startswith("from domainbed")]
    remaining = iter(init.splitlines())
    assert all(line in remaining for line in kept)  # every other line, in order, unchanged
    assert "from ._upstream import Algorithm as Base" in init
    assert "from . import _per_sample as per_sample" in init
    module = _load_package(files, tmp_path / "load", "generated_single")
    upstream = sys.modules["generated_single._upstream"]
    assert issubclass(module.Mine, upstream.Algorithm) and module.Base is upstream.Algorithm
    assert upstream.REGISTERED == {"Mine": module.Mine}
    z, logits, y = torch.randn(4, 3), torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    for got, want in zip(module.Mine.gradients(z, logits, y),
                         per_sample.head_gradients(z, logits, y)):
        assert torch.equal(got, want)


def test_generator_keeps_the_package_layout(tmp_path):
    package = tmp_path / "mixing"
    package.mkdir()
    (package / "__init__.py").write_text('"""The package."""\nfrom .variants import Mine  # noqa\n')
    (package / "variants.py").write_text(textwrap.dedent('''
        """Variants."""
        from domainbed.algorithms.base import Algorithm
        from domainbed.algorithms.registry import register_algorithm

        from .rules import double


        @register_algorithm
        class Mine(Algorithm):
            FACTOR = double(2)
    '''))
    (package / "rules.py").write_text('"""Rules."""\n\n\ndef double(x):\n    return 2 * x\n')
    files, names = plugin_codegen.generate_package(package)
    assert names == ["Mine"]
    assert {pathlib.Path(p).name for p in files} == {
        "__init__.py", "variants.py", "rules.py", "_upstream.py", "_per_sample.py", "_rho_ball.py"}
    assert "from .rules import double" in files[f"{PACKAGE}/variants.py"]
    assert _load_package(files, tmp_path / "load", "generated_layout").Mine.FACTOR == 4


def test_generator_refuses_a_module_named_like_its_own(tmp_path):
    package = tmp_path / "mixing"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_upstream.py").write_text("")
    with pytest.raises(plugin_codegen.CodegenError, match="_upstream"):
        plugin_codegen.generate_package(package)


@pytest.mark.parametrize("source, expected", [
    ("from domainbed.lib.misc import seed_hash\n", "has no upstream translation"),
    ("from domainbed.algorithms.base import Other\n", "has no upstream translation"),
    ("import domainbed.algorithms.per_sample\n", "is not supported"),
    ("def f():\n    from domainbed import networks\n", "must be at module level"),
    ("from domainbed.algorithms.registry import register_algorithm\nclass A:\n    pass\n",
     "no class is decorated"),
])
def test_generator_refuses_what_it_cannot_translate(tmp_path, source, expected):
    with pytest.raises(plugin_codegen.CodegenError, match=expected):
        _generate_from(tmp_path, source)


# -- issue 12, case 9: every refusal is one line, exit status 2, nothing written ------------
@pytest.mark.parametrize("where", ["domainbed/algorithms.py", "domainbed/hparams_registry.py"])
def test_non_utf8_checkout_file_is_refused(fgmix_source, tmp_path, where):
    root = write_standin(tmp_path / "tree")
    (root / where).write_bytes((root / where).read_bytes() + b"\n# caf\xe9\n")
    before = snapshot(root)
    status, _, stderr = run_tool(root)
    assert status == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert f"{where} is not UTF-8 text" in stderr and "Traceback" not in stderr
    assert snapshot(root) == before


def test_non_utf8_source_is_refused(fgmix_source, tmp_path):
    root = write_standin(tmp_path / "tree")
    source = tmp_path / "fgmix.py"
    source.write_bytes(b"# \xff\xfe\n")
    before = snapshot(root)
    status, _, stderr = run_tool(root, "--source", source)
    assert status == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "not UTF-8" in stderr
    assert snapshot(root) == before


def test_diff_into_a_directory_is_refused(fgmix_source, tmp_path):
    root = write_standin(tmp_path / "tree")
    (tmp_path / "out").mkdir()
    status, _, stderr = run_tool(root, "--diff", tmp_path / "out")
    assert status == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "is a directory" in stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_usage_error_is_one_line_exit_2(tmp_path):
    status, _, stderr = run_tool(tmp_path, "--chek")
    assert status == 2 and len(stderr.strip().splitlines()) == 1, stderr


def test_failed_write_puts_the_checkout_back(fgmix_source, tmp_path, monkeypatch, capsys):
    root = write_standin(tmp_path / "tree")
    before = snapshot(root)
    real_write, calls = apply_fgmix._atomic_write, []

    def fail_on_second(file, text):
        calls.append(file)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_write(file, text)

    monkeypatch.setattr(apply_fgmix, "_atomic_write", fail_on_second)
    assert apply_fgmix.main([str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing was changed" in err[0]
    assert snapshot(root) == before


@pytest.mark.parametrize("args", [("--diff", ""), ("--diff", "  "), ("--source", ""),
                                  ("--diff=",)])
def test_empty_paths_are_usage_errors_and_change_nothing(fgmix_source, tmp_path, args):
    # `--diff ''` used to be read as "no --diff": the checkout was patched, exit 0.
    root = write_standin(tmp_path / "tree")
    before = snapshot(root)
    status, stdout, stderr = run_tool(root, *args)
    assert status == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "empty" in stderr and "Traceback" not in stderr
    assert snapshot(root) == before


def test_empty_checkout_path_is_a_usage_error(fgmix_source, tmp_path, monkeypatch):
    write_standin(tmp_path)
    before = snapshot(tmp_path)
    out = subprocess.run([sys.executable, str(PATCHES_DIR / "apply_fgmix.py"), ""],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "checkout path is empty" in out.stderr, out.stderr
    assert snapshot(tmp_path) == before


def test_a_file_that_cannot_be_written_is_the_one_named(fgmix_source, tmp_path, monkeypatch,
                                                         capsys):
    # Issue 31: an immutable hparams_registry.py was reported as fgmix_plugin.py (the
    # rollback loop rebound the name).
    root = write_standin(tmp_path / "tree")
    before = snapshot(root)
    real_write = apply_fgmix._atomic_write

    def immutable_registry(file, text):
        if file.name == "hparams_registry.py":
            raise PermissionError(1, "Operation not permitted", str(file))
        real_write(file, text)

    monkeypatch.setattr(apply_fgmix, "_atomic_write", immutable_registry)
    assert apply_fgmix.main([str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write domainbed/hparams_registry.py" in err[0], err
    assert "fgmix_plugin" not in err[0]
    assert snapshot(root) == before


def test_diff_never_overwrites_a_file_or_writes_through_a_link(fgmix_source, tmp_path):
    root = write_standin(tmp_path / "tree")
    users = tmp_path / "users.patch"
    users.write_text("the user's patch")
    link = tmp_path / "link.patch"
    link.symlink_to(users)
    for target in (users, link):
        status, _, stderr = run_tool(root, "--diff", target)
        assert status == 2 and len(stderr.strip().splitlines()) == 1, stderr
        assert "already exists" in stderr and "--overwrite" in stderr
        assert users.read_text() == "the user's patch"
    status, _, stderr = run_tool(root, "--diff", users, "--overwrite")
    assert status == 0, stderr
    assert users.read_text().startswith("diff --git")
    status, _, stderr = run_tool(root, "--diff", link, "--overwrite")
    assert status == 2 and "already exists" in stderr


# -- the installed package keeps itself in order ----------------------------------------------
def test_a_module_the_package_lost_is_removed(fgmix_source, tmp_path):
    root = write_standin(tmp_path / "tree")
    assert apply_fgmix.main([str(root)]) == 0
    stale = root / PACKAGE / "retired.py"
    stale.write_text(next(iter(plugin_codegen.generate_package()[0].values())))  # generated
    assert apply_fgmix.main([str(root), "--check"]) == 1
    assert apply_fgmix.main([str(root)]) == 0
    assert not stale.exists()
    assert apply_fgmix.main([str(root), "--check"]) == 0


def test_the_single_file_plugin_of_older_versions_is_replaced(fgmix_source, patched, tmp_path):
    # An older version installed domainbed/fgmix_plugin.py and imported it in the two
    # marked blocks; rerunning the command moves the checkout to the package, by apply and
    # by --diff alike.
    def old_install(root):
        write_standin(root)
        (root / plugin_codegen.LEGACY_PLUGIN_PATH).write_text(
            "# GENERATED FILE: do not edit.\nALGORITHMS = ['FGMix']\n")
        for path in EDITED:
            text = (root / path).read_text()
            (root / path).write_text(text.replace("return hparams\n", (
                f"{upstream_block()}    return hparams\n")) if "hparams_registry" in path
                else text + upstream_block(indent=""))
        return root

    import upstream_edits

    def upstream_block(indent="    "):
        return f"{indent}{upstream_edits.BEGIN}\n{indent}pass\n{indent}{upstream_edits.END}\n"

    for mode in ("apply", "diff"):
        root = old_install(tmp_path / mode)
        if mode == "apply":
            assert apply_fgmix.main([str(root)]) == 0
        else:
            patch_file = tmp_path / f"{mode}.patch"
            assert apply_fgmix.main([str(root), "--diff", str(patch_file)]) == 0
            assert "deleted file mode" in patch_file.read_text()
            if not shutil.which("git"):
                continue
            subprocess.run(["git", "apply", str(patch_file)], cwd=root, check=True)
        assert not (root / plugin_codegen.LEGACY_PLUGIN_PATH).exists()
        assert snapshot(root) == snapshot(patched)


@pytest.mark.parametrize("intruder", ["own_module", "symlink", "module_file"])
def test_someone_elses_files_are_refused_untouched(fgmix_source, tmp_path, intruder):
    root = write_standin(tmp_path / "tree")
    (root / PACKAGE).mkdir()
    if intruder == "own_module":
        (root / PACKAGE / "variants.py").write_text("# my own research code\n")
        expected = "was not generated by this command"
    elif intruder == "symlink":
        (tmp_path / "elsewhere.py").write_text("# GENERATED FILE but not in this checkout\n")
        (root / PACKAGE / "base.py").symlink_to(tmp_path / "elsewhere.py")
        expected = "symbolic link"
    else:
        (root / PACKAGE).rmdir()
        (root / f"{PACKAGE}.py").write_text("# a module named like the package\n")
        expected = "would clash"
    before = snapshot(root)
    status, _, stderr = run_tool(root)
    assert status == 2 and expected in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert snapshot(root) == before
    if intruder == "symlink":  # the link's target is not written through either
        assert (tmp_path / "elsewhere.py").read_text() == \
            "# GENERATED FILE but not in this checkout\n"
