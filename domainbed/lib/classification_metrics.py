"""Metrics beyond accuracy from a split's labels and predicted scores (numpy, torch-free).

What `train --metrics all` adds to each record for every evaluated split, besides
upstream's `_acc` (unchanged): precision, recall, F1, specificity, AUROC and the confusion
matrix. Definitions (those of scikit-learn, which the tests compare against):

- **binary** (two classes): of class 1 (`pos_label=1`): precision TP/(TP+FP), recall
  TP/(TP+FN), F1, specificity TN/(TN+FP); AUROC of class 1's score.
- **more classes**: the unweighted mean over the classes that occur in the labels or the
  predictions (scikit-learn's `average="macro"` without `labels`) of each class's
  one-vs-rest precision, recall, F1 and specificity; AUROC is the macro one-vs-rest mean
  over the classes that occur in the labels (and not in all of them).
- A ratio with a zero denominator is 0 (scikit-learn's `zero_division=0`); an AUROC that
  is undefined (one class only) is None.
- `confusion[i][j]`: instances of true class i predicted as j.
"""
import numpy as np

METRICS = ("precision", "recall", "f1", "specificity", "auroc")


def confusion_matrix(labels, predictions, num_classes):
    """[num_classes, num_classes] counts, rows the true class."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels, dtype=np.int64),
                       np.asarray(predictions, dtype=np.int64)), 1)
    return counts


def _ratio(numerator, denominator):
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64),
                     where=denominator > 0)


def per_class(confusion):
    """{metric: [C]} one-vs-rest precision, recall, F1, specificity of each class."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    predicted, actual, total = confusion.sum(0), confusion.sum(1), confusion.sum()
    fp, fn = predicted - tp, actual - tp
    tn = total - tp - fp - fn
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"precision": precision, "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "specificity": _ratio(tn, tn + fp)}


def binary_auroc(is_positive, scores):
    """The area under the ROC curve: the probability that a positive outscores a negative
    (ties count one half), from the ranks (Mann-Whitney U); None without both classes."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_positive = int(is_positive.sum())
    n_negative = len(is_positive) - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    u = ranks[is_positive].sum() - n_positive * (n_positive + 1) / 2
    return float(u / (n_positive * n_negative))


def _average_ranks(values):
    """1-based ranks, tied values sharing their mean rank (vectorised: a split's scores at
    every record of a `--metrics all` run)."""
    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts - 1) / 2 + 1, counts)
    return ranks


def summary(labels, scores):
    """{precision, recall, f1, specificity, auroc, confusion} of one split. `labels` [N]
    true classes, `scores` [N, C] class probabilities (the prediction is their argmax;
    one-vs-rest AUROC ranks each class's probability, as scikit-learn does)."""
    labels, scores = np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    num_classes = scores.shape[1]
    predictions = scores.argmax(1)
    confusion = confusion_matrix(labels, predictions, num_classes)
    classes = per_class(confusion)
    if num_classes == 2:
        result = {name: float(values[1]) for name, values in classes.items()}
        result["auroc"] = binary_auroc(labels == 1, scores[:, 1] - scores[:, 0])
    else:
        present = np.flatnonzero(confusion.sum(0) + confusion.sum(1) > 0)
        result = {name: float(values[present].mean()) if len(present) else 0.0
                  for name, values in classes.items()}
        areas = [binary_auroc(labels == c, scores[:, c]) for c in range(num_classes)]
        areas = [a for a in areas if a is not None]
        result["auroc"] = float(np.mean(areas)) if areas else None
    result["confusion"] = confusion.tolist()
    return result
