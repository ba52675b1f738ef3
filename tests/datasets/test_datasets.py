"""Datasets: registry order, torch-free import, offline datasets, MNIST, image folders, WILDS."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from domainbed import datasets
from domainbed.datasets import image_folder, mnist, offline
from domainbed.datasets import wilds as wilds_datasets
from domainbed.datasets.base import DatasetNotFoundError
import support

REPO_ROOT = str(support.REPO_ROOT)
UPSTREAM_NAMES = ["Debug28", "Debug224", "ColoredMNIST", "RotatedMNIST", "VLCS", "PACS",
                  "OfficeHome", "TerraIncognita", "DomainNet", "SVIRO", "WILDSCamelyon", "WILDSFMoW"]
OFFLINE_NAMES = ["RotatedMNIST5k", "ColoredMNIST5k", "DigitsDG5k"]


# ---------------------------------------------------------------------------------------
# Registry

def test_dataset_names_upstream_order_then_ours():
    names = datasets.DATASETS
    assert names[: len(UPSTREAM_NAMES)] == UPSTREAM_NAMES
    assert set(OFFLINE_NAMES) <= set(names[len(UPSTREAM_NAMES):])


@pytest.mark.parametrize("name, n_envs", [
    ("ColoredMNIST", 3), ("RotatedMNIST", 6), ("VLCS", 4), ("PACS", 4), ("OfficeHome", 4),
    ("TerraIncognita", 4), ("DomainNet", 6), ("SVIRO", 10), ("WILDSCamelyon", 5), ("WILDSFMoW", 6),
    ("RotatedMNIST5k", 6), ("ColoredMNIST5k", 3), ("DigitsDG5k", 4)])
def test_num_environments(name, n_envs):
    assert datasets.num_environments(name) == n_envs


def test_checkpoint_freq_as_upstream():
    assert datasets.get_dataset_class("PACS").CHECKPOINT_FREQ == 300
    assert datasets.get_dataset_class("SVIRO").CHECKPOINT_FREQ == 300
    assert datasets.get_dataset_class("DomainNet").CHECKPOINT_FREQ == 1000
    assert datasets.get_dataset_class("ColoredMNIST").CHECKPOINT_FREQ == 100


def test_import_and_num_environments_do_not_import_torch():
    code = ("import sys, domainbed.datasets as d, domainbed.datasets.download.verify, domainbed.scripts.download; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "print(d.num_environments('PACS'), d.num_environments('DigitsDG5k'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "4"]


# ---------------------------------------------------------------------------------------
# Offline datasets (built once per module: ~1 s each)

@pytest.fixture(scope="module")
def offline_built():
    torch.manual_seed(0)
    np.random.seed(0)
    return {name: datasets.get_dataset_class(name)(None, [], {}) for name in OFFLINE_NAMES}


@pytest.mark.parametrize("name, sizes, shape, n_classes", [
    ("RotatedMNIST5k", [834, 834, 833, 833, 833, 833], (1, 28, 28), 10),
    ("ColoredMNIST5k", [1667, 1667, 1666], (2, 28, 28), 2),
    ("DigitsDG5k", [1667, 1797, 1667, 1666], (3, 28, 28), 10)])
def test_offline_shapes_ranges_and_classes(offline_built, name, sizes, shape, n_classes):
    dataset = offline_built[name]
    assert [len(env) for env in dataset] == sizes
    assert dataset.input_shape == shape and dataset.num_classes == n_classes
    for env in dataset:
        x, y = env.tensors
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == shape
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5
        assert y.dtype == torch.long and sorted(y.unique().tolist()) == list(range(n_classes))


@pytest.mark.parametrize("name", OFFLINE_NAMES)
def test_offline_cpu_sized_constants(name):
    cls = datasets.get_dataset_class(name)
    assert (cls.SMALL_IMAGES, cls.N_WORKERS, cls.N_STEPS, cls.CHECKPOINT_FREQ) == (True, 0, 1001, 100)


@pytest.mark.parametrize("name", OFFLINE_NAMES)
def test_offline_ignores_and_preserves_global_rngs(offline_built, name):
    torch.manual_seed(123)  # the fixture built under seed 0
    np.random.seed(123)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    again = datasets.get_dataset_class(name)("ignored", [0], {})
    assert torch.equal(torch.get_rng_state(), torch_state)  # the global streams were not used
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    for env_a, env_b in zip(offline_built[name], again):
        for a, b in zip(env_a.tensors, env_b.tensors):
            assert torch.equal(a, b)


def _reference_shuffle(n):
    return torch.randperm(n, generator=torch.Generator().manual_seed(offline.DATA_SEED))


def test_rotated_mnist5k_follows_upstream_definition(offline_built):
    images, labels = offline.mnist5k()
    shuffle = _reference_shuffle(len(images))
    envs = offline_built["RotatedMNIST5k"].datasets
    unrotated = images[shuffle[0::6]]
    assert torch.equal((envs[0].tensors[0][:, 0] * 255).round().to(torch.uint8), unrotated)
    assert torch.equal(envs[3].tensors[1], labels[shuffle[3::6]])
    expected = mnist.rotate_environment(images[shuffle[2::6]][:5], labels[:5], 30).tensors[0]
    # Batched grid sampling vs PIL image by image (which rounds to uint8): within 1/255.
    assert torch.allclose(envs[2].tensors[0][:5], expected, atol=1.0 / 255 + 1e-6)
    assert not torch.allclose(envs[2].tensors[0][:5], envs[0].tensors[0][:5])


def test_colored_mnist5k_colour_and_label_statistics(offline_built):
    images, labels = offline.mnist5k()
    shuffle = _reference_shuffle(len(images))
    for i, flip in enumerate([0.1, 0.2, 0.9]):
        x, y = offline_built["ColoredMNIST5k"].datasets[i].tensors
        channel_mass = x.sum(dim=(2, 3))
        assert ((channel_mass > 0).sum(1) == 1).all()  # exactly one coloured channel per digit
        colour = channel_mass.argmax(1)
        assert abs((colour != y).float().mean().item() - flip) < 0.04
        clean = (labels[shuffle[i::3]] < 5).long()
        assert abs((clean != y).float().mean().item() - 0.25) < 0.04
        assert torch.equal((x.max(1).values * 255).round().to(torch.uint8), images[shuffle[i::3]])


def test_digits_dg5k_mnist_parts_are_disjoint_and_used(offline_built):
    images, labels = offline.mnist5k()
    parts = offline.DigitsDG5k.mnist_parts(len(images), offline.data_generator())
    as_sets = [set(p.tolist()) for p in parts]
    assert sum(len(s) for s in as_sets) == len(images) == len(set.union(*as_sets))
    envs = offline_built["DigitsDG5k"].datasets
    clean_mnist = (envs[0].tensors[0][:, 0] * 255).round().to(torch.uint8)
    assert torch.equal(clean_mnist, images[parts[0]])
    assert torch.equal(envs[2].tensors[1], labels[parts[1]])
    assert torch.equal(envs[3].tensors[1], labels[parts[2]])
    clean_c = images[parts[2]].float().div(255.0)
    assert (envs[3].tensors[0][:, 0] - clean_c).abs().mean() > 0.01  # corrupted
    assert envs[2].tensors[0].std(dim=1).mean() > 0.01  # coloured backgrounds, not grey


def test_digits_dg5k_sklearn_domain_is_centred(offline_built):
    from sklearn.datasets import load_digits

    x, y = offline_built["DigitsDG5k"].datasets[1].tensors
    assert torch.equal(y, torch.tensor(load_digits().target))
    border = torch.ones(28, 28, dtype=torch.bool)
    border[4:24, 4:24] = False
    assert x[:, :, border].abs().max() == 0.0
    assert x[:, :, 4:24, 4:24].amax(dim=(1, 2, 3)).min() > 0.5


def test_mnist_c_uses_several_corruptions():
    clean = torch.zeros(40, 28, 28, dtype=torch.uint8)
    clean[:, 8:20, 12:16] = 255
    corrupted = offline.mnist_c_domain(clean, offline.data_generator())[:, 0]
    distinct = {tuple(torch.round(img[::7, ::7].flatten() * 100).tolist()) for img in corrupted}
    assert len(distinct) > 5 and corrupted.min() >= 0 and corrupted.max() <= 1


# ---------------------------------------------------------------------------------------
# MNIST classes on tiny idx files (torchvision's raw layout; no download happens)

def _write_idx(path, magic, array):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(20, 28, 28))
    labels = np.arange(20) % 10
    for prefix, rows in (("train", slice(0, 13)), ("t10k", slice(13, 20))):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", 0x803, images[rows])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", 0x801, labels[rows])
    return str(tmp_path), torch.tensor(images, dtype=torch.uint8), torch.tensor(labels)


def test_colored_mnist_uses_global_rng_and_stride_slices(tiny_mnist_root):
    root, images, labels = tiny_mnist_root
    torch.manual_seed(5)
    dataset = datasets.get_dataset_class("ColoredMNIST")(root, [], {})
    torch.manual_seed(5)
    shuffle = torch.randperm(20)
    assert [len(env) for env in dataset] == [7, 7, 6]
    assert dataset.input_shape == (2, 28, 28) and dataset.num_classes == 2
    for i, env in enumerate(dataset):
        x, y = env.tensors
        assert torch.equal((x.max(1).values * 255).round().to(torch.uint8), images[shuffle[i::3]])
        assert set(y.tolist()) <= {0, 1}
    torch.manual_seed(5)
    same = datasets.get_dataset_class("ColoredMNIST")(root, [], {})
    assert all(torch.equal(a.tensors[0], b.tensors[0]) for a, b in zip(dataset, same))


def test_rotated_mnist_env_sizes_and_labels(tiny_mnist_root):
    root, images, labels = tiny_mnist_root
    torch.manual_seed(3)
    dataset = datasets.get_dataset_class("RotatedMNIST")(root, [], {})
    torch.manual_seed(3)
    shuffle = torch.randperm(20)
    assert [len(env) for env in dataset] == [4, 4, 3, 3, 3, 3]
    assert dataset.num_classes == 10 and dataset.input_shape == (1, 28, 28)
    for i, env in enumerate(dataset):
        assert torch.equal(env.tensors[1], labels[shuffle[i::6]])
    assert torch.equal((dataset[0].tensors[0][:, 0] * 255).round().to(torch.uint8), images[shuffle[0::6]])


def test_mnist_requires_a_root():
    with pytest.raises(ValueError, match="Data directory not specified!"):
        datasets.get_dataset_class("RotatedMNIST")(None, [], {})


def test_mnist_failed_download_names_the_download_script(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    def refuse(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(MNIST, "download", refuse)
    with pytest.raises(DatasetNotFoundError, match="domainbed.scripts.download .*--datasets MNIST"):
        datasets.get_dataset_class("ColoredMNIST")(str(tmp_path), [], {})


# ---------------------------------------------------------------------------------------
# Image folders on a tiny fake tree

def _fake_image_tree(base, domains, classes_of):
    from PIL import Image

    for domain in domains:
        for cls in classes_of(domain):
            folder = base / domain / cls
            folder.mkdir(parents=True)
            for k in range(2):
                Image.new("RGB", (12, 10), (40 * k, 100, 200)).save(folder / f"{k}.png")


def _transform_names(transform):
    return [type(step).__name__ for step in transform.transforms]


def test_image_folder_envs_classes_and_transforms(tmp_path):
    domains = ["sketch", "art_painting", "photo", "cartoon"]
    _fake_image_tree(tmp_path / "PACS", domains,
                     lambda d: ["dog", "horse", "zebra"] if d == "sketch" else ["dog", "horse"])
    dataset = datasets.get_dataset_class("PACS")(str(tmp_path), [1], {"data_augmentation": True})
    assert dataset.environment_folders == sorted(domains)
    assert dataset.num_classes == 3  # from the last env (sketch)
    assert dataset.input_shape == (3, 224, 224)
    assert [len(env) for env in dataset] == [4, 4, 4, 6]
    assert dataset[0].classes == ["dog", "horse"]
    augmented = ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "RandomGrayscale",
                 "ToTensor", "Normalize"]
    assert _transform_names(dataset[0].transform) == augmented
    assert _transform_names(dataset[1].transform) == ["Resize", "ToTensor", "Normalize"]
    x, y = dataset[2][3]
    assert tuple(x.shape) == (3, 224, 224) and y == 1
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_image_folder_no_augmentation_when_disabled(tmp_path):
    _fake_image_tree(tmp_path / "VLCS", ["Caltech101", "LabelMe", "SUN09", "VOC2007"], lambda d: ["a"])
    dataset = datasets.get_dataset_class("VLCS")(str(tmp_path), [], {"data_augmentation": False})
    assert all(_transform_names(env.transform)[0] == "Resize" for env in dataset)


def test_a_user_folder_dataset_in_a_few_lines(tmp_path):
    class MyDomains(image_folder.ImageFolderDataset):
        SUBFOLDER = "my_domains"
        ENVIRONMENTS = ["x", "y"]

    _fake_image_tree(tmp_path / "my_domains", ["y_domain", "x_domain"], lambda d: ["c0", "c1"])
    dataset = MyDomains(str(tmp_path), [0], {"data_augmentation": True})
    assert dataset.environment_folders == ["x_domain", "y_domain"] and dataset.num_classes == 2


def test_folder_dataset_class_from_a_path(tmp_path):
    _fake_image_tree(tmp_path / "shapes", ["real", "drawn", "clay"], lambda d: ["circle", "square"])
    cls = image_folder.folder_dataset_class(str(tmp_path / "shapes"))
    assert cls.ENVIRONMENTS == ["clay", "drawn", "real"] and cls.__name__ == "shapes"
    dataset = cls(str(tmp_path), [2], {"data_augmentation": True})
    assert dataset.num_classes == 2 and [len(env) for env in dataset] == [4, 4, 4]
    with pytest.raises(DatasetNotFoundError, match="not a folder"):
        image_folder.folder_dataset_class(str(tmp_path / "absent"))


def test_missing_user_dataset_explains_the_layout(tmp_path):
    class MyDomains(image_folder.ImageFolderDataset):
        SUBFOLDER = "my_domains"
        ENVIRONMENTS = ["x", "y"]

    with pytest.raises(DatasetNotFoundError, match="put its images in .*my_domains.*<domain>"):
        MyDomains(str(tmp_path), [], {"data_augmentation": True})


def test_missing_image_folder_dataset_names_folder_and_command(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        datasets.get_dataset_class("PACS")(str(tmp_path), [], {"data_augmentation": True})
    message = str(caught.value)
    assert os.path.join(str(tmp_path), "PACS") in message
    assert "python -m domainbed.scripts.download" in message and "--datasets PACS" in message
    assert "\n" not in message


def test_incomplete_image_folder_dataset_is_a_clear_error(tmp_path):
    _fake_image_tree(tmp_path / "PACS", ["art_painting", "cartoon"], lambda d: ["dog"])
    with pytest.raises(DatasetNotFoundError, match="2 domain folders.*expected 4.*--force"):
        datasets.get_dataset_class("PACS")(str(tmp_path), [], {"data_augmentation": True})
    (tmp_path / "PACS" / "photo").mkdir()
    _fake_image_tree(tmp_path / "PACS", ["sketch"], lambda d: ["dog"])
    with pytest.raises(DatasetNotFoundError, match="incomplete"):
        datasets.get_dataset_class("PACS")(str(tmp_path), [], {"data_augmentation": True})


def test_image_folder_requires_a_root():
    with pytest.raises(ValueError, match="Data directory not specified!"):
        datasets.get_dataset_class("OfficeHome")(None, [], {"data_augmentation": True})


# ---------------------------------------------------------------------------------------
# WILDS, with a stand-in for the optional package

class FakeWildsDataset:
    metadata_fields = ["hospital", "slide", "y"]
    n_classes = 2

    def __init__(self, root_dir):
        self.root_dir = root_dir
        self.metadata_array = torch.tensor([[h, 0, 0] for h in [3, 0, 3, 1, 0, 3]])
        self.y_array = torch.tensor([0, 1, 1, 0, 1, 0])

    def get_input(self, index):
        return np.full((8, 8, 3), int(index) * 10, dtype=np.uint8)


def test_wilds_without_the_package_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wilds", None)
    monkeypatch.setitem(sys.modules, "wilds.datasets", None)
    monkeypatch.setitem(sys.modules, "wilds.datasets.camelyon17_dataset", None)
    with pytest.raises(ImportError, match=r"pip install 'domainbed-fgmix\[wilds\]'"):
        datasets.get_dataset_class("WILDSCamelyon")(str(tmp_path), [], {"data_augmentation": True})


def test_wilds_environments_from_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr(wilds_datasets, "import_wilds_class", lambda module, name: FakeWildsDataset)
    dataset = datasets.get_dataset_class("WILDSCamelyon")(str(tmp_path), [1], {"data_augmentation": True})
    assert [env.name for env in dataset] == ["hospital_0", "hospital_1", "hospital_3"]
    assert [len(env) for env in dataset] == [2, 1, 3]
    assert dataset.num_classes == 2
    assert _transform_names(dataset[0].transform)[:2] == ["Resize", "RandomResizedCrop"]
    assert _transform_names(dataset[1].transform) == ["Resize", "ToTensor", "Normalize"]
    x, y = dataset[2][1]  # hospital 3, second item = index 2
    assert tuple(x.shape) == (3, 224, 224) and int(y) == 1


def test_wilds_missing_files_name_the_download_script(tmp_path, monkeypatch):
    def absent(root_dir):
        raise FileNotFoundError(root_dir)

    monkeypatch.setattr(wilds_datasets, "import_wilds_class", lambda module, name: absent)
    with pytest.raises(DatasetNotFoundError, match="fmow_v1.1.*--datasets WILDSFMoW"):
        datasets.get_dataset_class("WILDSFMoW")(str(tmp_path), [], {"data_augmentation": True})
