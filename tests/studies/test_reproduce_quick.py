"""Issue 36, items 2 and 6: the quick preset's size and what it says about itself, the
sweep listing summed up in one line (the full list in a file), and --help stating the
unit-test sizes each preset runs."""
import sys

import pytest

from domainbed.studies import reproduce, sweep_listing
from domainbed.studies.iut_results import PROBLEMS

ROTATED_MNIST_ENVS = 6


def quick_runs():
    args = reproduce.parse_args(["--preset", "quick"])
    digits = len(args.algorithms) * ROTATED_MNIST_ENVS * args.n_hparams * args.n_trials
    iut = (len(args.iut_problems) * (len(args.iut_algorithms) + 1)   # + the Oracle
           * args.iut_n_hparams * args.iut_n_trials * len(args.iut_n_envs))
    return args, digits, iut


def test_quick_preset_stays_small_and_says_what_it_runs():
    args, digits, iut = quick_runs()
    assert args.datasets == ["RotatedMNIST5k"] and len(args.iut_problems) == len(PROBLEMS)
    # Sized for <= 5 minutes of runs on 2 cores (measured: docs/benchmarks.md).
    assert digits <= 24 and iut <= 56 and args.steps <= 200 and args.iut_steps <= 101
    runs = reproduce.PRESETS["quick"]["runs"]
    assert f"({digits} runs)" in runs and f"({iut} runs)" in runs
    assert "minutes" in reproduce.PRESETS["quick"]["cost"]


def test_help_states_the_unit_test_sizes_the_presets_run(capsys):
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("iut_n_hparams", "iut_n_trials"):
        sizes = "; ".join(f"{name}: {reproduce.PRESETS[name]['iut'][flag]}"
                          for name in reproduce.PRESETS)
        assert f"Default: the preset's ({sizes})" in text


def test_the_job_listing_goes_to_a_file_and_one_line_to_the_console(tmp_path, capsys,
                                                                    monkeypatch):
    from domainbed import settings
    from domainbed.sweeps import arguments

    lines = ([f"Not launched: sweep/job{i} ('D', 'ERM', [0], 0)" for i in range(300)]
             + ["Done: sweep/jobx ('D', 'ERM', [1], 0)", "301 jobs: 1 done, 0 incomplete, "
                "300 not launched.", "About to launch 300 jobs."])
    seen = {}

    def sweep_main(argv):   # the sweep command, run in this process
        seen["argv"], seen["workers"] = argv, settings.pool_workers()
        print("\n".join(lines[:150]), end="\n")
        print("\n".join(lines[150:]))

    monkeypatch.setattr(arguments, "main", sweep_main)
    monkeypatch.delenv(settings.POOL_WORKERS.name, raising=False)
    listing = sweep_listing.start_listing(str(tmp_path / "sweep_jobs.txt"))
    assert sweep_listing.run_sweep(["launch", "--x"], listing,
                                   env={settings.POOL_WORKERS: "3"}) == 0
    assert seen == {"argv": ["launch", "--x"], "workers": 3}
    assert settings.pool_workers() is None            # the variable is put back
    out = capsys.readouterr().out.splitlines()
    assert out == [f"(The 301 jobs, one line each: {listing})", lines[-2], lines[-1]]
    assert (tmp_path / "sweep_jobs.txt").read_text().splitlines() == lines[:301]


def test_a_refused_sweep_is_its_one_line_and_exit_code(tmp_path, capsys):
    listing = sweep_listing.start_listing(str(tmp_path / "sweep_jobs.txt"))
    code = sweep_listing.run_sweep(["launch", "--data_dir", "offline", "--output_dir",
                                    str(tmp_path / "out"), "--datasets", "Nope",
                                    "--command_launcher", "local"], listing)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("sweep.py: error:"), err
