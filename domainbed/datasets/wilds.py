"""WILDSCamelyon and WILDSFMoW, behind the optional `wilds` extra.

The `wilds` package is imported only when one of these datasets is constructed, so the
rest of DomainBed works without it. Environments are the sorted values of one metadata
field (`hospital`, `region`); each env is a view of the WILDS dataset.
"""
import os

from domainbed.datasets.base import MultipleDomainDataset, missing_dataset_error
from domainbed.datasets.image_folder import allow_truncated_images, env_transforms
from domainbed.datasets.registry import register_dataset

WILDS_INSTALL_HINT = "pip install 'domainbed-fgmix[wilds]'"


def import_wilds_class(module_name, class_name):
    """`wilds.datasets.<module_name>.<class_name>`, or a one-line install hint."""
    import importlib

    try:
        module = importlib.import_module(f"wilds.datasets.{module_name}")
    except ImportError as error:
        raise ImportError(
            f"the WILDS datasets need the optional 'wilds' package ({error}); "
            f"install it with: {WILDS_INSTALL_HINT}") from error
    return getattr(module, class_name)


def metadata_values(wilds_dataset, metadata_name):
    """Sorted distinct values of one metadata column."""
    column = wilds_dataset.metadata_fields.index(metadata_name)
    return sorted(set(wilds_dataset.metadata_array[:, column].view(-1).tolist()))


class WILDSEnvironment:
    """The items of `wilds_dataset` whose `metadata_name` equals `metadata_value`, as
    (transformed PIL image, label) pairs."""

    def __init__(self, wilds_dataset, metadata_name, metadata_value, transform=None):
        import torch

        self.name = f"{metadata_name}_{metadata_value}"
        column = wilds_dataset.metadata_fields.index(metadata_name)
        selected = wilds_dataset.metadata_array[:, column] == metadata_value
        self.indices = torch.where(selected)[0]
        self.dataset = wilds_dataset
        self.transform = transform

    def __getitem__(self, i):
        from PIL import Image

        index = self.indices[i]
        x = self.dataset.get_input(index)
        if not isinstance(x, Image.Image):
            x = Image.fromarray(x)
        y = self.dataset.y_array[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, y

    def __len__(self):
        return len(self.indices)


class WILDSDataset(MultipleDomainDataset):
    INPUT_SHAPE = (3, 224, 224)
    WILDS_MODULE = None       # wilds.datasets.<module>
    WILDS_CLASS = None
    WILDS_FOLDER = None       # the folder wilds reads under root (for the missing-data error)
    METADATA_NAME = None

    def __init__(self, root, test_envs, hparams):
        super().__init__()
        if root is None:
            raise ValueError("Data directory not specified!")
        wilds_dataset = self._load(root)
        values = metadata_values(wilds_dataset, self.METADATA_NAME)
        allow_truncated_images()
        transforms = env_transforms(len(values), test_envs, hparams["data_augmentation"],
                                    resize_first=True)
        self.datasets = [
            WILDSEnvironment(wilds_dataset, self.METADATA_NAME, value, transform)
            for value, transform in zip(values, transforms)
        ]
        self.input_shape = self.INPUT_SHAPE
        self.num_classes = wilds_dataset.n_classes

    def _load(self, root):
        wilds_class = import_wilds_class(self.WILDS_MODULE, self.WILDS_CLASS)
        try:
            return wilds_class(root_dir=root)
        except (FileNotFoundError, OSError) as error:
            raise missing_dataset_error(
                type(self).__name__, os.path.join(root, self.WILDS_FOLDER), root) from error


@register_dataset
class WILDSCamelyon(WILDSDataset):
    ENVIRONMENTS = ["hospital_0", "hospital_1", "hospital_2", "hospital_3", "hospital_4"]
    WILDS_MODULE, WILDS_CLASS = "camelyon17_dataset", "Camelyon17Dataset"
    WILDS_FOLDER = "camelyon17_v1.0"
    METADATA_NAME = "hospital"


@register_dataset
class WILDSFMoW(WILDSDataset):
    ENVIRONMENTS = ["region_0", "region_1", "region_2", "region_3", "region_4", "region_5"]
    WILDS_MODULE, WILDS_CLASS = "fmow_dataset", "FMoWDataset"
    WILDS_FOLDER = "fmow_v1.1"
    METADATA_NAME = "region"
