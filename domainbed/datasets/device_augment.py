"""Upstream's training augmentation (`image_folder.augment_transform`) for a whole batch of
decoded uint8 images at once, on whatever device the batch is on.

Per sample, as torchvision draws it: RandomResizedCrop(224, scale=(0.7, 1), ratio=(3/4, 4/3))
in the image's ORIGINAL pixel geometry, RandomHorizontalFlip(0.5), ColorJitter(0.3, 0.3,
0.3, 0.3) (its four adjustments in a random order), RandomGrayscale(0.1), then Normalize.
The crop and the flip are one affine map, sampled bilinearly from the 224x224 decoded image
(`decoded_cache`), which is the original resized without keeping the aspect ratio: a crop
box in original pixels is the same box in the square's normalised coordinates.

The random parameters are drawn on the CPU from a generator the caller seeds (one per
batch), then moved to the device: a batch is the same on any device and depends only on
its seed, so a stream resumes without extra state.
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from domainbed.datasets.image_folder import IMAGENET_MEAN, IMAGENET_STD

SIZE = 224
CROP_SCALE = (0.7, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10             # torchvision's RandomResizedCrop.get_params
FLIP_P = 0.5
JITTER = 0.3                # brightness, contrast, saturation and hue strength
GRAY_P = 0.1
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


class AugmentParams(NamedTuple):
    """One batch's random draws. theta: [B, 2, 3] crop+flip affine (output -> input
    normalised coordinates); order: [B, 4] the jitter adjustment applied at each position;
    factors: [B, 4] per adjustment (BRIGHTNESS, CONTRAST, SATURATION: multiplicative, HUE:
    a shift in turns); gray: [B] bool."""
    theta: torch.Tensor
    order: torch.Tensor
    factors: torch.Tensor
    gray: torch.Tensor

    def to(self, device):
        # Pinned first: a copy from pageable memory may wait for the GPU's queued work.
        def move(t):
            return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" \
                else t.to(device)
        return self._replace(theta=move(self.theta), order=move(self.order),
                             factors=move(self.factors), gray=move(self.gray))


# ---------------------------------------------------------------------------------------
# Drawing the parameters (CPU)

def _uniform(shape, low, high, generator):
    return torch.empty(shape, dtype=torch.float64).uniform_(low, high, generator=generator)


def _central_fallback(width, height):
    """torchvision's crop when no try fits: the whole image, clipped to the ratio range."""
    ratio = width / height
    w = torch.where(ratio > CROP_RATIO[1], torch.round(height * CROP_RATIO[1]), width)
    h = torch.where(ratio < CROP_RATIO[0], torch.round(width / CROP_RATIO[0]), height)
    return h, w


def sample_crop_boxes(sizes, generator):
    """[B, 4] float64 (top, left, height, width) in original pixels for `sizes` [B, 2]
    (width, height): torchvision's RandomResizedCrop.get_params rule, vectorised (all
    tries drawn at once, the first that fits is used; the same distribution)."""
    sizes = torch.as_tensor(sizes, dtype=torch.float64)
    width, height = sizes[:, 0], sizes[:, 1]
    n = len(sizes)
    area = (width * height)[:, None] * _uniform((n, CROP_TRIES), *CROP_SCALE, generator)
    log_ratio = _uniform((n, CROP_TRIES), math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]),
                         generator)
    w = torch.round(torch.sqrt(area * torch.exp(log_ratio)))
    h = torch.round(torch.sqrt(area / torch.exp(log_ratio)))
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = fits.to(torch.uint8).argmax(1, keepdim=True)   # 0 when none fits
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    found = fits.any(1)
    fallback_h, fallback_w = _central_fallback(width, height)
    h, w = torch.where(found, h, fallback_h), torch.where(found, w, fallback_w)
    offsets = torch.rand((n, 2), dtype=torch.float64, generator=generator)
    top = torch.where(found, torch.floor(offsets[:, 0] * (height - h + 1)),
                      torch.div(height - h, 2, rounding_mode="floor"))
    left = torch.where(found, torch.floor(offsets[:, 1] * (width - w + 1)),
                       torch.div(width - w, 2, rounding_mode="floor"))
    return torch.stack([top, left, h, w], 1)


def crop_theta(boxes, sizes, flips):
    """[B, 2, 3] affine_grid matrices (align_corners=False) that map the output square onto
    each crop box (in original pixels, so in the cached square's normalised coordinates
    too), mirrored horizontally where `flips`."""
    sizes = torch.as_tensor(sizes, dtype=torch.float64)
    width, height = sizes[:, 0], sizes[:, 1]
    top, left, h, w = boxes.unbind(1)
    theta = torch.zeros((len(boxes), 2, 3), dtype=torch.float64)
    theta[:, 0, 0] = torch.where(flips, -w / width, w / width)
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    return theta.float()


def sample_jitter(n, generator):
    """(order [n, 4], factors [n, 4]): ColorJitter(0.3, 0.3, 0.3, 0.3).get_params per sample
    (a uniformly random order of the four adjustments; factors 1 +- 0.3, hue +- 0.3)."""
    order = torch.rand((n, 4), generator=generator).argsort(1)
    factors = _uniform((n, 4), 1 - JITTER, 1 + JITTER, generator)
    factors[:, HUE] = _uniform((n,), -JITTER, JITTER, generator)
    return order, factors.float()


def draw_params(sizes, generator):
    """All the random draws of one batch (CPU), from `generator`."""
    boxes = sample_crop_boxes(sizes, generator)
    flips = torch.rand(len(boxes), generator=generator) < FLIP_P
    order, factors = sample_jitter(len(boxes), generator)
    gray = torch.rand(len(boxes), generator=generator) < GRAY_P
    return AugmentParams(crop_theta(boxes, sizes, flips), order, factors, gray)


def batch_generator(seed, batch_index):
    """The generator of one batch of a stream: a function of the stream's seed and the
    batch's position only."""
    from domainbed.lib.misc import seed_hash

    return torch.Generator().manual_seed(seed_hash(seed, batch_index))


# ---------------------------------------------------------------------------------------
# Applying them (any device); torchvision's tensor formulas, clamped after each step

def _gray(x):
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x, other, factor):
    factor = factor.view(-1, 1, 1, 1)
    return (factor * x + (1 - factor) * other).clamp_(0, 1)


def adjust_brightness(x, factor):
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x, factor):
    return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), factor)


def adjust_saturation(x, factor):
    return _blend(x, _gray(x), factor)


def _rgb_to_hsv(x):
    r, g, b = x.unbind(1)
    value, _ = x.max(1)
    spread = value - x.min(1)[0]
    grey = spread == 0
    saturation = spread / torch.where(grey, torch.ones_like(value), value)
    spread = torch.where(grey, torch.ones_like(spread), spread)   # hue 0 for greys
    rc, gc, bc = (value - r) / spread, (value - g) / spread, (value - b) / spread
    is_r, is_g = value == r, (value == g) & (value != r)
    is_b = ~is_r & ~is_g
    hue = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    return torch.remainder(hue / 6.0 + 1.0, 1.0), saturation, value


def _hsv_to_rgb(hue, saturation, value):
    sector = torch.floor(hue * 6.0)
    within = hue * 6.0 - sector
    sector = sector.long().remainder(6).unsqueeze(1)
    p = (value * (1 - saturation)).clamp(0, 1)
    q = (value * (1 - saturation * within)).clamp(0, 1)
    t = (value * (1 - saturation * (1 - within))).clamp(0, 1)
    channels = [torch.stack(options, 1).gather(1, sector)
                for options in ((value, q, p, p, t, value), (t, value, value, q, p, p),
                                (p, p, t, value, value, q))]
    return torch.cat(channels, 1)


def adjust_hue(x, shift):
    hue, saturation, value = _rgb_to_hsv(x)
    hue = torch.remainder(hue + shift.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(hue, saturation, value).clamp_(0, 1)


ADJUSTMENTS = {BRIGHTNESS: adjust_brightness, CONTRAST: adjust_contrast,
               SATURATION: adjust_saturation, HUE: adjust_hue}


def color_jitter(x, order, factors):
    """Each sample's four adjustments in its own order (every adjustment acts on each image
    alone, so a sample's result does not depend on the others in the batch)."""
    if x.is_cuda:
        return _color_jitter_selecting(x, order, factors)
    return _color_jitter_gathering(x, order, factors)


def _color_jitter_selecting(x, order, factors):
    """On a GPU: at every position each adjustment is computed for the whole batch and kept
    where the sample has it there. No index lists: a list built on the host and copied over
    could wait for the GPU's queued work (measured: 26-33 ms a step of waiting for data)."""
    for position in range(4):
        chosen = order[:, position].view(-1, 1, 1, 1)
        adjusted = x
        for adjustment, function in ADJUSTMENTS.items():
            adjusted = torch.where(chosen == adjustment, function(x, factors[:, adjustment]),
                                   adjusted)
        x = adjusted
    return x


def _color_jitter_gathering(x, order, factors):
    """On a CPU: at every position, each adjustment runs once on the samples that have it
    there (a quarter of the work of computing all four for every sample)."""
    order = order.cpu()
    for position in range(4):
        for adjustment, function in ADJUSTMENTS.items():
            rows = (order[:, position] == adjustment).nonzero()[:, 0]
            if len(rows) == 0:
                continue
            rows = rows.to(x.device, non_blocking=True)
            x.index_copy_(0, rows, function(x.index_select(0, rows),
                                            factors.index_select(0, rows)[:, adjustment]))
    return x


_MEAN_STD = {}   # device -> (mean, std) [1, 3, 1, 1]


def normalize(x):
    # Made once per device: a tensor built from a Python list on a GPU is a blocking copy,
    # which would stall the host at every batch.
    if x.device not in _MEAN_STD:
        _MEAN_STD[x.device] = (torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1),
                               torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1))
    mean, std = _MEAN_STD[x.device]
    return (x - mean) / std


def to_unit_float(images):
    """uint8 [B, 3, H, W] -> float in [0, 1] (ToTensor)."""
    return images.float().div_(255)


def evaluate_batch(images):
    """upstream's eval_transform on the decoded (already resized) images."""
    return normalize(to_unit_float(images))


def augment_batch(images, params):
    """uint8 [B, 3, 224, 224] (any device) and its AugmentParams -> normalised float."""
    x = to_unit_float(images)
    params = params.to(images.device)
    grid = F.affine_grid(params.theta, [len(x), 3, SIZE, SIZE], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = color_jitter(x.clamp_(0, 1), params.order, params.factors)
    x = torch.where(params.gray.view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
    return normalize(x)
