"""The operation counter of `benchmark --count_ops` (studies/op_count.py)."""
import json

import pytest

torch = pytest.importorskip("torch")

from domainbed.studies import benchmark  # noqa: E402
from domainbed.studies.op_count import OpCounter, count_ops  # noqa: E402


def test_views_allocations_and_host_reads_are_not_kernels():
    x = torch.randn(4, 3)
    totals, value = count_ops(lambda: ((x * 2).T.unsqueeze(0) + 1).sum().item())
    assert totals == {"kernels": 3, "other": 3}   # mul, add, sum | t, unsqueeze, item
    assert value == pytest.approx(float((x * 2 + 1).sum()))
    # A reshape that must copy is a kernel.
    assert count_ops(lambda: x.T.reshape(-1))[0]["kernels"] == 1


def test_backward_operations_are_counted_by_name():
    w = torch.randn(3, requires_grad=True)
    with OpCounter() as counter:
        (w * w).sum().backward()
    assert counter.by_name["mul"] >= 3          # the product, then its two gradients
    assert sum(counter.totals().values()) == sum(counter.by_name.values())


def test_benchmark_counts_one_step_per_algorithm(capsys):
    argv = ["--algorithms", "ERM,FGMix", "--device", "cpu", "--batch_size", "4", "--steps",
            "1", "--warmup", "1", "--repeats", "1", "--num_classes", "3", "--count_ops"]
    assert benchmark.main(argv + ["--json"]) == 0
    rows = {r["algorithm"]: r["ops"] for r in json.loads(capsys.readouterr().out)["training"]}
    # FGMix adds its groups, policy step, weights and diagnostics to ERM's step.
    assert rows["FGMix"]["kernels"] > rows["ERM"]["kernels"] + 300
    assert benchmark.main(argv) == 0
    header = next(line for line in capsys.readouterr().out.splitlines()
                  if line.startswith("algorithm"))
    assert "kernel ops/step" in header


def test_without_the_flag_nothing_is_counted(capsys):
    argv = ["--device", "cpu", "--batch_size", "4", "--steps", "1", "--warmup", "0",
            "--repeats", "1", "--num_classes", "3", "--algorithms", "ERM", "--json"]
    assert benchmark.main(argv) == 0
    assert "ops" not in json.loads(capsys.readouterr().out)["training"][0]
