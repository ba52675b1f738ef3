"""sweep --selection_method (launch only what the chosen methods read), on real tiny sweeps:
ColoredMNIST5k (3 environments, offline, a CPU-sized MLP), 3 steps a job, in this process."""
import json
import os
import shutil

import pytest

from domainbed import model_selection
from domainbed.scripts import collect_results, sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # a 128-unit MLP
IID, LOO, ORACLE = ("IIDAccuracySelectionMethod", "LeaveOneOutSelectionMethod",
                    "OracleSelectionMethod")
COMMON = ["--datasets", "ColoredMNIST5k", "--algorithms", "ERM", "--data_dir", "offline",
          "--steps", "3", "--skip_confirmation"]
SEARCH = COMMON + ["--n_hparams", "2", "--n_trials", "1"]     # 6 test-env lists x 2 draws


def run(command, output_dir, *flags, launcher="dummy"):
    extra = ["--command_launcher", launcher] if command != "status" else []
    return sweep.main([command, "--output_dir", str(output_dir), *flags, *extra])


def job_dirs(output_dir):
    return sorted(name for name in os.listdir(output_dir)
                  if os.path.isdir(os.path.join(output_dir, name)))


def job_args(output_dir):
    """{job directory name: its job.json args} of every job under a sweep directory."""
    found = {}
    for name in sorted(os.listdir(output_dir)):
        if not os.path.isdir(os.path.join(output_dir, name)):
            continue   # results.txt
        with open(os.path.join(output_dir, name, "job.json")) as f:
            found[name] = json.load(f)["args"]
    return found


def tables_by_method(output_dir, capsys):
    capsys.readouterr()
    collect_results.main(["--input_dir", str(output_dir)])
    text = capsys.readouterr().out
    sections = {}
    for block in text.split("\n\n")[1:]:
        method = block.split("model selection method: ")[1].split("\n")[0]
        sections[method] = sections.get(method, "") + block
    return text, sections


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, in_process_launcher):
    """`pruned`: the sweep for training-domain validation and the oracle (6 jobs);
    `full`: a copy of it, completed by upstream's sweep (the 6 two-test-env jobs more)."""
    base = tmp_path_factory.mktemp("selection")
    pruned, full = base / "pruned", base / "full"
    run("launch", pruned, *SEARCH, "--selection_method", IID, ORACLE,
        launcher=in_process_launcher)
    shutil.copytree(pruned, full)
    run("launch", full, *SEARCH, launcher=in_process_launcher)
    return base, pruned, full


# ---------------------------------------------------------------------------------------
# --selection_method

def test_job_lists_keep_what_the_methods_read():
    def listed(counts, dataset="RotatedMNIST5k", single=False):
        return sweep.make_args_list(
            n_trials=2, dataset_names=[dataset], algorithms=["ERM", "Mixup"],
            n_hparams_from=0, n_hparams=2, steps=None, data_dir="d",
            task="domain_generalization", holdout_fraction=0.2, single_test_envs=single,
            hparams=None, test_env_counts=counts)

    full = listed(None)
    assert listed([1]) == [a for a in full if len(a["test_envs"]) == 1] == listed(None, single=True)
    assert listed([1, 2]) == full
    methods = [model_selection.get_selection_method(name) for name in (IID, ORACLE)]
    assert model_selection.test_env_counts(methods) == [1]
    assert model_selection.test_env_counts(model_selection.SELECTION_METHODS) == [1, 2]


def test_pruned_sweep_is_the_full_sweep_less_what_only_leave_one_out_reads(sweeps, capsys):
    base, pruned, full = sweeps
    pruned_jobs, full_jobs = job_args(pruned), job_args(full)
    assert len(pruned_jobs) == 6 and len(full_jobs) == 12
    # The same job directories (hashes), and exactly the skipped ones have two test envs.
    assert set(pruned_jobs) < set(full_jobs)
    assert {name for name, args in full_jobs.items() if len(args["test_envs"]) == 1} == set(pruned_jobs)
    _, pruned_tables = tables_by_method(pruned, capsys)
    _, full_tables = tables_by_method(full, capsys)
    for method in ("training-domain validation set", "test-domain validation set (oracle)"):
        assert pruned_tables[method] == full_tables[method] and " X " not in full_tables[method]
    loo = "leave-one-domain-out cross-validation"
    assert " X " in pruned_tables[loo] and " X " not in full_tables[loo]


def test_every_command_sees_the_same_jobs(sweeps, tmp_path, capsys):
    base, pruned, _ = sweeps
    work = tmp_path / "work"
    shutil.copytree(pruned, work)
    run("launch", work, *SEARCH)                      # the pairs: made, never run (dummy)
    capsys.readouterr()
    run("status", work, *SEARCH, "--selection_method", ORACLE)
    assert "6 jobs: 6 done," in capsys.readouterr().out
    run("status", work, *SEARCH, "--selection_method", IID, LOO)   # LOO: the pairs too
    assert "12 jobs: 6 done," in capsys.readouterr().out
    run("delete_incomplete", work, *SEARCH, "--selection_method", IID)
    assert "About to delete 0 jobs." in capsys.readouterr().out
    assert len(job_dirs(work)) == 12
    run("delete_incomplete", work, *SEARCH, "--selection_method", LOO)
    assert "Deleted 6 jobs!" in capsys.readouterr().out
    assert job_dirs(work) == job_dirs(pruned)


@pytest.mark.parametrize("flags, message", [
    (["--selection_method", "IIDAccuracy"], "Did you mean 'IIDAccuracySelectionMethod'?"),
    (["--selection_method", "oracle"], "Did you mean 'OracleSelectionMethod'?"),
    (["--selection_method", LOO, "--single_test_envs"], "which --single_test_envs leaves out"),
])
def test_bad_selection_methods_are_one_line_errors(tmp_path, capsys, flags, message):
    for command in ("launch", "status", "delete_incomplete"):
        with pytest.raises(SystemExit) as caught:
            run(command, tmp_path / "out", *SEARCH, *flags)
        err = capsys.readouterr().err.strip()
        assert caught.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_methods_without_pairs_take_datasets_of_two_environments(tmp_path, capsys):
    from PIL import Image

    for domain in ("a", "b"):
        for cls in ("x", "y"):
            os.makedirs(tmp_path / "two" / domain / cls)
            Image.new("RGB", (4, 4)).save(tmp_path / "two" / domain / cls / "0.png")
    flags = ["--datasets", "Folder", "--algorithms", "ERM", "--data_dir",
             str(tmp_path / "two"), "--n_hparams", "1", "--n_trials", "1"]
    with pytest.raises(SystemExit):   # upstream's enumeration needs pairs: 3 envs
        run("status", tmp_path / "out", *flags)
    assert "add --single_test_envs" in capsys.readouterr().err
    run("status", tmp_path / "out", *flags, "--selection_method", IID)
    assert "2 jobs:" in capsys.readouterr().out
