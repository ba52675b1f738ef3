"""The flatness measures: exact on a quadratic, and SAM (the positive control) flatter than ERM."""
import json
import math

import pytest

torch = pytest.importorskip("torch")

from domainbed import sharpness  # noqa: E402
from domainbed.scripts import sharpness as sharpness_cli  # noqa: E402


def _quadratic(seed=0):
    """L(θ) = ½ θᵀAθ + bᵀθ with A = Q diag(5, 2, 0.5) Qᵀ: top eigenvalue 5."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor([5.0, 2.0, 0.5], dtype=torch.float64)) @ q.T
    b = torch.randn(3, generator=g, dtype=torch.float64)
    theta = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    return a, b, theta, lambda: 0.5 * theta @ a @ theta + b @ theta


def test_rho_ball_increase_is_exact_on_a_quadratic():
    a, b, theta, loss = _quadratic()
    rho = 0.3
    g = (a @ theta + b).detach()
    unit = g / g.norm()
    expected = rho * g.norm() + 0.5 * rho**2 * unit @ a @ unit
    before = theta.detach().clone()
    assert sharpness.rho_ball_increase(loss, [theta], rho) == pytest.approx(expected.item(),
                                                                            rel=1e-10)
    assert torch.equal(theta.detach(), before)  # the parameters are restored


def test_top_eigenvalue_is_exact_on_a_quadratic():
    _, _, theta, loss = _quadratic(seed=1)
    # Two "batches" whose mean loss is the quadratic: the eigenvalue of the mean.
    value = sharpness.top_hessian_eigenvalue([loss, lambda: 3 * loss() - 2 * loss()], [theta],
                                             iterations=200, rtol=1e-12)
    assert value == pytest.approx(5.0, rel=1e-6)


def _train(tmp_path, algorithm, hparams=None):
    from domainbed.scripts import train

    out = tmp_path / algorithm
    argv = ["--dataset", "RotatedMNIST5k", "--algorithm", algorithm, "--test_envs", "0",
            "--steps", "301", "--checkpoint_freq", "300", "--output_dir", str(out)]
    assert train.main(argv + (["--hparams", json.dumps(hparams)] if hparams else [])) in (0, None)
    return out


def test_sam_comes_out_flatter_than_erm(tmp_path, one_torch_thread):
    erm = sharpness.measure_job(str(_train(tmp_path, "ERM")), n_batches=4)
    sam = sharpness.measure_job(str(_train(tmp_path, "SAM", {"sam_rho": 0.1})), n_batches=4)
    assert sam["top_eigenvalue"] < erm["top_eigenvalue"]
    assert sam["rho_increase"] < erm["rho_increase"]
    assert erm["algorithm"] == "ERM" and erm["test_envs"] == [0] and erm["n_batches"] == 4
    assert all(math.isfinite(erm[k]) for k in ("loss", "rho_increase", "top_eigenvalue"))
    # The command reads the same numbers, and writes them as JSON lines.
    output = tmp_path / "sharpness.jsonl"
    assert sharpness_cli.main([str(tmp_path), "--n_batches", "4", "--output", str(output)]) == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert {r["algorithm"]: r["top_eigenvalue"] for r in lines} == \
        {"ERM": erm["top_eigenvalue"], "SAM": sam["top_eigenvalue"]}
    assert sharpness.job_directories([str(tmp_path)], hparams_seed=0) == \
        sorted(str(tmp_path / name) for name in ("ERM", "SAM"))
    assert sharpness.job_directories([str(tmp_path)], hparams_seed=1) == []


@pytest.mark.parametrize("argv, message", [
    (["--rho", "0"], "--rho must be a number in (0, 100.0]"),
    (["--rho", "inf"], "--rho must be a number in (0, 100.0]"),     # issue 31: NaN results
    (["--rho", "1e308"], "--rho must be a number in (0, 100.0]"),
    (["--rho", "nan"], "--rho must be a number in (0, 100.0]"),
    (["--n_batches", "0"], "--n_batches must be >= 1"),
    (["--iterations", "-1"], "--iterations must be >= 1"),
    (["--seed", "-2"], "--seed must be an integer in [0, 2**32)"),
    (["--hparams_seed", "-1"], "--hparams_seed must be an integer in [0, 2**32)"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        sharpness_cli.cli([str(tmp_path)] + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_no_finished_job_is_a_one_line_error(tmp_path, capsys):
    assert sharpness_cli.cli([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no finished job directory" in err and len(err.splitlines()) == 1


# -- the loss along random filter-normalised directions (sharpness --plot) ---------------------
def test_filter_normalised_directions_match_each_filters_norm():
    layer = torch.nn.Conv2d(3, 5, 3)
    params = list(layer.parameters())
    direction = sharpness.filter_normalized_direction(params, torch.Generator().manual_seed(0))
    weight, bias = direction
    assert torch.allclose(weight.flatten(1).norm(dim=1), layer.weight.flatten(1).norm(dim=1))
    assert torch.equal(bias, torch.zeros_like(bias))     # 1-D tensors get no component
    again = sharpness.filter_normalized_direction(params, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], weight)


def test_loss_at_points_is_the_loss_of_the_shifted_weights_and_restores_them():
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(10, 4, generator=torch.Generator().manual_seed(1)), torch.arange(10) % 3
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    d1 = [torch.ones_like(p) for p in params]
    d2 = [torch.full_like(p, -0.5) for p in params]
    loss = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    got = sharpness.loss_at_points([loss], params, [d1, d2], [(0.0, 0.0), (0.3, 0.2)])
    by_hand = torch.nn.functional.cross_entropy(
        x @ (before[0] + 0.3 - 0.1).T + (before[1] + 0.3 - 0.1), y)
    assert got[0] == pytest.approx(float(loss().detach()), abs=0)
    assert got[1] == pytest.approx(float(by_hand), rel=1e-6)
    assert all(torch.equal(p, b) for p, b in zip(params, before))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from domainbed.scripts import train

    root = tmp_path_factory.mktemp("runs")
    for algorithm in ("ERM", "SAM"):
        argv = ["--dataset", "RotatedMNIST5k", "--algorithm", algorithm, "--test_envs", "0",
                "--steps", "41", "--checkpoint_freq", "40", "--output_dir", str(root / algorithm)]
        assert train.main(argv) in (0, None)
    return root


def test_plot_draws_one_figure_per_dataset_whose_curves_start_at_the_runs_loss(
        two_runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    output, figures = tmp_path / "s.jsonl", tmp_path / "figures"
    argv = [str(two_runs), "--n_batches", "2", "--iterations", "2", "--plot", str(figures),
            "--directions", "2", "--points", "5", "--slice", "--slice_points", "3",
            "--output", str(output)]
    assert sharpness_cli.main(argv) == 0
    assert sorted(p.name for p in figures.iterdir()) == [
        "RotatedMNIST5k_loss_curves.png", "RotatedMNIST5k_loss_slice.png"]
    assert all(p.stat().st_size > 10000 for p in figures.iterdir())
    for line in output.read_text().splitlines():
        result = json.loads(line)
        landscape = result["landscape"]
        assert landscape["alphas"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
        assert len(landscape["curves"]) == 2
        for curve in landscape["curves"]:
            assert curve[2] == result["loss"]              # α = 0: the run's own loss
            assert max(curve) > result["loss"]            # and it rises somewhere around it
        assert landscape["slice"][1][1] == result["loss"]  # the slice's centre too
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--slice"], "--slice draws into --plot DIR"),
    (["--plot", "DIR", "--points", "4"], "--points must be odd"),
    (["--plot", "DIR", "--directions", "0"], "--directions must be >= 1"),
    (["--plot", "DIR", "--span", "0"], "--span must be a number in (0"),
    (["--plot", "FILE"], "exists and is not a directory"),
])
def test_bad_plot_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    (tmp_path / "FILE").write_text("the user's file")
    argv = [str(tmp_path / a) if a in ("DIR", "FILE") else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        sharpness_cli.cli([str(tmp_path)] + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert (tmp_path / "FILE").read_text() == "the user's file"
    assert not (tmp_path / "DIR").exists()
