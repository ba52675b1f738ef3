"""Spawrious (Lynch, Dovonon, Kaddour, Silva, arXiv 2303.05470, 2023): four dog breeds photographed
against six backgrounds, with spurious breed-background correlations.

Six datasets: one-to-one (O2O: each breed tied to one background, plus a shared "filler"
background) and many-to-many (M2M: pairs of breeds share pairs of backgrounds), each easy,
medium and hard. Three environments, as upstream: 0 "Test" (every breed on backgrounds it
never has in training), 1 and 2 the spuriously correlated training groups; run them with
`--test_envs 0`.

Layout, as the published archive unpacks (`python -m domainbed.scripts.download --datasets
Spawrious`): `DIR/spawrious224/{0,1}/<location>/<breed>/<image>`. Upstream reads the folders
`0/` and `1/` directly under `--data_dir`; both are accepted (`spawrious224/` first).

This module is torch-free at import; torch, torchvision and PIL load in the constructor.
"""
import os

from domainbed.datasets.base import DatasetNotFoundError, MultipleDomainDataset, missing_dataset_error
from domainbed.datasets.image_folder import (IMAGENET_MEAN, IMAGENET_STD, allow_truncated_images,
                                             eval_transform)
from domainbed.datasets.registry import register_dataset

SUBFOLDER = "spawrious224"
ARCHIVE = "spawrious224.tar.gz"
URL = "https://www.dropbox.com/s/e40j553480h3f3s/spawrious224.tar.gz?dl=1"
ARCHIVE_MD5 = None  # not published: recorded at the first download and checked afterwards
CLASSES = ("bulldog", "corgi", "dachshund", "labrador")  # labels 0..3
# The order of the blocks inside an environment (upstream's dictionary order).
BLOCK_ORDER = ("bulldog", "dachshund", "labrador", "corgi")
LOCATIONS = ("beach", "desert", "dirt", "jungle", "mountain", "snow")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # case-sensitive, as upstream

# O2O: (training location per breed in BLOCK_ORDER, filler location, test location per breed)
O2O_LOCATIONS = {
    "easy": (("desert", "jungle", "dirt", "snow"), "beach", ("dirt", "snow", "desert", "jungle")),
    "medium": (("mountain", "beach", "dirt", "jungle"), "desert", ("jungle", "dirt", "beach", "snow")),
    "hard": (("jungle", "mountain", "snow", "desert"), "beach", ("mountain", "snow", "desert", "jungle")),
}
# M2M: (upstream's group list g, test list t); see _m2m_environments for how they map.
M2M_LOCATIONS = {
    "easy": (("desert", "mountain", "dirt", "jungle"), ("dirt", "jungle", "mountain", "desert")),
    "medium": (("beach", "snow", "mountain", "desert"), ("desert", "mountain", "beach", "snow")),
    "hard": (("dirt", "jungle", "snow", "beach"), ("snow", "beach", "dirt", "jungle")),
}


def train_transform():
    """Upstream's Spawrious augmentation: no random crop, unlike the other image datasets."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize((224, 224)),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(0.3, 0.3, 0.3, 0.3),
        transforms.RandomGrayscale(),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


# A block is (folder "0"/"1", location, breed, limit); limit 0 = every image.
def _o2o_environments(level, total):
    locations, filler, test = O2O_LOCATIONS[level]
    groups = []
    for folder, share in (("0", 0.97), ("1", 0.87)):
        own = int(share * total)
        blocks = [(folder, loc, breed, own) for breed, loc in zip(BLOCK_ORDER, locations)]
        blocks += [(folder, filler, breed, total - own) for breed in BLOCK_ORDER]
        groups.append(blocks)
    test_blocks = [(folder, loc, breed, 0) for folder in ("0", "1")
                   for breed, loc in zip(BLOCK_ORDER, test)]
    return [test_blocks] + groups


def _m2m_environments(level, total):
    g, t = M2M_LOCATIONS[level]
    # bulldog, dachshund, labrador, corgi take g0, g1, g2, g3 in group 1 and g1, g0, g3, g2
    # in group 2; the test sub-groups do the same with t.
    swapped = (1, 0, 3, 2)
    group_1 = [("0", g[i], breed, total) for i, breed in enumerate(BLOCK_ORDER)]
    group_2 = [("0", g[swapped[i]], breed, total) for i, breed in enumerate(BLOCK_ORDER)]
    test_blocks = ([("0", t[i], breed, 0) for i, breed in enumerate(BLOCK_ORDER)]
                   + [("0", t[swapped[i]], breed, 0) for i, breed in enumerate(BLOCK_ORDER)])
    return [test_blocks, group_1, group_2]


def image_files(folder):
    """The image file names in `folder`, sorted (upstream: raw directory order)."""
    return sorted(name for name in os.listdir(folder) if name.endswith(IMAGE_SUFFIXES))


def spawrious_root(data_dir):
    """The folder holding `0/` and `1/`: DIR/spawrious224, else DIR itself (upstream), else None."""
    for candidate in (os.path.join(data_dir, SUBFOLDER), data_dir):
        if os.path.isdir(os.path.join(candidate, "0")):
            return candidate
    return None


class ImageList:
    """(transform(image), label) for a list of (path, label); PIL loads on access."""

    def __init__(self, items, transform):
        self.items = items
        self.transform = transform
        self.targets = [label for _, label in items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        import torch
        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
        return self.transform(image), torch.tensor(label, dtype=torch.long)


class Spawrious(MultipleDomainDataset):
    """Environments: Test, SC_group_1, SC_group_2 (upstream's names)."""

    ENVIRONMENTS = ["Test", "SC_group_1", "SC_group_2"]
    INPUT_SHAPE = (3, 224, 224)
    TOTAL = 3168          # images per breed in a training group
    KIND = None           # "o2o" or "m2m"
    LEVEL = None          # "easy", "medium" or "hard"

    def __init__(self, root, test_envs, hparams):
        super().__init__()
        if root is None:
            raise ValueError("Data directory not specified!")
        base = spawrious_root(root)
        if base is None:
            raise missing_dataset_error(type(self).__name__, os.path.join(root, SUBFOLDER), root)
        allow_truncated_images()
        self.input_shape = self.INPUT_SHAPE
        self.num_classes = len(CLASSES)
        # As upstream, test_envs does not choose the transforms: the two training groups are
        # augmented (with data_augmentation), the Test environment never is.
        augment = train_transform() if hparams["data_augmentation"] else eval_transform()
        transforms = [eval_transform(), augment, augment]
        self.datasets = [ImageList(self._items(base, blocks), transform)
                         for blocks, transform in zip(self.environment_blocks(), transforms)]

    @classmethod
    def environment_blocks(cls):
        """Per environment, its (folder, location, breed, limit) blocks in element order."""
        build = _o2o_environments if cls.KIND == "o2o" else _m2m_environments
        return build(cls.LEVEL, cls.TOTAL)

    def _items(self, base, blocks):
        items = []
        for folder, location, breed, limit in blocks:
            path = os.path.join(base, folder, location, breed)
            if not os.path.isdir(path):
                raise DatasetNotFoundError(
                    f"dataset {type(self).__name__} is incomplete: {path} is missing. Check it with: "
                    f"python -m domainbed.scripts.download --data_dir DIR --datasets "
                    f"{type(self).__name__} --verify")
            names = image_files(path)
            if limit:
                names = names[:limit]
            label = CLASSES.index(breed)
            items += [(os.path.join(path, name), label) for name in names]
        return items


@register_dataset
class SpawriousO2O_easy(Spawrious):
    KIND, LEVEL = "o2o", "easy"


@register_dataset
class SpawriousO2O_medium(Spawrious):
    KIND, LEVEL = "o2o", "medium"


@register_dataset
class SpawriousO2O_hard(Spawrious):
    KIND, LEVEL = "o2o", "hard"


@register_dataset
class SpawriousM2M_easy(Spawrious):
    KIND, LEVEL = "m2m", "easy"


@register_dataset
class SpawriousM2M_medium(Spawrious):
    KIND, LEVEL = "m2m", "medium"


@register_dataset
class SpawriousM2M_hard(Spawrious):
    KIND, LEVEL = "m2m", "hard"


SPAWRIOUS_DATASETS = (SpawriousO2O_easy, SpawriousO2O_medium, SpawriousO2O_hard,
                      SpawriousM2M_easy, SpawriousM2M_medium, SpawriousM2M_hard)
DATASET_NAMES = tuple(cls.__name__ for cls in SPAWRIOUS_DATASETS)


# ---------------------------------------------------------------------------------------
# Download and --verify (torch-free)

def required_folders():
    """Every (folder, location, breed) directory that one of the six datasets reads."""
    needed = set()
    for dataset_class in SPAWRIOUS_DATASETS:
        for blocks in dataset_class.environment_blocks():
            needed.update((folder, location, breed) for folder, location, breed, _ in blocks)
    return sorted(needed)


def check_layout(data_dir, recorded=None):
    """(problems, summary) of DIR/spawrious224: every folder the datasets read exists and
    holds images; the image count equals the one recorded after download, if any."""
    base = os.path.join(data_dir, SUBFOLDER)
    if not os.path.isdir(base):
        return [f"missing: {base}"], {}
    problems, images = [], 0
    for folder, location, breed in required_folders():
        path = os.path.join(base, folder, location, breed)
        if not os.path.isdir(path):
            problems.append(f"missing: {path}")
            continue
        found = len(image_files(path))
        if found == 0:
            problems.append(f"{path} has no images")
        images += found
    if not problems and recorded and recorded.get("images") not in (None, images):
        problems.append(f"{images} images, but {recorded['images']} were recorded after download")
    return problems, ({"images": images, "classes": len(CLASSES)} if not problems else {})


def arrange_download(staging):
    """The unpacked folder that holds `0/` and `1/` (the archive's spawrious224/)."""
    for dirpath, dirnames, _ in os.walk(staging):
        if {"0", "1"} <= set(dirnames) and os.path.isdir(os.path.join(dirpath, "0", LOCATIONS[0])):
            return dirpath
    raise DatasetNotFoundError("the Spawrious archive has no folder with 0/<location>/ and 1/; "
                               "it may be the wrong file")
