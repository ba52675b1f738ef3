"""ColoredMNIST and RotatedMNIST, with upstream DomainBed's semantics.

The environment builders (`split_into_environments`, `color_environment`,
`rotate_environment`) take an optional torch Generator. The MNIST classes here pass none,
so every draw comes from the global torch RNG exactly as upstream (the partition and the
label noise then depend on train.py's `--seed`); `datasets/offline.py` reuses the same
builders with a fixed, local generator.
"""
import os

from domainbed.datasets.base import MultipleDomainDataset, missing_dataset_error
from domainbed.datasets.registry import register_dataset

# The files torchvision's MNIST reads under `root/MNIST/raw` (the download script writes them).
MNIST_RAW_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


def load_torchvision_mnist(root):
    """The 70,000 MNIST digits (train then test) as (uint8 [N,28,28], int64 [N]) tensors.

    torchvision downloads the files when they are absent (upstream's `download=True`); a
    failed download becomes a one-line error that names our download script.
    """
    import torch
    from torchvision.datasets import MNIST

    try:
        train = MNIST(root, train=True, download=True)
        test = MNIST(root, train=False, download=True)
    except (RuntimeError, OSError) as error:  # offline, or a mirror is down
        raise missing_dataset_error("MNIST", os.path.join(root, "MNIST", "raw"), root) from error
    images = torch.cat((train.data, test.data))
    labels = torch.cat((train.targets, test.targets))
    return images, labels


def split_into_environments(images, labels, env_params, env_transform, generator=None):
    """One shuffle, then env i takes items i, i+E, i+2E, ... (E = number of envs).

    Each env slice goes through `env_transform(images, labels, param, generator)` in env
    order, so the random draws happen in upstream's order.
    """
    import torch

    shuffle = torch.randperm(len(images), generator=generator)
    images, labels = images[shuffle], labels[shuffle]
    n_envs = len(env_params)
    return [
        env_transform(images[i::n_envs], labels[i::n_envs], param, generator)
        for i, param in enumerate(env_params)
    ]


def _bernoulli(p, size, generator):
    import torch

    return (torch.rand(size, generator=generator) < p).float()


def _xor(a, b):
    return (a - b).abs()


def color_environment(images, labels, flip_prob, generator=None):
    """ColoredMNIST: binary label digit<5 with 25% noise; colour = label flipped w.p. flip_prob.

    The digit is copied into 2 channels and channel (1 - colour) is zeroed, so colour 1 keeps
    channel 1. Returns a TensorDataset of float x in [0,1] (N,2,28,28) and long y.
    """
    import torch

    binary = (labels < 5).float()
    noisy = _xor(binary, _bernoulli(0.25, len(binary), generator))
    colors = _xor(noisy, _bernoulli(flip_prob, len(noisy), generator))
    two_channels = torch.stack([images, images], dim=1).clone()
    two_channels[torch.arange(len(two_channels)), (1 - colors).long(), :, :] *= 0
    x = two_channels.float().div_(255.0)
    return torch.utils.data.TensorDataset(x, noisy.view(-1).long())


def rotate_environment(images, labels, angle, generator=None):
    """RotatedMNIST: each digit rotated by `angle` degrees (bilinear, fill 0) via PIL, as
    upstream at HEAD (the 2020 published results used bicubic). `generator` is unused: the
    rotation is deterministic."""
    import torch
    from torchvision import transforms
    from torchvision.transforms import functional as F

    to_pil, to_tensor = transforms.ToPILImage(), transforms.ToTensor()
    x = torch.zeros(len(images), 1, 28, 28)
    for i in range(len(images)):
        rotated = F.rotate(to_pil(images[i]), angle, fill=(0,),
                           interpolation=transforms.InterpolationMode.BILINEAR)
        x[i] = to_tensor(rotated)
    return torch.utils.data.TensorDataset(x, labels.view(-1).long())


def rotate_environment_batched(images, labels, angle, generator=None):
    """RotatedMNIST's rotation for a whole batch at once (bilinear, fill 0), with torch's
    grid sampling instead of PIL image by image: within 1/255 of `rotate_environment`
    (which rounds to uint8) and ~100x faster, without importing torchvision. Used by the
    offline datasets; the upstream classes keep the PIL path."""
    import math

    import torch
    import torch.nn.functional as F

    x = images.float().div(255.0).unsqueeze(1)
    a = math.radians(angle)  # positive = counter-clockwise, as torchvision's rotate
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    rotated = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.utils.data.TensorDataset(rotated, labels.view(-1).long())


class MultipleEnvironmentMNIST(MultipleDomainDataset):
    """Upstream's base: all 70,000 MNIST digits split over the environments."""

    ENV_PARAMS = None
    NUM_CLASSES = None
    SMALL_IMAGES = True       # upstream lists both MNIST datasets as small-image datasets

    def __init__(self, root, test_envs, hparams):
        super().__init__()
        if root is None:
            raise ValueError("Data directory not specified!")
        images, labels = load_torchvision_mnist(root)
        self.datasets = split_into_environments(images, labels, self.ENV_PARAMS, self.env_transform)
        self.input_shape = self.INPUT_SHAPE
        self.num_classes = self.NUM_CLASSES

    @staticmethod
    def env_transform(images, labels, param, generator=None):
        raise NotImplementedError


@register_dataset
class ColoredMNIST(MultipleEnvironmentMNIST):
    """Envs '+90%', '+80%', '-90%' (colour-flip 0.1, 0.2, 0.9): 23334 / 23333 / 23333 images,
    input (2,28,28), 2 classes."""

    ENVIRONMENTS = ["+90%", "+80%", "-90%"]
    ENV_PARAMS = [0.1, 0.2, 0.9]
    INPUT_SHAPE = (2, 28, 28)
    NUM_CLASSES = 2
    env_transform = staticmethod(color_environment)


@register_dataset
class RotatedMNIST(MultipleEnvironmentMNIST):
    """Envs '0' ... '75' (degrees): 11667 x4 then 11666 x2 images, input (1,28,28), 10 classes."""

    ENVIRONMENTS = ["0", "15", "30", "45", "60", "75"]
    ENV_PARAMS = [0, 15, 30, 45, 60, 75]
    INPUT_SHAPE = (1, 28, 28)
    NUM_CLASSES = 10
    env_transform = staticmethod(rotate_environment)
