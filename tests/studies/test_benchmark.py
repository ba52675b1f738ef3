"""The benchmark command: a tiny interleaved timing run and the compatibility timing."""
import json

import pytest

pytest.importorskip("torch")

from domainbed.studies import benchmark  # noqa: E402

TINY = ["--device", "cpu", "--batch_size", "4", "--steps", "2", "--warmup", "0",
        "--repeats", "2", "--num_classes", "3"]


def test_time_steps_cycles_the_batches_and_divides_by_the_steps():
    import torch

    seen = []

    class Recorder:
        def update(self, minibatches):
            seen.append(minibatches)

    ticks = iter([100.0, 106.0])
    seconds = benchmark.time_steps(Recorder(), ["a", "b"], 3, torch.device("cpu"),
                                   clock=lambda: next(ticks))
    assert seconds == 2.0 and seen == ["a", "b", "a"]


def test_rounds_rotate_and_ratios_are_per_round_medians(monkeypatch, capsys):
    """A scripted clock: FGMix takes 3x, 1x, 3x ERM's time in the three rounds, so its
    ratio is 3 (the median of the per-round ratios; the ratio of medians would be 1.5)."""
    script = {"ERM": [0.010, 0.020, 0.040], "FGMix": [0.030, 0.020, 0.120]}
    calls = []

    def scripted(algorithm, batches, steps, device, clock=None, speed=None):
        name = type(algorithm).__name__
        calls.append((name, steps))
        timed_before = sum(1 for n, s in calls[:-1] if n == name and s == 2)
        return script[name][timed_before] if steps == 2 else 0.0

    monkeypatch.setattr(benchmark, "time_steps", scripted)
    argv = ["--algorithms", "FGMix", "--device", "cpu", "--batch_size", "4", "--steps", "2",
            "--warmup", "1", "--repeats", "3", "--num_classes", "3"]
    assert benchmark.main(argv + ["--json"]) == 0
    rows = {row["algorithm"]: row for row in json.loads(capsys.readouterr().out)["training"]}
    assert calls[:2] == [("ERM", 1), ("FGMix", 1)]  # warm-up first, ERM added in front
    assert [n for n, _ in calls[2:]] == ["ERM", "FGMix", "FGMix", "ERM", "ERM", "FGMix"]
    assert rows["FGMix"]["ratio_to_erm"] == pytest.approx(3.0)
    assert (rows["FGMix"]["ratio_min"], rows["FGMix"]["ratio_max"]) == pytest.approx((1.0, 3.0))
    assert rows["FGMix"]["median_ms"] == pytest.approx(30.0)
    assert (rows["FGMix"]["q1_ms"], rows["FGMix"]["q3_ms"]) == pytest.approx((25.0, 75.0))
    assert rows["ERM"]["median_ms"] == pytest.approx(20.0)

    calls.clear()
    assert benchmark.main(argv) == 0
    fgmix = next(line.split() for line in capsys.readouterr().out.splitlines()
                 if line.startswith("FGMix"))
    assert fgmix[1:] == ["30.0", "25.0-75.0", "3.000", "1.000-3.000"]


def test_json_report_and_erm_added_when_missing(capsys):
    assert benchmark.main(["--algorithms", "GMix", "--json"] + TINY) == 0
    report = json.loads(capsys.readouterr().out)
    names = [row["algorithm"] for row in report["training"]]
    assert names == ["ERM", "GMix"]
    gmix = report["training"][1]
    assert gmix["ratio_min"] <= gmix["ratio_to_erm"] <= gmix["ratio_max"]
    assert report["environment"]["batch_size_per_domain"] == 4


def test_vector_arch_times_the_unit_tests_linear_model(capsys):
    argv = ["--arch", "vector", "--input_dim", "7", "--num_domains", "4", "--algorithms",
            "FGMix", "--json"] + TINY
    assert benchmark.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["algorithm"] for row in report["training"]] == ["ERM", "FGMix"]
    assert all(row["median_ms"] > 0 for row in report["training"])
    assert benchmark.input_shape(benchmark.parse_args(["--arch", "vector", "--input_dim", "7"])) \
        == (7,)


def test_seed_batching_times_the_three_ways(capsys):
    argv = ["--seed_batching", "3", "--steps", "2", "--num_domains", "2", "--batch_size", "4",
            "--num_classes", "2", "--json"]
    assert benchmark.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seeds"] == 3 and report["instances_per_step"] == 8
    assert sorted(report["cpu_seconds"]) == ["one after another", "stacked by hand",
                                             "vmap over seeds"]
    assert all(value > 0 for value in report["cpu_seconds"].values())
    assert benchmark.main(argv[:-1]) == 0
    assert "stacked by hand" in capsys.readouterr().out


def test_compatibility_timing_agrees_with_autograd(capsys):
    argv = ["--compat_only", "--compat_shapes", "0", "--repeats", "1", "--device", "cpu", "--json"]
    assert benchmark.main(argv) == 0
    (row,) = json.loads(capsys.readouterr().out)["compatibility"]
    assert (row["N"], row["F"], row["C"]) == (192, 128, 10)
    for kind in ["full", "grouped"]:
        assert row[kind]["max_abs_difference"] < 1e-4
        assert row[kind]["speedup"] == pytest.approx(
            row[kind]["autograd_ms"] / row[kind]["closed_form_ms"])
    assert row["full"]["loop_max_abs_difference"] < 1e-4
    assert row["full"]["speedup_vs_loop"] == pytest.approx(
        row["full"]["loop_autograd_ms"] / row["full"]["closed_form_ms"])


def test_unknown_algorithm_is_a_one_line_error(capsys):
    assert benchmark.main(["--algorithms", "FGmix"] + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Did you mean 'FGMix'" in err


def test_cpu_clock_refuses_an_accelerator(capsys):
    assert benchmark.main(["--clock", "cpu", "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_run_cost_adds_up_its_parts(capsys):
    from domainbed.studies import benchmark

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
    from domainbed.studies import benchmark

    assert benchmark.main(["--run_cost"]) == 2


def test_fgmix_measure_every_reaches_the_timed_algorithms(monkeypatch, capsys):
    from domainbed.algorithms.fgmix import GroupMixBase

    seen = []
    real = benchmark.time_steps

    def spy(algorithm, *args, **kwargs):
        seen.append((type(algorithm).__name__, getattr(algorithm, "MEASURE_EVERY", None)))
        return real(algorithm, *args, **kwargs)

    monkeypatch.setattr(benchmark, "time_steps", spy)
    assert benchmark.main(["--algorithms", "FGMix", "--fgmix_measure_every", "1"] + TINY) == 0
    assert ("FGMix", 1) in seen and GroupMixBase.MEASURE_EVERY == 10   # the class untouched
    assert benchmark.main(["--algorithms", "FGMix", "--fgmix_measure_every", "0"] + TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fgmix_measure_every" in err[0]
