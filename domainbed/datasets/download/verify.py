"""Layout checks behind `download --verify` (torch-free: it only walks directories).

Each check returns (problems, summary): a list of one-line problems (empty = OK) and a
small dict (images, classes) that the download script records in `.checksums.json`, so a
dataset whose size is not published is compared with its state right after download.
"""
import os

from domainbed.datasets.image_folder import domain_folders
from domainbed.datasets.mnist import MNIST_RAW_FILES

# The extensions torchvision's ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Sizes of the decompressed MNIST files: a 16-byte (images) or 8-byte (labels) header plus
# 28x28 bytes per image or one byte per label, for 60,000 train and 10,000 test digits.
MNIST_RAW_SIZES = dict(zip(MNIST_RAW_FILES, (16 + 60000 * 784, 8 + 60000, 16 + 10000 * 784, 8 + 10000)))


def count_images(folder):
    """Image files below `folder`, recursively (ImageFolder reads nested files too)."""
    total = 0
    for _, _, files in os.walk(folder):
        total += sum(1 for name in files if name.lower().endswith(IMAGE_EXTENSIONS))
    return total


def _check_domain(domain_path):
    """(problems, class names, image count) for one domain folder."""
    classes = domain_folders(domain_path)
    if not classes:
        return [f"{domain_path} has no class folders"], classes, 0
    problems, images = [], 0
    for name in classes:
        found = count_images(os.path.join(domain_path, name))
        if found == 0:
            problems.append(f"{os.path.join(domain_path, name)} has no images")
        images += found
    return problems, classes, images


def _check_class_lists(class_lists, expected_classes):
    problems = []
    reference_domain, reference = next(iter(class_lists.items()))
    for domain, classes in class_lists.items():
        if classes != reference:
            # ImageFolder numbers classes per domain, so labels would disagree across domains.
            problems.append(f"domain {domain}'s classes differ from {reference_domain}'s "
                            f"({len(classes)} vs {len(reference)} folders): labels would not match")
    if expected_classes is not None and len(reference) != expected_classes:
        problems.append(f"{len(reference)} classes per domain, expected {expected_classes}")
    return problems


def _check_count(images, dataset_class, recorded):
    expected = dataset_class.EXPECTED_IMAGES
    if expected is not None:
        if dataset_class.MIN_IMAGES and images < expected:
            return [f"{images} images, expected at least {expected}"]
        if not dataset_class.MIN_IMAGES and images != expected:
            return [f"{images} images, expected {expected}"]
        return []
    if recorded and recorded.get("images") not in (None, images):
        return [f"{images} images, but {recorded['images']} were recorded after download"]
    return []


def check_image_folder(data_dir, dataset_class, recorded=None):
    """Domains, classes and image counts of `data_dir/<SUBFOLDER>` against the class's
    EXPECTED_* constants (or the summary `recorded` after download)."""
    path = os.path.join(data_dir, dataset_class.SUBFOLDER)
    if not os.path.isdir(path):
        return [f"missing: {path}"], {}
    folders = domain_folders(path)
    expected = dataset_class.EXPECTED_FOLDERS
    if expected is not None and folders != sorted(expected):
        return [f"{path} has domain folders {folders}, expected {sorted(expected)}"], {}
    if len(folders) != len(dataset_class.ENVIRONMENTS):
        return [f"{path} has {len(folders)} domain folders, expected {len(dataset_class.ENVIRONMENTS)}"], {}
    problems, class_lists, images = [], {}, 0
    for folder in folders:
        domain_problems, classes, found = _check_domain(os.path.join(path, folder))
        problems += domain_problems
        class_lists[folder] = classes
        images += found
    problems += _check_class_lists(class_lists, dataset_class.EXPECTED_CLASSES)
    problems += _check_count(images, dataset_class, recorded)
    summary = {"images": images, "classes": len(next(iter(class_lists.values())))}
    return problems, summary


def check_mnist(data_dir, recorded=None):
    """The four decompressed files torchvision reads, with their exact sizes."""
    raw = os.path.join(data_dir, "MNIST", "raw")
    problems = []
    for name, size in MNIST_RAW_SIZES.items():
        path = os.path.join(raw, name)
        if not os.path.isfile(path):
            problems.append(f"missing: {path}")
        elif os.path.getsize(path) != size:
            problems.append(f"{path} has {os.path.getsize(path)} bytes, expected {size}")
    return problems, ({"images": 70000} if not problems else {})


def check_wilds(data_dir, folder):
    """WILDS checks its own files when loading; here: the folder and its metadata CSV."""
    path = os.path.join(data_dir, folder)
    if not os.path.isdir(path):
        return [f"missing: {path}"], {}
    if not any(name.endswith(".csv") for name in os.listdir(path)):
        return [f"{path} has no metadata .csv (incomplete download?)"], {}
    return [], {}
