"""The main job's driver: sweep arguments, the paired ablation table, and a tiny end-to-end run."""
import os
import subprocess
import sys

import numpy as np
import pytest

from domainbed.studies import reproduce


def test_offline_sweep_arguments_are_stable_and_offline():
    args = reproduce.parse_args([])
    flags = reproduce.sweep_arguments(args)
    assert flags[flags.index("--data_dir") + 1] == "offline"
    assert "--single_test_envs" in flags
    datasets = flags[flags.index("--datasets") + 1: flags.index("--n_hparams")]
    assert datasets == reproduce.OFFLINE_DATASETS == ["RotatedMNIST5k", "ColoredMNIST5k"]
    assert "DigitsDG5k" not in datasets   # the tuning split is never evaluated on
    assert reproduce.sweep_arguments(reproduce.parse_args([])) == flags  # same jobs on re-run
    # The pre-registered evaluation: paired seeds, the defaults (draw 0), trials, the
    # datasets' steps.
    assert "--paired_seeds" in flags
    assert int(flags[flags.index("--n_hparams") + 1]) == 1
    assert int(flags[flags.index("--n_trials") + 1]) >= 3
    assert "--steps" not in flags
    assert args.output_dir == os.path.join("reproduce_output", "default")


def test_presets_size_the_runs_and_explicit_flags_win():
    quick = reproduce.parse_args(["--preset", "quick"])
    assert quick.n_hparams == 1 and quick.steps == 200 and quick.iut_n_envs == [3]
    assert quick.output_dir == os.path.join("reproduce_output", "quick")
    large = reproduce.parse_args(["--preset", "large", "--n_trials", "2", "--iut_n_trials", "3"])
    assert large.n_trials == 2 and large.n_hparams == 10 and large.iut_n_trials == 3
    assert "SAM" in large.algorithms and large.iut_steps == 1001
    assert "FGMixV1" in large.algorithms and "FGMixV1" not in reproduce.parse_args([]).algorithms
    for name, preset in reproduce.PRESETS.items():
        assert preset["cost"], name


def test_the_default_runs_3x3_unit_tests_and_the_iut_suite_alone_its_own_5x5():
    both = reproduce.parse_args([])
    assert (both.iut_n_hparams, both.iut_n_trials) == (3, 3)
    alone = reproduce.parse_args(["--suite", "iut"])
    assert (alone.iut_n_hparams, alone.iut_n_trials) == (5, 5)
    assert alone.output_dir == both.output_dir  # the 3 x 3 runs are reused, not redone
    given = reproduce.parse_args(["--suite", "iut", "--iut_n_trials", "7"])
    assert given.iut_n_trials == 7


def test_full_mode_needs_data_and_launcher(capsys):
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--full"])
    assert "--data_dir" in capsys.readouterr().err
    args = reproduce.parse_args(["--full", "--data_dir", "/data", "--launcher", "slurm"])
    flags = reproduce.sweep_arguments(args)
    assert "--single_test_envs" not in flags
    assert flags[flags.index("--n_hparams") + 1] == "20" and flags[flags.index("--n_trials") + 1] == "3"


def test_ablation_rows_pair_cells_and_skip_missing():
    cells = {
        ("D", 0, 0): {"ERM": 0.50, "Mixup": 0.60, "FGMix": 0.70},
        ("D", 1, 0): {"ERM": 0.40, "Mixup": 0.30, "FGMix": 0.50},
        ("D", 2, 0): {"ERM": 0.80},
    }
    rows = {r["algorithm"]: r for r in reproduce.ablation_rows(cells, ["ERM", "Mixup", "InterpMix", "FGMix"])}
    assert set(rows) == {"ERM", "Mixup", "FGMix"}  # InterpMix never ran: no row
    assert rows["ERM"]["n"] == 3 and "gain" not in rows["ERM"]
    assert rows["Mixup"]["gain"] == pytest.approx(0.0)  # +10 and -10 points
    assert rows["Mixup"]["gain_se"] == pytest.approx(10.0)  # sample std 10 sqrt(2), n = 2
    assert rows["Mixup"]["wins"] == 1 and rows["Mixup"]["pairs"] == 2
    # FGMix is paired with the previous row that ran (Mixup), cell by cell.
    assert rows["FGMix"]["gain"] == pytest.approx(15.0)
    assert rows["FGMix"]["wins"] == 2
    assert rows["FGMix"]["vs_first"] == pytest.approx(15.0) and rows["FGMix"]["vs_first_wins"] == 2
    assert reproduce.smallest_detectable(list(rows.values())) == pytest.approx(
        2.8 * float(np.median([rows["Mixup"]["gain_se"], rows["FGMix"]["gain_se"]])))


def test_ablation_rows_pair_version2_with_the_row_it_extends():
    cells = {("D", e, 0): {"ERM": 0.5, "ExtrapMix": 0.4 + e / 10, "FGMixV1": 0.9,
                           "ExtrapMix2": 0.6 + e / 10, "GMix2": 0.7}
             for e in range(2)}
    rows = {r["algorithm"]: r for r in reproduce.ablation_rows(cells)}
    assert rows["FGMixV1"]["over"] == "ExtrapMix"          # GMix did not run: the row above
    assert rows["ExtrapMix2"]["over"] == "ExtrapMix"       # not FGMixV1, the row above it
    assert rows["ExtrapMix2"]["gain"] == pytest.approx(20.0)
    assert rows["GMix2"]["over"] == "ExtrapMix2"
    assert rows["GMix2"]["gain"] == pytest.approx(5.0)     # +10 and 0 points
    assert rows["GMix2"]["vs_first"] == pytest.approx(20.0)


def test_comparisons_pair_each_dataset_and_all_cells():
    cells = {("A", 0, 0): {"GMix3": 0.6, "ShuffleMix3": 0.5},
             ("A", 1, 0): {"GMix3": 0.5, "ShuffleMix3": 0.5},
             ("B", 0, 0): {"GMix3": 0.4, "ShuffleMix3": 0.5, "ERM": 0.3}}
    rows = reproduce.comparison_rows(cells, [("GMix3", "ShuffleMix3", "info"),
                                             ("FGMix", "ERM", "never ran")])
    assert len(rows) == 1
    by = rows[0]["by_dataset"]
    assert by["A"]["gain"] == pytest.approx(5.0) and by["A"]["wins"] == 1
    assert by["B"]["pairs"] == 1 and by["all"]["pairs"] == 3
    assert by["all"]["gain"] == pytest.approx(0.0)


def test_tiny_offline_run_prints_tables_and_ablation_then_reuses_jobs(tmp_path):
    command = [sys.executable, "-m", "domainbed.scripts.reproduce", "--output_dir", str(tmp_path),
               "--suite", "digits", "--datasets", "ColoredMNIST5k", "--algorithms", "ERM",
               "FGMix", "--steps", "2", "--n_trials", "1", "--n_hparams", "1", "--jobs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "model selection method: training-domain validation set" in first.stdout
    assert "model selection method: test-domain validation set (oracle)" in first.stdout
    assert "model selection method: leave-one-domain-out" not in first.stdout
    assert "Ablation" in first.stdout and "FGMix" in first.stdout.split("Ablation")[1]
    assert "Smallest paired difference" in first.stdout
    assert "Paired comparisons" in first.stdout and "FGMix - ERM" in first.stdout
    assert "Learning curves, ColoredMNIST5k" in first.stdout
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["ColoredMNIST5k_learning_curves.png",   # no empty leave-one-out chart
                     "ColoredMNIST5k_test_domain_validation_set_oracle.png",
                     "ColoredMNIST5k_training_domain_validation_set.png"]
    assert all((tmp_path / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in plots)
    assert "(2 charts of the tables, 1 learning-curve figures)" in first.stdout
    assert "no chart for ColoredMNIST5k, leave-one-domain-out" in first.stdout
    assert "Not launched:" not in first.stdout                # listed in a file instead
    assert "Not launched:" in (tmp_path / "sweep_jobs.txt").read_text()
    # The tables are collect_results' own: the same text as the command's.
    collected = subprocess.run([sys.executable, "-m", "domainbed.scripts.collect_results",
                                "--input_dir", str(tmp_path / "sweep")],
                               capture_output=True, text=True, env=env, timeout=600)
    assert collected.returncode == 0, collected.stderr
    assert (tmp_path / "collect_results.txt").read_text() == collected.stdout
    oracle = collected.stdout.index("-------- Dataset: ColoredMNIST5k, model selection method: "
                                    "test-domain validation set (oracle)")
    assert collected.stdout[oracle:] in first.stdout
    assert (tmp_path / "ablation.json").exists()
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0
    assert "About to launch 0 jobs." in second.stdout  # finished jobs are reused
