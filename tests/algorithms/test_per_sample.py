"""Closed-form per-instance head gradients against autograd (float64)."""
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from domainbed.algorithms import per_sample  # noqa: E402


def _problem(n=7, n_features=5, n_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, n_features, generator=g, dtype=torch.float64)
    y = torch.randint(0, n_classes, (n,), generator=g)
    weight = torch.randn(n_classes, n_features, generator=g, dtype=torch.float64)
    bias = torch.randn(n_classes, generator=g, dtype=torch.float64)
    metric = torch.rand(n_features, generator=g, dtype=torch.float64) * 3 + 0.1  # non-trivial m
    return z, y, weight, bias, metric


def _autograd_per_instance_gradients(z, y, weight, bias):
    def loss(w, b, zi, yi):
        return F.cross_entropy(F.linear(zi[None], w, b), yi[None])

    return torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))(
        weight, bias, z, y)


def _metric_inner_products(grad_w, grad_b, metric):
    """<g_i, g_j>_m = Σ_cf m_f gW_i[c,f] gW_j[c,f] + Σ_c gb_i[c] gb_j[c]."""
    return torch.einsum("icf,jcf,f->ij", grad_w, grad_w, metric) + grad_b @ grad_b.T


def test_closed_form_gram_equals_autograd_inner_products():
    z, y, weight, bias, metric = _problem()
    grad_w, grad_b = _autograd_per_instance_gradients(z, y, weight, bias)
    residuals = per_sample.head_residuals(F.linear(z, weight, bias), y)
    closed = per_sample.head_gradient_gram(z, residuals, metric)
    reference = _metric_inner_products(grad_w, grad_b, metric)
    assert closed.abs().max() > 1e-3  # not trivially zero
    torch.testing.assert_close(closed, reference, rtol=1e-12, atol=1e-12)
    # And the metric matters: m = 1 gives a different Gram.
    assert not torch.allclose(per_sample.head_gradient_gram(z, residuals), reference)


def test_head_gradients_equal_autograd():
    z, y, weight, bias, _ = _problem(seed=1)
    grad_w, grad_b = _autograd_per_instance_gradients(z, y, weight, bias)
    closed_w, closed_b = per_sample.head_gradients(z, F.linear(z, weight, bias), y)
    torch.testing.assert_close(closed_w, grad_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(closed_b, grad_b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_classes", [2, 4])  # 2: the residuals are zero-padded
def test_grouped_cosine_equals_gathered_full_cosine(n_classes):
    z, y, weight, bias, metric = _problem(n=9, n_classes=n_classes, seed=2)
    residuals = per_sample.head_residuals(F.linear(z, weight, bias), y)
    full = per_sample.cosine_from_gram(per_sample.head_gradient_gram(z, residuals, metric))
    index = torch.tensor([[0, 3, 5], [1, 1, 8], [7, 2, 4]])
    grouped = per_sample.grouped_head_gradient_cosine(z, residuals, index, metric)
    expected = full[index.unsqueeze(2), index.unsqueeze(1)]
    torch.testing.assert_close(grouped, expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(torch.diagonal(grouped, dim1=1, dim2=2), torch.ones(3, 3, dtype=z.dtype))


def test_grouped_cosine_zero_residual_gives_zero_and_finite_gradient():
    z, y, weight, bias, metric = _problem(n=4, seed=3)
    residuals = per_sample.head_residuals(F.linear(z, weight, bias), y)
    residuals[1] = 0.0  # a perfectly fitted instance: its gradient is zero
    metric = metric.clone().requires_grad_()
    group = torch.tensor([[0, 1, 2]])
    cosine = per_sample.grouped_head_gradient_cosine(z, residuals, group, metric)
    assert torch.all(cosine[0, 1] == 0) and torch.all(cosine[0, :, 1] == 0)
    cosine.sum().backward()
    assert torch.isfinite(metric.grad).all()
    assert metric.grad.abs().sum() > 0


def test_grouped_cosine_without_metric_is_the_unit_metric():
    z, y, weight, bias, _ = _problem(n=9, n_classes=2, seed=5)
    residuals = per_sample.head_residuals(F.linear(z, weight, bias), y)
    index = torch.tensor([[0, 3, 5], [1, 6, 8]])
    torch.testing.assert_close(
        per_sample.grouped_head_gradient_cosine(z, residuals, index),
        per_sample.grouped_head_gradient_cosine(z, residuals, index, torch.ones(5, dtype=z.dtype)),
        rtol=1e-12, atol=1e-12)


def test_gather_rows_is_advanced_indexing_with_its_gradient():
    g = torch.Generator().manual_seed(6)
    values = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[0, 6, 6], [2, 2, 1]])
    gathered = per_sample.gather_rows(values, index)
    assert gathered.shape == (2, 3, 3)
    assert torch.equal(gathered, values[index])
    upstream = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    (ours,) = torch.autograd.grad((gathered * upstream).sum(), values)
    (reference,) = torch.autograd.grad((values[index] * upstream).sum(), values)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-15)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_residual_part_formed_once_gives_the_same_cosines(n_classes):
    """FGMix forms r̂ r̂ᵀ once a step and compares under several metrics with it."""
    z, y, weight, bias, metric = _problem(n=9, n_classes=n_classes, seed=8)
    residuals = per_sample.head_residuals(F.linear(z, weight, bias), y)
    shared = per_sample.residual_cosine(residuals)
    for m in (None, metric):
        full = per_sample.cosine_from_gram(per_sample.head_gradient_gram(z, residuals, m))
        torch.testing.assert_close(per_sample.head_gradient_cosine(z, residuals, m), full,
                                   rtol=1e-12, atol=1e-12)
        assert torch.equal(per_sample.head_gradient_cosine(z, residuals, m, shared),
                           per_sample.head_gradient_cosine(z, residuals, m))
