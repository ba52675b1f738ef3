"""`Folder`: your own images as a DomainBed dataset, without editing the package.

    python -m domainbed.scripts.train --dataset Folder --data_dir ROOT ...
    python -m domainbed.scripts.train --dataset Folder --data_dir ROOT/manifest.csv ...

`--data_dir` is either

* a tree `ROOT/<domain>/<class>/<image>`: the domains are the environments (sorted names,
  as upstream's image datasets), the classes are the class folders, which every domain must
  have; an image is any file with one of torchvision's image extensions, found as
  torchvision's `ImageFolder` finds them (sub-folders of a class folder included, sorted);
* or a manifest, `.csv` (a header line naming the columns `path`, `domain` and `label`; other
  columns are ignored) or `.json` (a list of `{"path": ..., "domain": ..., "label": ...}`
  objects). Paths are relative to the manifest's folder (or absolute). The environments
  are the sorted domain names, the classes the sorted labels (numerically when every label
  is an integer). Within a domain the images are ordered by class, then path, as in a tree,
  so a manifest that lists a tree gives the tree's dataset.

Names starting with "." (`.DS_Store`, `.ipynb_checkpoints`) are ignored. The transforms and
the training augmentation are upstream's (`image_folder.env_transforms`: 224x224, ImageNet
normalisation), and so are the hparams (those of the other 224x224 datasets).

Checks, before anything is written (train.py builds the dataset before it touches its
output directory; `sweep launch` calls `check_arguments` before it makes a job directory):
at least two domains, at least one class, every domain has every class, and every image can
be opened (its header is read). Each refusal is a `DatasetArgumentError` or a
`DatasetNotFoundError` whose one-line message names the domain, class, line or file and says
what to do. Reading the layout is torch-free (`sweep` and `collect_results` use it).
"""
import collections
import csv
import json
import os

from domainbed.datasets.base import DatasetArgumentError, DatasetNotFoundError
from domainbed.datasets.image_folder import (ImageFolderDataset, allow_truncated_images,
                                             env_transforms)
from domainbed.datasets.registry import register_dataset

# torchvision.datasets.folder.IMG_EXTENSIONS (matched case-insensitively, as there).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MANIFEST_COLUMNS = ("path", "domain", "label")
LAYOUT_HINT = "<domain>/<class>/<image>"

# domains: sorted names; classes: sorted names; samples[i]: [(path, class index)] of domain i.
Layout = collections.namedtuple("Layout", "source domains classes samples")


class FolderDataError(DatasetArgumentError):
    """A tree or manifest that cannot be a dataset; the message says what to fix."""


def _fail(message):
    raise FolderDataError(f"Folder: {message}")


def _visible(names):
    return sorted(name for name in names if not name.startswith("."))


def _is_image(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _subfolders(path):
    try:
        return _visible(entry.name for entry in os.scandir(path) if entry.is_dir())
    except OSError as error:
        _fail(f"cannot list {path} ({error.strerror or error}); make it readable")


def _class_images(class_dir):
    """ImageFolder's order: sorted os.walk (following links), sorted file names."""
    images = []
    for root, _, files in sorted(os.walk(class_dir, followlinks=True)):
        if any(part.startswith(".") for part in os.path.relpath(root, class_dir).split(os.sep)
               if part != "."):
            continue
        images += [os.path.join(root, name) for name in _visible(files) if _is_image(name)]
    return images


def _names(items, limit=3):
    items = sorted(items)
    text = ", ".join(repr(item) for item in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _check_domains_and_classes(source, domains, classes_of, where):
    """At least 2 domains, 1 class, every class in every domain. `classes_of[domain]` is
    the set of classes that have images there; `where(domain, cls)` says where they go."""
    if len(domains) < 2:
        found = f"only {_names(domains)}" if domains else "none"
        _fail(f"{source} needs at least 2 domains (one to train on, one to test on), found "
              f"{found}; add a domain ({where('<domain>', '<class>')})")
    classes = sorted(set().union(*classes_of.values()))
    if not classes:
        _fail(f"{source} has no images ({', '.join(IMAGE_EXTENSIONS)}); put them in "
              f"{where('<domain>', '<class>')}")
    for domain in domains:
        missing = set(classes) - classes_of[domain]
        if missing:
            first = sorted(missing)[0]
            _fail(f"domain {domain!r} has no images of class {_names(missing)} (every domain "
                  f"needs every class); add some in {where(domain, first)}, or remove that "
                  "class from the other domains")
    return classes


def scan_tree(root):
    """The Layout of `root/<domain>/<class>/<image>` (no image is opened)."""
    domains = _subfolders(root)

    def where(domain, cls):
        return os.path.join(root, domain, cls, "<image>")

    classes_of, images_of = {}, {}
    for domain in domains:
        class_folders = _subfolders(os.path.join(root, domain))
        if not class_folders:
            _fail(f"domain folder {os.path.join(root, domain)} has no class folders; the "
                  f"layout is {os.path.join(root, LAYOUT_HINT)}")
        images_of[domain] = {cls: _class_images(os.path.join(root, domain, cls))
                             for cls in class_folders}
        classes_of[domain] = {cls for cls, images in images_of[domain].items() if images}
    classes = _check_domains_and_classes(root, domains, classes_of, where)
    index = {cls: i for i, cls in enumerate(classes)}
    samples = [[(path, index[cls]) for cls in classes for path in images_of[domain][cls]]
               for domain in domains]
    return Layout(root, domains, classes, samples)


def _label_order(labels):
    """Sorted labels: numerically when every label is an integer, else as text."""
    def as_int(label):
        try:
            return int(label)
        except ValueError:
            return None

    if all(as_int(label) is not None for label in labels):
        return sorted(labels, key=lambda label: (as_int(label), label))
    return sorted(labels)


def _manifest_rows(path):
    """[(line or item number, {column: text})] of a CSV or JSON manifest."""
    kind = os.path.splitext(path)[1].lower()
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if kind == ".csv":
                reader = csv.DictReader(f)
                columns = [name.strip() for name in (reader.fieldnames or [])]
                missing = [name for name in MANIFEST_COLUMNS if name not in columns]
                if missing:
                    _fail(f"manifest {path} lacks the column(s) {', '.join(missing)}; its first "
                          f"line must name the columns, e.g. {','.join(MANIFEST_COLUMNS)}")
                reader.fieldnames = columns
                return [(reader.line_num, row) for row in reader]
            items = json.load(f)
    except UnicodeDecodeError:
        _fail(f"manifest {path} is not UTF-8 text; save it as UTF-8")
    except csv.Error as error:
        _fail(f"manifest {path} is not valid CSV ({error})")
    except ValueError as error:
        _fail(f"manifest {path} is not valid JSON ({error}); write a list of "
              '{"path": ..., "domain": ..., "label": ...} objects')
    except OSError as error:
        raise DatasetNotFoundError(f"Folder: cannot read manifest {path} "
                                   f"({error.strerror or error}); check the path") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        _fail(f"manifest {path} must be a JSON list of "
              '{"path": ..., "domain": ..., "label": ...} objects')
    return [(number, item) for number, item in enumerate(items, 1)]


def read_manifest(path):
    """The Layout of a .csv or .json manifest (no image is opened)."""
    base = os.path.dirname(os.path.abspath(path))
    what = "line" if path.lower().endswith(".csv") else "item"
    entries = []
    for number, row in _manifest_rows(path):
        values = []
        for column in MANIFEST_COLUMNS:
            value = row.get(column)
            if (isinstance(value, bool) or not isinstance(value, (str, int))
                    or not str(value).strip()):
                _fail(f"manifest {path} {what} {number}: {column!r} is missing or empty; every "
                      f"entry needs a {', '.join(MANIFEST_COLUMNS)}")
            values.append(str(value).strip())
        image, domain, label = values
        image = os.path.normpath(os.path.join(base, image))
        if not os.path.isfile(image):
            _fail(f"manifest {path} {what} {number}: image {image} does not exist; fix the path "
                  "(relative paths start at the manifest's folder) or drop the entry")
        entries.append((image, domain, label))
    domains = sorted({domain for _, domain, _ in entries})
    classes_of = {domain: {label for _, d, label in entries if d == domain} for domain in domains}

    def where(domain, cls):
        return f"entries with domain {domain} and label {cls} in {path}"

    _check_domains_and_classes(path, domains, classes_of, where)
    classes = _label_order({label for _, _, label in entries})
    index = {cls: i for i, cls in enumerate(classes)}
    samples = [sorted((image, index[label]) for image, d, label in entries if d == domain)
               for domain in domains]
    return Layout(path, domains, classes, samples)


def is_manifest(data_dir):
    return os.path.splitext(data_dir)[1].lower() in (".csv", ".json")


def load_layout(data_dir):
    """The Layout of --data_dir (a tree or a manifest); a one-line error otherwise."""
    if data_dir is None:
        raise DatasetNotFoundError(
            f"Folder needs --data_dir: a folder {LAYOUT_HINT} or a .csv/.json manifest "
            "(see the README, 'Your own dataset')")
    if os.path.isdir(data_dir):
        return scan_tree(os.path.normpath(data_dir))
    if os.path.isfile(data_dir):
        if not is_manifest(data_dir):
            _fail(f"--data_dir {data_dir} is a file but not a .csv or .json manifest; give a "
                  f"folder {LAYOUT_HINT} or a manifest")
        return read_manifest(data_dir)
    raise DatasetNotFoundError(f"Folder: --data_dir {data_dir} does not exist; give a folder "
                               f"{LAYOUT_HINT} or a .csv/.json manifest")


_READABLE = set()   # data sources whose images all opened, in this process


def check_images(layout):
    """Open every image's header (Pillow); the first that fails is a one-line error."""
    key = os.path.abspath(layout.source)
    if key in _READABLE:
        return
    from PIL import Image

    fix = ("fix or remove it" if os.path.isdir(layout.source)
           else "fix it or drop its entry from the manifest")
    for domain_samples in layout.samples:
        for path, _ in domain_samples:
            try:
                with Image.open(path):   # reads the header only
                    pass
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                reason = getattr(error, "strerror", None) or " ".join(str(error).split())
                _fail(f"cannot read image {path} ({reason}); {fix}")
    _READABLE.add(key)


class ImageList:
    """One environment: `samples` [(path, class index)] read like torchvision's
    ImageFolder (the same loader; `classes`, `class_to_idx`, `samples`, `targets`)."""

    def __init__(self, samples, classes, transform):
        from torchvision.datasets.folder import default_loader

        self.samples = list(samples)
        self.targets = [target for _, target in self.samples]
        self.classes = list(classes)
        self.class_to_idx = {cls: i for i, cls in enumerate(self.classes)}
        self.transform = transform
        self.loader = default_loader

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        sample = self.loader(path)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, target


@register_dataset
class Folder(ImageFolderDataset):
    """Your own images: `--data_dir` is a tree or a manifest (see the module docstring)."""

    ENVIRONMENTS = None              # read from --data_dir
    ENVIRONMENTS_FROM_DATA = True

    @classmethod
    def environment_names(cls, hparams=None, data_dir=None):
        """The sorted domain names under `data_dir` (None without a data_dir)."""
        if data_dir is None:
            return None
        return load_layout(data_dir).domains

    @classmethod
    def check_arguments(cls, test_envs, hparams, data_dir=None):
        super().check_arguments(test_envs, hparams)
        if data_dir is not None:
            check_images(load_layout(data_dir))

    def __init__(self, root, test_envs, hparams):
        layout = load_layout(root)
        check_images(layout)
        allow_truncated_images()
        transforms = env_transforms(len(layout.domains), test_envs, hparams["data_augmentation"])
        self.layout = layout
        self.environment_folders = layout.domains
        self.datasets = [ImageList(samples, layout.classes, transform)
                         for samples, transform in zip(layout.samples, transforms)]
        self.input_shape = self.INPUT_SHAPE
        self.num_classes = len(layout.classes)
