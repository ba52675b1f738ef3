"""`train --metrics all`: each record's metrics beyond accuracy, per evaluated split.

Upstream's `<split>_acc` keys are computed as before (`misc.accuracy`); this module adds
`<split>_precision`, `_recall`, `_f1`, `_specificity`, `_auroc` and `_confusion` from a
second pass of the same loader (`lib/classification_metrics.py` holds the definitions)."""
import numpy as np
import torch

from domainbed.lib import classification_metrics


def labels_and_probabilities(algorithm, loader, device):
    """(labels [N], class probabilities [N, C]) of `algorithm.predict` over `loader`; a
    single logit is a binary problem (class 1 when it is positive, as upstream's accuracy)."""
    labels, probabilities = [], []
    algorithm.eval()
    try:
        with torch.no_grad():
            for x, y in loader:
                logits = algorithm.predict(x.to(device)).float()
                if logits.size(1) == 1:
                    positive = torch.sigmoid(logits)
                    logits_probabilities = torch.cat([1 - positive, positive], 1)
                else:
                    logits_probabilities = torch.softmax(logits, 1)
                probabilities.append(logits_probabilities.cpu().numpy())
                labels.append(y.reshape(-1).cpu().numpy())
    finally:
        algorithm.train()
    return np.concatenate(labels), np.concatenate(probabilities)


def split_metrics(name, algorithm, loader, device):
    """{f"{name}_{metric}": value} for one evaluated split."""
    labels, probabilities = labels_and_probabilities(algorithm, loader, device)
    return {f"{name}_{key}": value
            for key, value in classification_metrics.summary(labels, probabilities).items()}
