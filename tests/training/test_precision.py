"""`--precision bf16` and `--memory_format channels_last` (training/precision.py): every
algorithm updates and predicts under bf16 autocast with NHWC weights and batches; train
writes the default's record keys with the options in `args` (a default run's args have
neither), and a stopped bf16 run resumes exactly; the closed-form statistics that need it
compute in float32 under autocast, and the defaults change nothing."""
import argparse
import json
import os
import signal

import pytest
import torch

import domainbed
from domainbed import algorithms
from domainbed.algorithms.alignment import coral_distance
from domainbed.algorithms.registry import get_algorithm_class
from domainbed.algorithms import per_sample
from domainbed.algorithms.autocast import fp32_under_autocast
from domainbed.scripts import train
from domainbed.training import precision
from support import EVENTS, NUM_CLASSES, SHAPE, make_algorithm, make_minibatches
from support import comparable_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WRAPPED = ["ERM+SWAD", "CORAL+MA"]
BF16 = {"precision": "bf16", "memory_format": "channels_last"}


def bf16_autocast():
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16)


def channels_last(minibatches):
    return [(x.contiguous(memory_format=torch.channels_last), y) for x, y in minibatches]


@pytest.mark.parametrize("name", algorithms.ALGORITHMS + WRAPPED)
def test_every_algorithm_updates_and_predicts_under_bf16_autocast(name):
    """Two updates on NHWC batches under bf16 autocast: finite Python floats, weights that
    move and stay float32 (autocast, not .half()); a finite predict under autocast."""
    args = argparse.Namespace(**BF16)
    algorithm = precision.prepare_algorithm(make_algorithm(name, **EVENTS.get(name, {})), args)
    before = [p.detach().clone() for p in algorithm.parameters()]
    for seed, sizes in enumerate([(4, 4, 4), (5, 3, 4)]):
        with precision.autocast(args, torch.device("cpu")):
            logs = algorithm.update(channels_last(make_minibatches(seed, sizes)))
        assert logs, name
        for key, value in logs.items():
            assert type(value) is float and value == value and abs(value) != float("inf"), \
                (name, key, value)
    assert {p.dtype for p in algorithm.parameters()} == {torch.float32}
    assert any(not torch.equal(a, b) for a, b in zip(before, algorithm.parameters()))
    algorithm.eval()
    with torch.no_grad(), bf16_autocast():
        logits = algorithm.predict(torch.randn(8, *SHAPE).contiguous(
            memory_format=torch.channels_last))
    assert logits.shape == (8, NUM_CLASSES) and torch.isfinite(logits).all()


def test_channels_last_converts_the_convolutions_and_4d_batches_only():
    args = argparse.Namespace(memory_format="channels_last")
    algorithm = precision.prepare_algorithm(make_algorithm("ERM"), args)
    convolutions = [m.weight for m in algorithm.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last)
                                for w in convolutions)
    convert = precision.input_converter(args)
    x = torch.randn(2, *SHAPE)
    assert convert(x).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(convert(x), x)
    flat = torch.randn(2, 5)
    assert convert(flat) is flat


def test_the_defaults_are_the_identity():
    args = argparse.Namespace()   # the speed options are absent from a default job's args
    algorithm = make_algorithm("ERM")
    assert precision.prepare_algorithm(algorithm, args) is algorithm
    x = torch.randn(2, *SHAPE)
    assert precision.input_converter(args)(x) is x
    evals = [("env0_in", [(x, torch.zeros(2))])]
    assert precision.eval_loaders(evals, args, torch.device("cpu")) is evals
    with precision.autocast(args, torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    assert precision.describe(args) == "fp32, contiguous"
    assert precision.describe(argparse.Namespace(**BF16)) == "bf16 autocast, channels_last"


def test_fp32_under_autocast_upcasts_inside_and_is_transparent_outside():
    seen = []

    @fp32_under_autocast
    def product(a, b):
        seen.append((a.dtype, b.dtype, torch.is_autocast_enabled("cpu")))
        return a @ b

    a, b = torch.randn(3, 4), torch.randn(4, 2)
    assert torch.equal(product(a, b), a @ b) and seen[-1] == (torch.float32, torch.float32, False)
    with bf16_autocast():
        assert (a @ b).dtype == torch.bfloat16     # what autocast would do
        out = product(a.bfloat16(), b)
    assert out.dtype == torch.float32 and seen[-1] == (torch.float32, torch.float32, False)
    assert torch.equal(out, a.bfloat16().float() @ b)


def test_statistics_compute_in_float32_under_autocast():
    """Cosines of head gradients and CORAL's covariances: float32 under autocast, equal to
    the float32 computation on the same inputs (bf16 products would be off by ~1e-2)."""
    g = torch.Generator().manual_seed(0)
    features, logits = torch.randn(12, 16, generator=g), torch.randn(12, 3, generator=g)
    y = torch.randint(0, 3, (12,), generator=g)
    residuals = per_sample.head_residuals(logits, y)
    reference = per_sample.head_gradient_cosine(features, residuals)
    grouped_reference = per_sample.grouped_head_gradient_cosine(
        features, residuals, torch.arange(12).view(3, 4))
    coral_reference = coral_distance(features[:6], features[6:])
    with bf16_autocast():
        assert per_sample.head_residuals(logits, y).dtype == torch.float32
        cosine = per_sample.head_gradient_cosine(features, residuals)
        grouped = per_sample.grouped_head_gradient_cosine(features, residuals,
                                                          torch.arange(12).view(3, 4))
        coral = coral_distance(features[:6], features[6:])
        weight_grads, _ = per_sample.head_gradients(features.bfloat16(), logits, y)
    assert cosine.dtype == grouped.dtype == coral.dtype == weight_grads.dtype == torch.float32
    assert torch.equal(cosine, reference) and torch.equal(grouped, grouped_reference)
    assert torch.equal(coral, coral_reference)


# ---------------------------------------------------------------------------------------
# train, end to end (Debug28: 3x28x28 images, the MNIST CNN)

def run(tmp_path, name, **options):
    return domainbed.train(dataset="Debug28", algorithm="ERM", test_envs=[0],
                           output_dir=tmp_path / name, data_dir=None, steps=4,
                           checkpoint_freq=2, hparams={"batch_size": 8}, **options)


def test_train_bf16_channels_last_writes_the_default_records_with_the_options(tmp_path):
    default, fast = run(tmp_path, "default"), run(tmp_path, "bf16", **BF16)
    assert [r["step"] for r in fast] == [r["step"] for r in default] == [0, 2, 3]
    for a, b in zip(default, fast):
        assert set(a) == set(b)
        assert all(isinstance(b[k], float) for k in b if k.endswith(("_acc", "loss")))
    assert "precision" not in default[0]["args"] and "memory_format" not in default[0]["args"]
    assert {k: fast[0]["args"][k] for k in BF16} == BF16
    assert {k: v for k, v in fast[0]["args"].items() if k not in BF16 and k != "output_dir"} \
        == {k: v for k, v in default[0]["args"].items() if k != "output_dir"}
    out_txt = (tmp_path / "bf16" / "out.txt").read_text()
    assert "Precision: bf16 autocast, channels_last\n" in out_txt
    assert "Precision:" not in (tmp_path / "default" / "out.txt").read_text()
    weights = torch.load(tmp_path / "bf16" / "model.pkl", weights_only=True)["model_dict"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}


def test_fp32_with_flags_is_the_default_job(tmp_path):
    explicit = run(tmp_path, "explicit", precision="fp32", memory_format="contiguous")
    assert "precision" not in explicit[0]["args"]
    assert "Precision:" not in (tmp_path / "explicit" / "out.txt").read_text()


def bf16_argv(output_dir):
    return ["--dataset", "Debug28", "--algorithm", "FGMix", "--steps", "5",
            "--checkpoint_freq", "2",
            # Features: the per-sample cosines under autocast, one (slow, bf16 on a CPU)
            # backbone pass instead of two.
            "--hparams", json.dumps({"batch_size": 8, "fgmix_space": "features"}),
            "--precision", "bf16", "--memory_format", "channels_last",
            "--output_dir", str(output_dir)]


def test_a_stopped_bf16_run_resumes_exactly(tmp_path, monkeypatch):
    """FGMix (per-sample gradient cosines in float32 inside bf16 autocast) stopped by
    SIGUSR1 between records, then resumed: the uninterrupted run's records and weights."""
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    assert train.main(bf16_argv(reference)) == 0
    fgmix = get_algorithm_class("FGMix")
    original, calls = fgmix.update, {"n": 0}

    def update(self, minibatches, unlabeled=None):
        values = original(self, minibatches, unlabeled)
        calls["n"] += 1
        if calls["n"] == 4:    # step 3: between the records of steps 2 and 4
            os.kill(os.getpid(), signal.SIGUSR1)
        return values

    with monkeypatch.context() as patch:
        patch.setattr(fgmix, "update", update)
        assert train.main(bf16_argv(stopped)) == 128 + signal.SIGUSR1
    assert not (stopped / "done").exists()
    assert train.main(bf16_argv(stopped)) == 0
    assert comparable_records(stopped) == comparable_records(reference)
    a = torch.load(reference / "model.pkl", weights_only=True)["model_dict"]
    b = torch.load(stopped / "model.pkl", weights_only=True)["model_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
