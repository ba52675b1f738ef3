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
