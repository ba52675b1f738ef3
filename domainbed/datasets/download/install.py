"""Installing DomainBed's datasets into the layout the dataset classes read: each
dataset's recipe (archives, mirrors, how the unpacked files are arranged, or WILDS), the
download of one dataset (resumable archives, staging, checksums) and its verification.
The command line is `python -m domainbed.scripts.download` (torch-free)."""
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Callable

from domainbed.datasets import spawrious
from domainbed.datasets.download import fetch, verify
from domainbed.datasets.registry import dataset_names, get_dataset_class
from domainbed.errors import EXIT_BAD_INPUT, BadInput
from domainbed.lib import safe_write
from domainbed.lib.misc import did_you_mean


@dataclass(frozen=True)
class Archive:
    filename: str
    urls: tuple
    md5: str = None           # published checksum, when there is one


@dataclass(frozen=True)
class Recipe:
    name: str
    target: str               # the installed folder, relative to DIR
    check: Callable           # check(data_dir, recorded) -> (problems, summary)
    archives: tuple = ()
    arrange: Callable = None  # arrange(staging) -> the folder to move to DIR/target
    install: Callable = None  # replaces archives + arrange (WILDS)
    aliases: tuple = ()
    by_default: bool = True   # part of a run without --datasets


# ---------------------------------------------------------------------------------------
# Arranging unpacked archives

def find_folder_with(root, names):
    """The first folder below `root` whose sub-folders include all `names`."""
    for dirpath, dirnames, _ in os.walk(root):
        if set(names) <= set(dirnames):
            return dirpath
    raise fetch.BadArchiveError(f"the archive does not contain the folders {sorted(names)}; "
                              "it may be the wrong file (check --source)")


def arrange_image_folder(dataset_name):
    def arrange(staging):
        return find_folder_with(staging, get_dataset_class(dataset_name).EXPECTED_FOLDERS)
    return arrange


def arrange_flat_files(names):
    def arrange(staging):
        missing = [name for name in names if not os.path.isfile(os.path.join(staging, name))]
        if missing:
            raise fetch.BadArchiveError(f"unpacking did not produce {', '.join(missing)}")
        return staging
    return arrange


# TerraIncognita: rebuilt from the Caltech Camera Traps images and annotations (as upstream).
TERRA_LOCATIONS = ("38", "46", "100", "43")
TERRA_CATEGORIES = ("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit",
                    "raccoon", "squirrel")


def rebuild_terra_incognita(annotations, images_root, destination):
    """Copy each image of the four locations into location_<L>/<category>/ for each of its
    annotated categories among the ten kept. Returns (copied, missing source images)."""
    category_names = {c["id"]: c["name"] for c in annotations["categories"]}
    categories_of = {}
    for annotation in annotations["annotations"]:  # an index: upstream's double loop is O(n^2)
        name = category_names[annotation["category_id"]]
        categories_of.setdefault(annotation["image_id"], set()).add(name)
    copied = missing = 0
    for image in annotations["images"]:
        location = str(image["location"])
        if location not in TERRA_LOCATIONS:
            continue
        source = os.path.join(images_root, image["file_name"])
        for category in sorted(categories_of.get(image["id"], set()) & set(TERRA_CATEGORIES)):
            if not os.path.isfile(source):
                missing += 1
                continue
            folder = os.path.join(destination, f"location_{location}", category)
            os.makedirs(folder, exist_ok=True)
            shutil.copyfile(source, os.path.join(folder, os.path.basename(image["file_name"])))
            copied += 1
    return copied, missing


def _load_cct_annotations(staging):
    for dirpath, _, files in os.walk(staging):
        for name in sorted(files):
            if name.endswith(".json"):
                with open(os.path.join(dirpath, name)) as f:
                    content = json.load(f)
                if {"images", "annotations", "categories"} <= set(content):
                    return content
    raise fetch.BadArchiveError("no Caltech Camera Traps annotation JSON in the unpacked archives")


def _find_images_root(staging, file_name):
    for dirpath, _, _ in os.walk(staging):
        if os.path.isfile(os.path.join(dirpath, file_name)):
            return dirpath
    raise fetch.BadArchiveError(f"image {file_name} of the annotations is not in the unpacked archives")


def arrange_terra_incognita(staging):
    annotations = _load_cct_annotations(staging)
    kept = [im for im in annotations["images"] if str(im["location"]) in TERRA_LOCATIONS]
    if not kept:
        raise fetch.BadArchiveError(f"the annotations have no image in locations {TERRA_LOCATIONS}")
    images_root = _find_images_root(staging, kept[0]["file_name"])
    destination = os.path.join(staging, "terra_incognita.rebuilt")
    copied, missing = rebuild_terra_incognita(annotations, images_root, destination)
    print(f"TerraIncognita: {copied} images placed, {missing} annotated images absent from the archive")
    return destination


def install_with_wilds(recipe, data_dir, options, store):
    from domainbed.datasets.wilds import import_wilds_class

    dataset_class = get_dataset_class(recipe.name)
    wilds_class = import_wilds_class(dataset_class.WILDS_MODULE, dataset_class.WILDS_CLASS)
    wilds_class(root_dir=data_dir, download=True)


# ---------------------------------------------------------------------------------------
# The datasets (URLs and Google Drive ids are upstream DomainBed's, MNIST's are torchvision's)

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
DOMAINNET_HOSTS = ("https://csr.bu.edu/ftp/visda/2019/multi-source/",
                   "http://csr.bu.edu/ftp/visda/2019/multi-source/")
DOMAINNET_PATHS = ("groundtruth/clipart.zip", "infograph.zip", "groundtruth/painting.zip",
                   "quickdraw.zip", "real.zip", "sketch.zip")
LILA_CCT = "https://storage.googleapis.com/public-datasets-lila/caltechcameratraps/"


def _image_folder_recipe(name, archives, arrange=None):
    return Recipe(
        name=name, target=get_dataset_class(name).SUBFOLDER, archives=archives,
        check=lambda data_dir, recorded: verify.check_image_folder(
            data_dir, get_dataset_class(name), recorded),
        arrange=arrange or arrange_image_folder(name))


def _wilds_recipe(name, folder):
    return Recipe(name=name, target=folder, install=install_with_wilds, by_default=False,
                  check=lambda data_dir, recorded: verify.check_wilds(data_dir, folder))


def _one_archive(filename, *urls):
    return (Archive(filename, urls),)


def build_recipes():
    drive = fetch.google_drive_url
    mnist_archives = tuple(Archive(name, tuple(mirror + name for mirror in MNIST_MIRRORS), md5)
                           for name, md5 in MNIST_MD5.items())
    domainnet_archives = tuple(Archive(os.path.basename(path), tuple(host + path for host in DOMAINNET_HOSTS))
                               for path in DOMAINNET_PATHS)
    terra_archives = (
        _one_archive("eccv_18_all_images_sm.tar.gz", LILA_CCT + "eccv_18_all_images_sm.tar.gz")
        + _one_archive("caltech_camera_traps.json.zip", LILA_CCT + "labels/caltech_camera_traps.json.zip"))
    recipes = [
        Recipe(name="MNIST", target=os.path.join("MNIST", "raw"), check=verify.check_mnist,
               archives=mnist_archives, arrange=arrange_flat_files(verify.MNIST_RAW_FILES),
               aliases=("ColoredMNIST", "RotatedMNIST")),
        _image_folder_recipe("VLCS", _one_archive("VLCS.tar.gz", drive("1skwblH1_okBwxWxmRsp9_qi15hyPpxg8"))),
        _image_folder_recipe("PACS", _one_archive("PACS.zip", drive("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd"))),
        _image_folder_recipe("OfficeHome", _one_archive(
            "office_home.zip", drive("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC"))),
        _image_folder_recipe("TerraIncognita", terra_archives, arrange=arrange_terra_incognita),
        _image_folder_recipe("DomainNet", domainnet_archives),
        _image_folder_recipe("SVIRO", _one_archive(
            "sviro_grayscale_rectangle_classification.zip", "https://sviro.kl.dfki.de/?wpdmdl=1731")),
        _wilds_recipe("WILDSCamelyon", "camelyon17_v1.0"),
        _wilds_recipe("WILDSFMoW", "fmow_v1.1"),
        # One archive for the six Spawrious datasets; not part of a default run (upstream
        # switches its download off too). Its md5 is recorded at the first download.
        Recipe(name="Spawrious", target=spawrious.SUBFOLDER,
               archives=(Archive(spawrious.ARCHIVE, (spawrious.URL,), spawrious.ARCHIVE_MD5),),
               check=spawrious.check_layout, arrange=spawrious.arrange_download,
               aliases=spawrious.DATASET_NAMES, by_default=False),
    ]
    return {recipe.name: recipe for recipe in recipes}


RECIPES = build_recipes()
# Datasets generated in memory or built from pip-shipped data.
NO_DOWNLOAD_MODULES = ("domainbed.datasets.debug", "domainbed.datasets.offline")


# ---------------------------------------------------------------------------------------
# Downloading one dataset

@dataclass
class Options:
    force: bool = False
    keep_archives: bool = False
    sources: dict = None      # archive filename -> [extra sources tried first]
    timeout: float = 60.0
    progress: bool = True
    retry_wait: float = 2.0


class DatasetProblem(fetch.DownloadError):
    """An installed dataset with problems (exit 2: the command needs --force or a fix)."""

    exit_code = EXIT_BAD_INPUT


def fetch_archives(recipe, data_dir, options, store, pending):
    """The recipe's archives in DIR/downloads. A file named by --source replaces a copy
    already there (unless a published md5 says the copy is right). New checksums go to
    `pending`: recorded only once the dataset installed."""
    downloads = os.path.join(data_dir, "downloads")
    paths = []
    for archive in recipe.archives:
        explicit = list((options.sources or {}).get(archive.filename, []))
        dest = os.path.join(downloads, archive.filename)
        if explicit and archive.md5 is None and os.path.isfile(dest):
            os.remove(dest)   # the user names the file to use; the old copy may be the bad one
        paths.append(fetch.download_file(
            explicit + list(archive.urls), dest, md5=archive.md5, store=store,
            timeout=options.timeout, progress=options.progress, retry_wait=options.retry_wait,
            pending=pending, trust_recorded=not options.force))
    return paths


def _replace_folder(new, target):
    """Move `new` to `target`; an existing `target` is removed only after the move worked."""
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    old = None
    if os.path.exists(target):
        old = f"{target}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(new, target)
    if old:
        shutil.rmtree(old)


# In every staging folder download makes: the write rule's owner marker, whose content
# (not its name) says download made the folder.
STAGING_MARKER = safe_write.OWNER_MARKER


def staging_folder(recipe, data_dir):
    return os.path.join(data_dir, f".staging-{recipe.name}")


def check_staging(recipe, data_dir):
    """A staging folder left by an interrupted download is ours (it holds the marker) and is
    removed; anything else at that path is somebody else's: refused, never removed."""
    staging = staging_folder(recipe, data_dir)
    if not os.path.lexists(staging):
        return
    if (os.path.isdir(staging) and not os.path.islink(staging)
            and (safe_write.is_claimed(staging, "download") or not os.listdir(staging))):
        return
    raise DatasetProblem(f"{staging} was not written by download (no marker of ours in it); "
                         "move it away, then rerun")


def install_from_archives(recipe, data_dir, options, store):
    pending = []
    paths = fetch_archives(recipe, data_dir, options, store, pending)
    published = {archive.filename for archive in recipe.archives if archive.md5}
    staging = staging_folder(recipe, data_dir)
    shutil.rmtree(staging, ignore_errors=True)   # ours (check_staging), or nothing
    try:
        safe_write.claim_directory(staging, "download")
        for path in paths:
            print(f"{recipe.name}: unpacking {os.path.basename(path)}", file=sys.stderr)
            try:
                fetch.extract(path, staging)
            except fetch.BadArchiveError:
                if os.path.basename(path) not in published:
                    os.remove(path)   # damaged or unsafe: the next run fetches it again
                raise
        arranged = recipe.arrange(staging)
        if os.path.abspath(arranged) == os.path.abspath(staging):   # moved as it is
            os.remove(os.path.join(staging, STAGING_MARKER))
        _replace_folder(arranged, os.path.join(data_dir, recipe.target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for entry in pending:   # the dataset installed: these archives were the right ones
        store.record_archive(*entry)
    if not options.keep_archives:
        for path in paths:
            os.remove(path)


def download_dataset(recipe, data_dir, options, store):
    """Install one dataset unless it is already there and passes its check."""
    target = os.path.join(data_dir, recipe.target)
    if os.path.exists(target) and not options.force:
        problems, _ = recipe.check(data_dir, store.dataset(recipe.name))
        if not problems:
            print(f"{recipe.name}: already in {target}: OK")
            return
        raise DatasetProblem(f"{target} exists but has problems ({problems[0]}); "
                             "rerun with --force to replace it")
    if recipe.install is None:
        check_staging(recipe, data_dir)
    (recipe.install or install_from_archives)(recipe, data_dir, options, store)
    problems, summary = recipe.check(data_dir, None)
    store.record_dataset(recipe.name, summary)
    if problems:
        raise DatasetProblem(f"installed in {target}, but: " + "; ".join(problems[:3]))
    print(f"{recipe.name}: installed in {target}: OK {json.dumps(summary)}")


# ---------------------------------------------------------------------------------------
# Verification

def check_archives(recipe, data_dir, store):
    """md5 of the archives still in DIR/downloads against the published or recorded one."""
    problems = []
    for archive in recipe.archives:
        path = os.path.join(data_dir, "downloads", archive.filename)
        expected = archive.md5 or (store.archive(archive.filename) or {}).get("md5")
        if os.path.isfile(path) and expected and fetch.md5_of(path) != expected:
            problems.append(f"{path} does not match its md5 {expected}")
    return problems


def verify_dataset(recipe, data_dir, store, named):
    """Print one OK/problem line; returns False on problems. A dataset that was not
    downloaded is a problem only when it was named on the command line."""
    target = os.path.join(data_dir, recipe.target)
    if not os.path.exists(target) and not named:
        print(f"{recipe.name}: not downloaded")
        return True
    try:
        problems, summary = recipe.check(data_dir, store.dataset(recipe.name))
        problems += check_archives(recipe, data_dir, store)
    except OSError as error:   # an unreadable folder or file: a problem, not a crash
        problems, summary = [f"cannot read {error.filename or target} "
                             f"({error.strerror or error})"], {}
    if problems:
        print(f"{recipe.name}: PROBLEM: " + "; ".join(problems[:5])
              + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
        return False
    print(f"{recipe.name}: OK {json.dumps(summary)}" if summary else f"{recipe.name}: OK")
    return True


# ---------------------------------------------------------------------------------------
# The names on the command line

class UsageError(BadInput, ValueError):
    """A dataset name or option the download command refuses; the message says what to
    give instead (exit 2)."""


def resolve_recipes(requested):
    """The recipes for the requested names (aliases allowed); names that need no download
    are reported; an unknown name raises UsageError with a suggestion."""
    by_name = {name: recipe for recipe in RECIPES.values() for name in (recipe.name, *recipe.aliases)}
    chosen, skipped = [], []
    for name in requested:
        if name in by_name:
            if by_name[name] not in chosen:
                chosen.append(by_name[name])
        elif name in dataset_names() and get_dataset_class(name).__module__ in NO_DOWNLOAD_MODULES:
            skipped.append(name)
        elif name in dataset_names() and get_dataset_class(name).ENVIRONMENTS_FROM_DATA:
            raise UsageError(f"{name} reads your own images (--data_dir of train and sweep): "
                             "there is nothing to download")
        else:
            known = list(by_name) + dataset_names()
            raise UsageError(f"unknown dataset {name!r}.{did_you_mean(name, known)} "
                             f"Downloadable: {', '.join(RECIPES)}.")
    return chosen, skipped
