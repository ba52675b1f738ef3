"""What the test folders share (a module, not a test file: tests import it, never each
other). The repository's root and ../shared beside it; the algorithm contract's small
problem (Debug28-shaped batches, one algorithm built with a narrow network and the
overrides that put its special event inside three updates); a run's records compared
without their timing and paths."""
import json
import os
import pathlib

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

SHAPE = (3, 28, 28)
NUM_CLASSES = 2
NUM_DOMAINS = 3
# Overrides that put each algorithm's special event (a phase switch, an optimizer reset,
# an adversarial turn) inside the three updates of the round trip. Algorithms not listed
# run with their defaults.
EVENTS = {
    "ERMPlusPlus": {"linear_steps": 1},
    "IRM": {"irm_penalty_anneal_iters": 1},
    "VREx": {"vrex_penalty_anneal_iters": 2},
    "IB_ERM": {"ib_penalty_anneal_iters": 1},
    "IB_IRM": {"ib_penalty_anneal_iters": 1, "irm_penalty_anneal_iters": 2},
    "TRM": {"iters": 1},
    "EQRM": {"eqrm_burnin_iters": 1.5},
    "RDM": {"rdm_penalty_anneal_iters": 1},
    "Transfer": {"d_steps_per_g": 2},
    "Fishr": {"penalty_anneal_iters": 1},
    "DANN": {"d_steps_per_g_step": 2},
    "CDANN": {"d_steps_per_g_step": 2},
    "MLDG": {"n_meta_test": 1},
    "SANDMask": {"tau": 0.5},  # upstream's default tau = 1 masks (almost) every component
}



def make_algorithm(name, seed=0, dataset="Debug28", **overrides):
    import torch   # here: conftest imports this module, and torch-free tests run without torch

    from domainbed import hparams_registry
    from domainbed.algorithms import get_algorithm_class

    hparams = hparams_registry.default_hparams(name, dataset)
    hparams = hparams_registry.apply_overrides(hparams, {"batch_size": 4, **overrides})
    hparams["mnist_cnn_width"] = 8  # a narrow MNIST CNN keeps the whole file fast
    torch.manual_seed(seed)
    algorithm = get_algorithm_class(name)(SHAPE, NUM_CLASSES, NUM_DOMAINS, hparams)
    if name == "ERMPlusPlus":
        algorithm.sma_start_iter = 2  # average within the round trip (upstream: 600)
    return algorithm


def make_minibatches(seed, sizes=(4, 4, 4)):
    """One (x, y) per domain, both labels in every domain."""
    import torch

    g = torch.Generator().manual_seed(seed)
    batches = []
    for n in sizes:
        y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        y[:2] = torch.tensor([0, 1])
        batches.append((torch.randn(n, *SHAPE, generator=g), y))
    return batches


def comparable_records(output_dir):
    records = []
    with open(output_dir / "results.jsonl") as f:
        for line in f:
            record = json.loads(line)
            for key in ("step_time", "mem_gb"):
                record.pop(key)
            record["args"].pop("output_dir")
            records.append(record)
    return records


# An image folder tree for the image pipelines (the fast pipeline, the decoded cache).
TRAIN_HPARAMS = {"resnet18": True, "resnet50_augmix": False, "pretrained": False,
                 "batch_size": 2}


def smooth_image(rng, width, height):
    """Colourful gradients (resampling differences stay small on them)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, 3)
    freq = rng.uniform(0.5, 3, 3)
    channels = [127.5 + 120 * np.sin(freq[c] * (xx / width + (c + 1) * yy / height) * np.pi
                                     + phase[c]) for c in range(3)]
    return np.stack(channels, -1).astype(np.uint8)


def make_jpeg_tree(root, domains=("a", "b", "c"), classes=("cat", "dog"), per_class=3, seed=0):
    """root/<domain>/<class>/<k>.jpg, images of different sizes and aspect ratios."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    for domain in domains:
        for cls in classes:
            os.makedirs(os.path.join(root, domain, cls))
            for k in range(per_class):
                width, height = rng.randint(40, 120), rng.randint(40, 120)
                Image.fromarray(smooth_image(rng, width, height)).save(
                    os.path.join(root, domain, cls, f"{k}.jpg"), quality=95)
    return str(root)
