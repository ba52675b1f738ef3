"""sweep --selection_method (launch only what the chosen methods read) and
--best_hparams_from (re-run the selected hparams with more trials), on real tiny sweeps:
ColoredMNIST5k (3 environments, offline, a CPU-sized MLP), 3 steps a job, in this process."""
import json
import os
import shutil

import pytest

from domainbed import model_selection
from domainbed.lib import reporting
from domainbed.scripts import collect_results, sweep
from domainbed.sweeps.job_list import make_args_list

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


def dummy_launched(stdout):
    """The train arguments of the commands the dummy launcher printed."""
    from domainbed.pool_launcher import train_argv
    from domainbed.training import parse_command_line

    prefix = "Dummy launcher: "
    return [parse_command_line(train_argv(line[len(prefix):])).record_args()
            for line in stdout.splitlines() if line.startswith(prefix)]


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
        return make_args_list(
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


# ---------------------------------------------------------------------------------------
# --best_hparams_from

def selected(full, method_name):
    """{test_env: (hparams_seed, hparams)} that the method selects in the finished sweep."""
    method = model_selection.get_selection_method(method_name)
    return {c["test_env"]: (c["records"][0]["args"]["hparams_seed"], c["records"][0]["hparams"])
            for c in model_selection.selected_runs(reporting.load_records(str(full)), method)}


def test_best_hparams_reruns_are_what_a_hand_written_sweep_runs(sweeps, tmp_path, capsys,
                                                                  in_process_launcher):
    base, _, full = sweeps
    rerun = tmp_path / "rerun"
    run("launch", rerun, *COMMON, "--best_hparams_from", str(full), "--selection_method", IID,
        "--n_trials", "2", launcher=in_process_launcher)
    assert f"--input_dir {rerun / IID}" in capsys.readouterr().out
    ours = job_args(rerun / IID)
    assert len(ours) == 3 * 2   # a job per test env and trial
    # By hand: one sweep per selected (hparams_seed, hparams), with those hparams as JSON.
    by_hand = tmp_path / "by_hand" / IID
    for test_env, (seed, hparams) in sorted(selected(full, IID).items()):
        run("launch", by_hand, *COMMON, "--n_hparams_from", str(seed), "--n_hparams",
            str(seed + 1), "--n_trials", "2", "--single_test_envs", "--hparams",
            json.dumps(hparams, sort_keys=True), launcher=in_process_launcher)
    theirs = job_args(by_hand)
    assert set(ours) <= set(theirs)
    for name, args in ours.items():
        assert args == theirs[name] and args["trial_seed"] in (0, 1)
        seed, hparams = selected(full, IID)[args["test_envs"][0]]
        assert args["hparams_seed"] == seed and json.loads(args["hparams"]) == hparams
        mine = [json.loads(line) for line in open(rerun / IID / name / "results.jsonl")]
        hand = [json.loads(line) for line in open(by_hand / name / "results.jsonl")]
        for record in mine + hand:
            record.pop("step_time")                      # wall-clock time
            record["args"]["output_dir"] = os.path.basename(record["args"]["output_dir"])
        assert mine == hand and mine[0]["hparams"] == hparams
    text, tables = tables_by_method(rerun / IID, capsys)
    assert "Total records: 12" in text and " X " not in tables["training-domain validation set"]
    # status and delete_incomplete list the same jobs.
    run("status", rerun, *COMMON, "--best_hparams_from", str(full), "--selection_method", IID,
        "--n_trials", "2")
    assert "6 jobs: 6 done," in capsys.readouterr().out


def test_best_hparams_for_leave_one_out_runs_the_pairs_too(sweeps, tmp_path, capsys):
    base, pruned, full = sweeps
    out = tmp_path / "rerun"
    run("launch", out, *COMMON, "--best_hparams_from", str(full), "--n_trials", "1")
    listed = capsys.readouterr().out
    for name in (IID, LOO, ORACLE):
        assert f"--input_dir {out / name}" in listed
    jobs = [a for a in dummy_launched(listed) if f"{os.sep}{LOO}{os.sep}" in a["output_dir"]]
    choice = selected(full, LOO)
    # Per test env t: t alone and every pair with t, all with the hparams chosen for t
    # (a pair two test envs share is one job when they chose the same hparams).
    expected = {(tuple(envs), choice[t][0], json.dumps(choice[t][1], sort_keys=True))
                for t in range(3) for envs in ([t], *(sorted([t, v]) for v in range(3) if v != t))}
    assert sorted((tuple(a["test_envs"]), a["hparams_seed"], a["hparams"]) for a in jobs) == \
        sorted(expected)
    # Leave-one-out selects nothing in a sweep without pairs: nothing to launch, and why.
    with pytest.raises(SystemExit) as caught:
        run("launch", tmp_path / "none", *COMMON, "--best_hparams_from", str(pruned),
            "--selection_method", LOO)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and "nothing to re-run" in err and "needs the runs with 2" in err
    assert not (tmp_path / "none").exists()


def test_best_hparams_with_single_test_envs_leaves_leave_one_out_out(sweeps, tmp_path, capsys):
    _, _, full = sweeps
    out = tmp_path / "rerun"
    run("launch", out, *COMMON, "--best_hparams_from", str(full), "--n_trials", "1",
        "--single_test_envs")
    assert sorted(os.listdir(out)) == [IID, ORACLE]
    assert all(len(a["test_envs"]) == 1 for a in dummy_launched(capsys.readouterr().out))


@pytest.mark.parametrize("flags, message", [
    (["--hparams", '{"lr": 0.1}'], "--hparams and --best_hparams_from contradict"),
    (["--n_hparams", "3"], "--n_hparams and --n_hparams_from do not apply"),
])
def test_best_hparams_bad_flags_are_one_line_errors(sweeps, tmp_path, capsys, flags, message):
    _, _, full = sweeps
    with pytest.raises(SystemExit) as caught:
        run("launch", tmp_path / "out", *COMMON, "--best_hparams_from", str(full), *flags)
    err = capsys.readouterr().err.strip()
    assert caught.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_best_hparams_from_nothing_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for source, message in ((tmp_path / "absent", "is not a directory"),
                            (tmp_path / "empty", "holds no records")):
        with pytest.raises(SystemExit) as caught:
            run("launch", tmp_path / "out", *COMMON, "--best_hparams_from", str(source))
        err = capsys.readouterr().err.strip()
        assert caught.value.code == 2 and message in err and len(err.splitlines()) == 1
