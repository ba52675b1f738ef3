"""`sweep launch --config FILE`: a sweep declared in YAML or TOML gives exactly the jobs of
its equivalent flags; a bad file is one line naming the key."""
import contextlib
import io
import json
import os
import textwrap

import pytest

from domainbed.scripts import sweep
from domainbed.sweeps import config_file
import support

WHERE = ["--data_dir", "offline", "--command_launcher", "dummy", "--skip_confirmation"]


def launch(output_dir, *args):
    """(exit status, {job directory name: command}, stderr) of an in-process `sweep launch`
    with the dummy launcher; commands with the output directory replaced by OUT."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = sweep.main(["launch", "--output_dir", str(output_dir), *WHERE, *args]) or 0
        except SystemExit as exit_:
            status = exit_.code
    jobs = {}
    for line in out.getvalue().splitlines():
        if line.startswith("Dummy launcher: "):
            command = line[len("Dummy launcher: "):].replace(str(output_dir), "OUT")
            jobs[command.split("--output_dir OUT/")[1].split()[0]] = command
    return status, jobs, err.getvalue()


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


GRID = """
    datasets: [ColoredMNIST5k]
    algorithms:
      ERM: {}
      FGMix:
        hparams: {fgmix_gamma: 0.5}
        grid: {fgmix_kappa: [1.0, 2.0]}
    hparams: {weight_decay: 0.0001}
    search: grid
    grid: {lr: [0.001, 0.0003]}
    n_trials: 2
    steps: 7
    single_test_envs: true
"""

RANDOM_TOML = """
    datasets = ["ColoredMNIST5k", "RotatedMNIST5k"]
    search = "random"
    n_hparams = 3
    n_hparams_from = 1
    n_trials = 1
    single_test_envs = true
    paired_seeds = true
    [hparams]
    lr = 0.001
    [algorithms.ERM]
    [algorithms.Mixup.hparams]
    mixup_alpha = 0.3
"""


@pytest.mark.parametrize("name, text", [("grid.yaml", GRID), ("random.toml", RANDOM_TOML)])
def test_a_file_gives_exactly_the_jobs_of_its_equivalent_flags(tmp_path, name, text):
    path = write(tmp_path, name, text)
    status, from_file, err = launch(tmp_path / "file", "--config", str(path))
    assert status == 0, err
    settings = config_file.parse(config_file.read(str(path)), str(path))
    from_flags = {}
    for index, unit in enumerate(config_file.launch_units(settings, str(path))):
        flags = config_file.equivalent_flags(settings, unit)
        status, jobs, err = launch(tmp_path / f"flags{index}", *flags)
        assert status == 0, err
        from_flags.update({d: c.replace(f"flags{index}", "file") for d, c in jobs.items()})
    assert from_file == from_flags            # the same hashes, the same commands
    if name == "grid.yaml":                   # ERM: 2 points, FGMix: 2 x 2; 3 envs, 2 trials
        assert len(from_file) == (2 + 4) * 3 * 2
        hparams = [json.loads(c.split("--hparams '")[1].split("'")[0])
                   for c in from_file.values() if "--algorithm FGMix" in c]
        assert {(h["lr"], h["fgmix_kappa"], h["fgmix_gamma"], h["weight_decay"])
                for h in hparams} == {(lr, k, 0.5, 0.0001) for lr in (0.001, 0.0003)
                                      for k in (1.0, 2.0)}
        seeds = {c.split("--hparams_seed ")[1].split()[0] for c in from_file.values()
                 if "--algorithm FGMix" in c}
        assert seeds == {"0", "1", "2", "3"}   # one setting per grid point
    else:                    # (3 - 1) draws x (3 + 6) test envs x 2 algorithms, one trial
        assert len(from_file) == 2 * (3 + 6) * 2


def test_random_search_without_hparams_is_upstreams_sweep(tmp_path):
    path = write(tmp_path, "plain.yaml", """
        datasets: [ColoredMNIST5k]
        algorithms: [ERM, Mixup]
        n_hparams: 2
        n_trials: 1
    """)
    status, from_file, err = launch(tmp_path / "file", "--config", str(path))
    assert status == 0, err
    status, from_flags, err = launch(tmp_path / "file2", "--datasets", "ColoredMNIST5k",
                                     "--algorithms", "ERM", "Mixup", "--n_hparams", "2",
                                     "--n_trials", "1")
    assert status == 0, err
    assert {d: c.replace("file2", "file") for d, c in from_flags.items()} == from_file
    assert all("--hparams " not in c for c in from_file.values())


@pytest.mark.parametrize("name, text, expected", [
    ("a.yaml", "datasets: [ColoredMNIST5k]\nalgoritms: [ERM]\n", "algoritms: unknown key"),
    ("a.yaml", "algorithms: [ERM]\n", "datasets: missing"),
    ("a.yaml", "datasets: [ColoredMNIST5k]\nalgorithms: {FGMix: {grid: {fgmix_kappa: 2}}}\n"
               "search: grid\n", "algorithms.FGMix.grid.fgmix_kappa: expected a non-empty list"),
    ("a.yaml", "datasets: [ColoredMNIST5k]\nalgorithms: [ERM]\nsearch: grdi\n",
     "search: expected random or grid"),
    ("a.yaml", "datasets: [ColoredMNIST5k]\nalgorithms: [ERM]\ngrid: {lr: [0.1]}\n",
     "grid: a grid needs `search: grid`"),
    ("a.yaml", "datasets: [ColoredMNIST5k]\nalgorithms: [ERM]\nsearch: grid\nn_hparams: 3\n",
     "n_hparams: a grid search runs one setting"),
    ("a.yaml", "datasets: [ColoredMNIST5k]\nalgorithms: [ERM]\nsteps: ten\n",
     "steps: expected int"),
    ("a.yaml", "datasets: [ColoredMNIST5k]\nalgorithms: [ERM]\nprecision: fp8\n",
     "precision: expected one of"),
    ("a.yaml", "datasets: [ColoredMNIST5k\nalgorithms: [ERM]\n", "not valid YAML at line"),
    ("a.toml", "datasets = [\n", "not valid TOML"),
    ("a.json", "{}", "give a .yaml, .yml or .toml file"),
    ("a.yaml", "- ERM\n", "expected a mapping of keys"),
    ("a.yaml", "datasets: [ColoredMNIST5k]\nalgorithms: [FGmix]\n", "Did you mean 'FGMix'"),
    ("a.yaml", "datasets: [ColoredMNIST5k]\nalgorithms: [ERM]\nhparams: {lr: [1, 2]}\n",
     "hparams.lr: expected a number"),
])
def test_a_bad_file_is_one_line_naming_the_key_and_makes_nothing(tmp_path, name, text,
                                                                  expected):
    path = tmp_path / name
    path.write_text(text)
    status, jobs, err = launch(tmp_path / "out", "--config", str(path))
    assert status == 2 and not jobs
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_a_missing_file_and_a_job_flag_beside_the_file_are_refused(tmp_path):
    status, _, err = launch(tmp_path / "out", "--config", str(tmp_path / "none.yaml"))
    assert status == 2 and "cannot read it" in err
    path = write(tmp_path, "s.yaml", "datasets: [ColoredMNIST5k]\nalgorithms: [ERM]\n")
    status, _, err = launch(tmp_path / "out", "--config", str(path), "--n_trials", "5")
    assert status == 2 and "--n_trials with --config" in err
    assert not (tmp_path / "out").exists()


def test_an_hparam_the_algorithm_lacks_is_refused_before_any_job(tmp_path):
    path = write(tmp_path, "s.yaml", """
        datasets: [ColoredMNIST5k]
        algorithms: [ERM]
        search: grid
        grid: {fgmix_kappa: [1.0, 2.0]}
    """)
    status, jobs, err = launch(tmp_path / "out", "--config", str(path))
    assert status == 2 and not jobs, err
    assert "grid.fgmix_kappa: ERM has no hparam fgmix_kappa on ColoredMNIST5k" in err
    assert "algorithms.<name>.grid" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_status_reads_the_same_jobs(tmp_path):
    path = write(tmp_path, "s.yaml", GRID)
    assert launch(tmp_path / "out", "--config", str(path))[0] == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        sweep.main(["status", "--output_dir", str(tmp_path / "out"), "--data_dir", "offline",
                    "--config", str(path)])
    assert "36 jobs" in out.getvalue() and "36 incomplete" in out.getvalue()


def test_the_readme_example_is_the_shipped_file_and_expands(tmp_path):
    root = str(support.REPO_ROOT)
    shipped = os.path.join(root, "docs", "examples", "sweep_grid.yaml")
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    block = readme.split("```yaml\n# docs/examples/sweep_grid.yaml\n", 1)[1].split("```")[0]
    text = open(shipped, encoding="utf-8").read()
    assert text.split("\n", 1)[1] == block    # below its first comment line
    status, jobs, err = launch(tmp_path / "out", "--config", shipped)
    assert status == 0, err
    assert len(jobs) == (2 + 4) * 6           # ERM 2 lr, FGMix 2 lr x 2 kappa; 6 test envs
