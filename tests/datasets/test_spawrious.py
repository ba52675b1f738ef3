"""Spawrious datasets on a small generated image tree: environments, element order, limits,
labels, transforms, layouts, `download --verify` and installation from a local archive."""
import os
import tarfile

import pytest
import torch
from PIL import Image

from domainbed import datasets, hparams_registry
from domainbed.datasets import spawrious
from domainbed.datasets.base import DatasetNotFoundError
from domainbed.scripts import download

PER_FOLDER = 11  # images per (folder, location, breed); TOTAL is patched to 10 below
SPAWRIOUS_NAMES = ["SpawriousO2O_easy", "SpawriousO2O_medium", "SpawriousO2O_hard",
                   "SpawriousM2M_easy", "SpawriousM2M_medium", "SpawriousM2M_hard"]


def make_tree(base, per_folder=PER_FOLDER):
    """base/{0,1}/<location>/<breed>/img_XX.png for every folder a dataset reads; each
    image's red value encodes (folder, location, breed, index) for the order checks."""
    for f, (folder, location, breed) in enumerate(spawrious.required_folders()):
        path = os.path.join(base, folder, location, breed)
        os.makedirs(path)
        for i in reversed(range(per_folder)):  # creation order differs from sorted order
            Image.new("RGB", (8, 6), (f % 256, i, 0)).save(os.path.join(path, f"img_{i:02d}.png"))
        open(os.path.join(path, "notes.txt"), "w").close()
        Image.new("RGB", (8, 6)).save(os.path.join(path, "upper.PNG"))  # suffixes are case-sensitive


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("spawrious_data")
    make_tree(os.path.join(root, spawrious.SUBFOLDER))
    return str(root)


@pytest.fixture
def small_total(monkeypatch):
    monkeypatch.setattr(spawrious.Spawrious, "TOTAL", 10)


def build(name, data_dir, augment=True):
    hparams = hparams_registry.default_hparams("ERM", name)
    hparams["data_augmentation"] = augment
    return datasets.get_dataset_class(name)(data_dir, [0], hparams)


def blocks_of(environment):
    """[(location, breed, count), ...] of consecutive items, in element order."""
    blocks = []
    for path, _ in environment.items:
        location, breed = path.split(os.sep)[-3:-1]
        folder = path.split(os.sep)[-4]
        if blocks and blocks[-1][:3] == (folder, location, breed):
            blocks[-1] = (folder, location, breed, blocks[-1][3] + 1)
        else:
            blocks.append((folder, location, breed, 1))
    return blocks


def test_registry_order_environments_and_hparams():
    names = datasets.DATASETS
    assert names[12:18] == SPAWRIOUS_NAMES
    assert names[:12][-1] == "WILDSFMoW"
    for name in SPAWRIOUS_NAMES:
        cls = datasets.get_dataset_class(name)
        assert cls.ENVIRONMENTS == ["Test", "SC_group_1", "SC_group_2"]
        assert (cls.N_STEPS, cls.CHECKPOINT_FREQ, cls.INPUT_SHAPE) == (5001, 100, (3, 224, 224))
        assert datasets.num_environments(name) == 3
    # a big-image dataset: upstream's lr / batch size, RDM's "other datasets" batch size
    assert hparams_registry.default_hparams("ERM", "SpawriousO2O_easy")["lr"] == 5e-5
    assert hparams_registry.default_hparams("RDM", "SpawriousM2M_hard")["batch_size"] == 88


def test_o2o_easy_environments_blocks_limits_and_labels(data_dir, small_total):
    dataset = build("SpawriousO2O_easy", data_dir)
    assert dataset.num_classes == 4 and len(dataset) == 3
    test, group_1, group_2 = dataset.datasets
    # 97% / 87% of TOTAL = 10 from each breed's location, the rest from the filler (beach)
    assert blocks_of(group_1) == [
        ("0", "desert", "bulldog", 9), ("0", "jungle", "dachshund", 9), ("0", "dirt", "labrador", 9),
        ("0", "snow", "corgi", 9), ("0", "beach", "bulldog", 1), ("0", "beach", "dachshund", 1),
        ("0", "beach", "labrador", 1), ("0", "beach", "corgi", 1)]
    assert blocks_of(group_2) == [
        ("1", "desert", "bulldog", 8), ("1", "jungle", "dachshund", 8), ("1", "dirt", "labrador", 8),
        ("1", "snow", "corgi", 8), ("1", "beach", "bulldog", 2), ("1", "beach", "dachshund", 2),
        ("1", "beach", "labrador", 2), ("1", "beach", "corgi", 2)]
    # every image of each breed's test location, folder 0 then folder 1
    expected_test = [(folder, loc, breed, PER_FOLDER) for folder in "01" for loc, breed in
                     [("dirt", "bulldog"), ("snow", "dachshund"), ("desert", "labrador"), ("jungle", "corgi")]]
    assert blocks_of(test) == expected_test
    # labels: bulldog 0, corgi 1, dachshund 2, labrador 3; the first images in sorted order
    assert [label for _, label in group_1.items[:: 9][:4]] == [0, 2, 3, 1]
    assert [os.path.basename(p) for p, _ in group_1.items[:3]] == ["img_00.png", "img_01.png", "img_02.png"]


@pytest.mark.parametrize("name, group_1, group_2, test", [
    ("SpawriousM2M_easy", ["desert", "mountain", "dirt", "jungle"], ["mountain", "desert", "jungle", "dirt"],
     ["dirt", "jungle", "mountain", "desert", "jungle", "dirt", "desert", "mountain"]),
    ("SpawriousM2M_hard", ["dirt", "jungle", "snow", "beach"], ["jungle", "dirt", "beach", "snow"],
     ["snow", "beach", "dirt", "jungle", "beach", "snow", "jungle", "dirt"]),
])
def test_m2m_environments(data_dir, small_total, name, group_1, group_2, test):
    dataset = build(name, data_dir)
    breeds = ["bulldog", "dachshund", "labrador", "corgi"]
    env_test, env_1, env_2 = dataset.datasets
    assert blocks_of(env_1) == [("0", loc, breed, 10) for loc, breed in zip(group_1, breeds)]
    assert blocks_of(env_2) == [("0", loc, breed, 10) for loc, breed in zip(group_2, breeds)]
    assert blocks_of(env_test) == [("0", loc, breed, PER_FOLDER) for loc, breed in zip(test, breeds * 2)]


def test_full_size_limits_take_every_image_of_small_folders(data_dir):
    dataset = build("SpawriousO2O_hard", data_dir)  # TOTAL = 3168: nothing is cut
    assert [len(env) for env in dataset.datasets] == [8 * PER_FOLDER, 8 * PER_FOLDER, 8 * PER_FOLDER]


def test_items_and_transforms(data_dir):
    dataset = build("SpawriousO2O_medium", data_dir)
    test, group_1, _ = dataset.datasets
    x, y = test[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert y.dtype == torch.long and y.item() == 0
    assert torch.equal(test[0][0], test[0][0])  # the Test environment is never augmented
    names = [type(t).__name__ for t in group_1.transform.transforms]
    assert names == ["Resize", "RandomHorizontalFlip", "ColorJitter", "RandomGrayscale",
                     "ToTensor", "Normalize"]
    plain = build("SpawriousO2O_medium", data_dir, augment=False)
    assert [type(t).__name__ for t in plain.datasets[1].transform.transforms] == [
        "Resize", "ToTensor", "Normalize"]


def test_upstream_layout_and_missing_data(tmp_path, data_dir, small_total):
    # upstream reads 0/ and 1/ directly under --data_dir
    upstream_root = os.path.join(data_dir, spawrious.SUBFOLDER)
    assert len(build("SpawriousM2M_medium", upstream_root)[1]) == 40
    with pytest.raises(DatasetNotFoundError, match="download"):
        build("SpawriousM2M_medium", str(tmp_path))
    partial = tmp_path / spawrious.SUBFOLDER / "0"
    partial.mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="is missing"):
        build("SpawriousM2M_medium", str(tmp_path))


def test_verify_layout(tmp_path, data_dir, capsys):
    problems, summary = spawrious.check_layout(data_dir)
    assert problems == [] and summary == {
        "images": len(spawrious.required_folders()) * PER_FOLDER, "classes": 4}
    assert spawrious.check_layout(data_dir, {"images": 1})[0]  # differs from the record
    assert download.main(["--data_dir", data_dir, "--verify", "--datasets", "SpawriousO2O_easy"]) == 0
    assert "Spawrious: OK" in capsys.readouterr().out
    assert download.main(["--data_dir", str(tmp_path), "--verify", "--datasets", "Spawrious"]) == 1
    assert "missing" in capsys.readouterr().out


def test_download_installs_from_a_local_archive_and_records_its_checksum(tmp_path, capsys):
    source = tmp_path / "source"
    make_tree(os.path.join(source, spawrious.SUBFOLDER), per_folder=1)
    archive = tmp_path / spawrious.ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / spawrious.SUBFOLDER, arcname=spawrious.SUBFOLDER)
    target = tmp_path / "data"
    code = download.main(["--data_dir", str(target), "--datasets", "SpawriousM2M_easy",
                          "--source", f"{spawrious.ARCHIVE}={archive}", "--no_progress"])
    assert code == 0, capsys.readouterr().err
    assert (target / spawrious.SUBFOLDER / "1").is_dir()
    store = download.fetch.ChecksumStore(str(target))
    assert store.archive(spawrious.ARCHIVE)["md5"] == download.fetch.md5_of(str(archive))
    assert "Spawrious" in download.RECIPES and not download.RECIPES["Spawrious"].by_default
