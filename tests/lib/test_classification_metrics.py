"""Metrics beyond accuracy: against scikit-learn on fixed predictions, and in a run's
records (`train --metrics all`) beside upstream's unchanged accuracies."""
import json

import numpy as np
import pytest

from domainbed.lib import classification_metrics as cm

sk = pytest.importorskip("sklearn.metrics")


def _probabilities(rng, n, classes):
    logits = rng.normal(size=(n, classes))
    exp = np.exp(logits - logits.max(1, keepdims=True))
    return exp / exp.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_equal_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    probabilities = _probabilities(rng, 60, 2)
    probabilities[::7] = [0.5, 0.5]                      # ties, for the AUROC's ranks
    got = cm.summary(labels, probabilities)
    predictions = probabilities.argmax(1)
    assert got["precision"] == pytest.approx(sk.precision_score(labels, predictions,
                                                                zero_division=0))
    assert got["recall"] == pytest.approx(sk.recall_score(labels, predictions))
    assert got["f1"] == pytest.approx(sk.f1_score(labels, predictions))
    tn, fp, fn, tp = sk.confusion_matrix(labels, predictions).ravel()
    assert got["specificity"] == pytest.approx(tn / (tn + fp))
    assert got["auroc"] == pytest.approx(sk.roc_auc_score(labels, probabilities[:, 1]))
    assert got["confusion"] == sk.confusion_matrix(labels, predictions).tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_macro_metrics_equal_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 80)
    probabilities = _probabilities(rng, 80, 5)           # class 4 never a label
    got = cm.summary(labels, probabilities)
    predictions = probabilities.argmax(1)
    for name, function in (("precision", sk.precision_score), ("recall", sk.recall_score),
                           ("f1", sk.f1_score)):
        assert got[name] == pytest.approx(function(labels, predictions, average="macro",
                                                   zero_division=0)), name
    present = sorted(set(labels) | set(predictions))
    confusion = sk.confusion_matrix(labels, predictions, labels=present)
    tn = confusion.sum() - confusion.sum(0) - confusion.sum(1) + np.diag(confusion)
    fp = confusion.sum(0) - np.diag(confusion)
    assert got["specificity"] == pytest.approx(np.mean(tn / (tn + fp)))
    # Over the classes that occur as labels, one-vs-rest, unweighted (class 4 has none):
    by_hand = np.mean([sk.roc_auc_score(labels == c, probabilities[:, c]) for c in range(4)])
    assert got["auroc"] == pytest.approx(by_hand)
    # With every class a label: scikit-learn's macro one-vs-rest AUROC itself.
    four = probabilities[:, :4] / probabilities[:, :4].sum(1, keepdims=True)
    assert cm.summary(labels, four)["auroc"] == pytest.approx(
        sk.roc_auc_score(labels, four, multi_class="ovr", average="macro"))
    assert got["confusion"] == sk.confusion_matrix(labels, predictions,
                                                   labels=range(5)).tolist()


def test_degenerate_splits_give_zeros_and_no_auroc():
    got = cm.summary([1, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    assert got["precision"] == 0.0 and got["recall"] == 0.0 and got["f1"] == 0.0
    assert got["auroc"] is None and got["confusion"] == [[0, 0], [3, 0]]


def test_metrics_all_adds_keys_and_leaves_upstreams_records_as_they_were(tmp_path):
    pytest.importorskip("torch")
    from domainbed.scripts import train

    common = ["--dataset", "ColoredMNIST5k", "--algorithm", "ERM", "--test_envs", "0",
              "--steps", "3", "--checkpoint_freq", "2"]
    assert train.main(common + ["--output_dir", str(tmp_path / "plain")]) in (0, None)
    assert train.main(common + ["--output_dir", str(tmp_path / "all"),
                                "--metrics", "all"]) in (0, None)
    plain, full = ([json.loads(line) for line in (tmp_path / name / "results.jsonl")
                    .read_text().splitlines()] for name in ("plain", "all"))
    volatile = {"step_time", "mem_gb", "args"}
    for a, b in zip(plain, full):
        extra = set(b) - set(a)
        splits = {k[:-len("_acc")] for k in a if k.endswith("_acc")}
        assert extra == {f"{s}_{m}" for s in splits for m in cm.METRICS + ("confusion",)}
        assert {k: v for k, v in a.items() if k not in volatile} == \
            {k: v for k, v in b.items() if k not in volatile | extra}
        for split in splits:   # the confusion matrix agrees with upstream's accuracy
            confusion = np.array(b[f"{split}_confusion"])
            assert np.trace(confusion) / confusion.sum() == pytest.approx(a[f"{split}_acc"])
    assert full[0]["args"]["metrics"] == "all" and "metrics" not in plain[0]["args"]
