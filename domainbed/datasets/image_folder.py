"""Datasets stored as `root/<SUBFOLDER>/<domain>/<class>/<image>` (VLCS, PACS, OfficeHome,
TerraIncognita, DomainNet, SVIRO), with upstream DomainBed's transforms.

A new folder dataset takes a few lines::

    @register_dataset
    class MyDomains(ImageFolderDataset):
        SUBFOLDER = "my_domains"               # root/my_domains/<domain>/<class>/*.jpg
        ENVIRONMENTS = ["A", "B", "C"]         # one name per domain folder, sorted order

or, for a one-off tree, `folder_dataset_class("/data/my_domains")` (domains = its sorted
sub-folders). The EXPECTED_* constants describe the published data; `download --verify`
checks them.
"""
import os

from domainbed.datasets.base import DatasetNotFoundError, MultipleDomainDataset, missing_dataset_error
from domainbed.datasets.registry import register_dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform():
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize((224, 224)),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


def augment_transform(resize_first=False):
    """Upstream's training augmentation; WILDS resizes to 224 before the random crop."""
    from torchvision import transforms

    steps = [transforms.Resize((224, 224))] if resize_first else []
    steps += [
        transforms.RandomResizedCrop(224, scale=(0.7, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(0.3, 0.3, 0.3, 0.3),
        transforms.RandomGrayscale(),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ]
    return transforms.Compose(steps)


def env_transforms(n_envs, test_envs, augment, resize_first=False):
    """Per env: augmentation iff `augment` and the env is not a test env (a training env's
    out-split is then augmented too, as upstream)."""
    return [
        augment_transform(resize_first) if augment and i not in test_envs else eval_transform()
        for i in range(n_envs)
    ]


def domain_folders(path):
    """Sorted names of the sub-directories of `path` (the environments)."""
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())


def allow_truncated_images():
    # Some published images are truncated; upstream lets PIL load them anyway.
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True


class ImageFolderDataset(MultipleDomainDataset):
    """Each env is a torchvision ImageFolder over one sorted sub-folder of root/SUBFOLDER;
    num_classes is the last env's class count (upstream)."""

    SUBFOLDER = None
    CHECKPOINT_FREQ = 300
    INPUT_SHAPE = (3, 224, 224)
    EXPECTED_FOLDERS = None   # the domain folder names of the published data, sorted
    EXPECTED_CLASSES = None   # classes per domain
    EXPECTED_IMAGES = None    # images in all domains together
    MIN_IMAGES = False        # EXPECTED_IMAGES is a lower bound, not an exact count
    HAS_DOWNLOAD = False      # `scripts/download` knows where to fetch it

    def __init__(self, root, test_envs, hparams):
        super().__init__()
        if root is None:
            raise ValueError("Data directory not specified!")
        path = os.path.join(root, self.SUBFOLDER)
        folders = self._domain_folders_or_error(root, path)
        allow_truncated_images()
        transforms = env_transforms(len(folders), test_envs, hparams["data_augmentation"])
        self.environment_folders = folders
        self.datasets = [
            self._image_folder(root, os.path.join(path, folder), transform)
            for folder, transform in zip(folders, transforms)
        ]
        self.input_shape = self.INPUT_SHAPE
        self.num_classes = len(self.datasets[-1].classes)

    def _domain_folders_or_error(self, root, path):
        name = type(self).__name__
        if not os.path.isdir(path) and self.HAS_DOWNLOAD:
            raise missing_dataset_error(name, path, root)
        if not os.path.isdir(path):
            raise DatasetNotFoundError(f"dataset {name} not found: put its images in "
                                       f"{os.path.join(path, '<domain>', '<class>', '<image>')}")
        folders = domain_folders(path)
        if len(folders) != len(self.ENVIRONMENTS):
            raise DatasetNotFoundError(
                f"dataset {name} at {path} has {len(folders)} domain folders ({', '.join(folders)}), "
                f"expected {len(self.ENVIRONMENTS)}. Re-download it with: python -m "
                f"domainbed.scripts.download --data_dir {root} --datasets {name} --force")
        return folders

    def _image_folder(self, root, env_path, transform):
        from torchvision.datasets import ImageFolder

        try:
            return ImageFolder(env_path, transform=transform)
        except FileNotFoundError as error:  # a domain without classes or without images
            raise DatasetNotFoundError(
                f"dataset {type(self).__name__} is incomplete: {error}. Re-download it with: "
                f"python -m domainbed.scripts.download --data_dir {root} "
                f"--datasets {type(self).__name__} --force") from error


def fast_pipeline_refusal(name):
    """Why `--pipeline fast` cannot run on the registered dataset `name` (it decodes image
    folders), or None when it can."""
    from domainbed.datasets.registry import dataset_names, get_dataset_class

    if issubclass(get_dataset_class(name), ImageFolderDataset):
        return None
    image_datasets = [d for d in dataset_names()
                      if issubclass(get_dataset_class(d), ImageFolderDataset)]
    return (f"--pipeline fast needs an image dataset ({', '.join(image_datasets)}); {name} is "
            "not one: drop --pipeline fast for it")


def folder_dataset_class(path, name=None):
    """An (unregistered) dataset class for any `path/<domain>/<class>/<image>` tree: the
    environments are its sorted domain folders. Construct it with root = dirname(path)."""
    path = os.path.normpath(path)
    if not os.path.isdir(path):
        raise DatasetNotFoundError(f"{path} is not a folder of <domain>/<class>/<image>")
    attributes = {"SUBFOLDER": os.path.basename(path), "ENVIRONMENTS": domain_folders(path)}
    return type(name or os.path.basename(path), (ImageFolderDataset,), attributes)


class PublishedImageFolder(ImageFolderDataset):
    """The image-folder datasets that `python -m domainbed.scripts.download` installs."""

    HAS_DOWNLOAD = True


@register_dataset
class VLCS(PublishedImageFolder):
    SUBFOLDER = "VLCS"
    ENVIRONMENTS = ["C", "L", "S", "V"]
    EXPECTED_FOLDERS = ["Caltech101", "LabelMe", "SUN09", "VOC2007"]
    EXPECTED_CLASSES = 5
    EXPECTED_IMAGES = 10729


@register_dataset
class PACS(PublishedImageFolder):
    SUBFOLDER = "PACS"
    ENVIRONMENTS = ["A", "C", "P", "S"]
    EXPECTED_FOLDERS = ["art_painting", "cartoon", "photo", "sketch"]
    EXPECTED_CLASSES = 7
    EXPECTED_IMAGES = 9991


@register_dataset
class OfficeHome(PublishedImageFolder):
    SUBFOLDER = "office_home"
    ENVIRONMENTS = ["A", "C", "P", "R"]
    EXPECTED_FOLDERS = ["Art", "Clipart", "Product", "Real World"]
    EXPECTED_CLASSES = 65
    EXPECTED_IMAGES = 15588


@register_dataset
class TerraIncognita(PublishedImageFolder):
    SUBFOLDER = "terra_incognita"
    ENVIRONMENTS = ["L100", "L38", "L43", "L46"]
    EXPECTED_FOLDERS = ["location_100", "location_38", "location_43", "location_46"]
    EXPECTED_CLASSES = 10
    EXPECTED_IMAGES = 24788


@register_dataset
class DomainNet(PublishedImageFolder):
    CHECKPOINT_FREQ = 1000
    SUBFOLDER = "domain_net"
    ENVIRONMENTS = ["clip", "info", "paint", "quick", "real", "sketch"]
    EXPECTED_FOLDERS = ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]
    EXPECTED_CLASSES = 345
    # 586,575 once upstream's duplicate list is removed; our download keeps the duplicates.
    EXPECTED_IMAGES = 586575
    MIN_IMAGES = True

    @classmethod
    def optimization_hparams(cls):
        # upstream: smaller random batches on DomainNet
        return {**super().optimization_hparams(),
                "batch_size": (32, lambda r: int(2**r.uniform(3, 5)))}


@register_dataset
class SVIRO(PublishedImageFolder):
    SUBFOLDER = "sviro"
    ENVIRONMENTS = ["aclass", "escape", "hilux", "i3", "lexus", "tesla", "tiguan", "tucson", "x5", "zoe"]
    EXPECTED_FOLDERS = ["aclass", "escape", "hilux", "i3", "lexus", "tesla", "tiguan", "tucson", "x5", "zoe"]
