"""The benchmark command: a tiny interleaved timing run and the compatibility timing."""
import json

import pytest

pytest.importorskip("torch")

from domainbed.scripts import benchmark  # noqa: E402

TINY = ["--device", "cpu", "--batch_size", "4", "--steps", "2", "--warmup", "0",
        "--repeats", "2", "--num_classes", "3"]


def test_tiny_run_prints_a_table_with_ratios_to_erm(capsys):
    assert benchmark.main(["--algorithms", "ERM,FGMix"] + TINY) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("algorithm"))
    assert "ratio to ERM" in header
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in {"ERM", "FGMix"}}
    assert set(rows) == {"ERM", "FGMix"}
    ratio_column = 3  # cells: algorithm, ms/step, IQR, ratio, min-max
    assert float(rows["ERM"][ratio_column]) == 1.0
    assert float(rows["FGMix"][ratio_column]) > 0


def test_json_report_and_erm_added_when_missing(capsys):
    assert benchmark.main(["--algorithms", "GMix", "--json"] + TINY) == 0
    report = json.loads(capsys.readouterr().out)
    names = [row["algorithm"] for row in report["training"]]
    assert names == ["ERM", "GMix"]
    gmix = report["training"][1]
    assert gmix["ratio_min"] <= gmix["ratio_to_erm"] <= gmix["ratio_max"]
    assert report["environment"]["batch_size_per_domain"] == 4


def test_compatibility_timing_agrees_with_autograd(capsys):
    argv = ["--compat_only", "--compat_shapes", "0", "--repeats", "1", "--device", "cpu", "--json"]
    assert benchmark.main(argv) == 0
    (row,) = json.loads(capsys.readouterr().out)["compatibility"]
    assert (row["N"], row["F"], row["C"]) == (192, 128, 10)
    for kind in ["full", "grouped"]:
        assert row[kind]["max_abs_difference"] < 1e-4
        assert row[kind]["speedup"] > 0
    assert row["full"]["loop_max_abs_difference"] < 1e-4
    assert row["full"]["speedup_vs_loop"] > 0


def test_unknown_algorithm_is_a_one_line_error(capsys):
    assert benchmark.main(["--algorithms", "FGmix"] + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Did you mean 'FGMix'" in err


def test_cpu_clock_refuses_an_accelerator(capsys):
    assert benchmark.main(["--clock", "cpu", "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_run_cost_adds_up_its_parts(capsys):
    from domainbed.scripts import benchmark

    args = benchmark.parse_args(["--run_cost", "--dataset", "IUTExample2", "--algorithms",
                                 "ERM,GMix", "--steps", "2", "--warmup", "1",
                                 "--hparams", '{"iut_n_samples": 50}'])
    report = benchmark.run_cost(args)
    assert set(report["algorithms"]) == {"ERM", "GMix"}
    for parts in report["algorithms"].values():
        assert parts["steps"] == 401 and parts["records"] == 5  # steps 0, 100, ..., 400
        loop = (parts["steps"] * parts["step_ms"] / 1000
                + parts["records"] * (parts["evaluation_s"] + parts["checkpoint_s"]))
        assert abs(parts["run_in_warm_worker_s"] - (parts["prepare_s"] + loop)) < 1e-9
        assert abs(parts["run_in_new_process_s"] - parts["run_in_warm_worker_s"]
                   - report["startup_s"]) < 1e-9
    assert report["algorithms"]["ERM"]["first_prepare"]
    benchmark.print_run_cost(report)
    assert "warm worker s" in capsys.readouterr().out


def test_run_cost_needs_a_dataset():
    from domainbed.scripts import benchmark

    assert benchmark.main(["--run_cost"]) == 2
