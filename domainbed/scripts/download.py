"""Download DomainBed's datasets into the layout the dataset classes read, or check it.

    python -m domainbed.scripts.download --data_dir DIR [--datasets NAME ...] [--verify]

Layout under DIR (what to build by hand when a host is down; then run --verify):
    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte   ColoredMNIST, RotatedMNIST
    VLCS/{Caltech101,LabelMe,SUN09,VOC2007}/<class>/<image>
    PACS/{art_painting,cartoon,photo,sketch}/<class>/<image>
    office_home/{Art,Clipart,Product,Real World}/<class>/<image>
    terra_incognita/location_{100,38,43,46}/<category>/<image>
    domain_net/{clipart,infograph,painting,quickdraw,real,sketch}/<class>/<image>
    sviro/{aclass,escape,hilux,i3,lexus,tesla,tiguan,tucson,x5,zoe}/<class>/<image>
    camelyon17_v1.0/, fmow_v1.1/                              WILDS (pip install wilds)

Archives go to DIR/downloads/ (kept with --keep_archives); an interrupted download resumes
from its .part file. Sizes and md5s of archives without a published checksum are recorded
in DIR/.checksums.json at the first download and checked afterwards. A dataset is unpacked
in DIR/.staging-<name>/ and moved into place only when complete.
"""
# The command line only (this docstring is its --help): the recipes, downloads and checks
# are `domainbed.datasets.download.install`.
import argparse
import os
import sys
import tempfile

from domainbed.datasets.download import fetch
from domainbed.datasets.base import DatasetNotFoundError
from domainbed.datasets.download.install import (RECIPES, Options, UsageError, download_dataset,
                                        resolve_recipes, verify_dataset)
from domainbed.lib import validation
from domainbed.lib.cli import OneLineErrorParser


# ---------------------------------------------------------------------------------------
# Command line

def parse_sources(values):
    sources = {}
    for value in values:
        filename, sep, source = value.partition("=")
        if not sep or not filename or not source:
            raise UsageError(f"--source {value!r}: expected ARCHIVE=URL_OR_PATH, e.g. PACS.zip=/tmp/PACS.zip")
        sources.setdefault(filename, []).append(source)
    return sources


def build_parser():
    parser = OneLineErrorParser(
        prog="python -m domainbed.scripts.download", description=__doc__, hint="see --help",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="where the datasets go")
    parser.add_argument("--datasets", nargs="+", metavar="NAME",
                        help=f"default: {' '.join(r.name for r in RECIPES.values() if r.by_default)}")
    parser.add_argument("--verify", action="store_true", help="check the layout, download nothing")
    parser.add_argument("--force", action="store_true", help="replace a dataset that is already there")
    parser.add_argument("--keep_archives", action="store_true", help="keep DIR/downloads/* after unpacking")
    parser.add_argument("--source", action="append", default=[], metavar="ARCHIVE=URL_OR_PATH",
                        help="try this mirror or local file first for one archive (repeatable)")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def run(args):
    named = args.datasets is not None
    requested = args.datasets if named else [r.name for r in RECIPES.values()
                                             if r.by_default or args.verify]
    recipes, skipped = resolve_recipes(requested)
    for name in skipped:
        print(f"{name}: needs no download (generated or shipped with the installed packages)")
    options = Options(force=args.force, keep_archives=args.keep_archives,
                      sources=parse_sources(args.source), timeout=args.timeout,
                      progress=not args.no_progress)
    store = fetch.ChecksumStore(args.data_dir)
    if args.verify:
        results = [verify_dataset(recipe, args.data_dir, store, named) for recipe in recipes]
        return 0 if all(results) else 1
    check_writable(args.data_dir)
    codes = []
    for recipe in recipes:
        try:
            download_dataset(recipe, args.data_dir, options, store)
        except (fetch.DownloadError, ImportError, OSError) as error:
            print(failure_line(recipe, error), file=sys.stderr)
            bad_input = isinstance(error, (ImportError, DatasetNotFoundError))
            codes.append(getattr(error, "exit_code", 2 if bad_input else 1))
    return max(codes, default=0)


def failure_line(recipe, error):
    """One line per dataset: what went wrong and what to do."""
    text = " ".join(str(error).split())
    if isinstance(error, DatasetNotFoundError):   # an arrange step: not the dataset's archive
        return f"{recipe.name}: FAILED: {text}; pass the right archive with --source ARCHIVE=PATH"
    if isinstance(error, OSError) and not isinstance(error, fetch.DownloadError):
        text = f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
        return (f"{recipe.name}: FAILED: {text}; free some space or fix the permissions of "
                "--data_dir, then rerun (downloads resume)")
    if isinstance(error, fetch.DownloadError) and error.exit_code == 1:
        text += ("; rerun to resume, or fetch the archive by hand and pass "
                 "--source ARCHIVE=PATH (see --help for the layout)")
    elif isinstance(error, fetch.BadArchiveError) and "--source" not in text:
        text += "; pass the right archive with --source ARCHIVE=PATH"
    return f"{recipe.name}: FAILED: {text}"


def check_writable(data_dir):
    """--data_dir must be a directory we can write (created if needed): checked by writing."""
    try:
        os.makedirs(data_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=data_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise UsageError(f"--data_dir {data_dir} is not a writable directory "
                         f"({error.strerror or error}); choose one you can write to") from None


MAX_TIMEOUT_S = 86400   # a day: longer is a typo (and overflows the socket's timer)


def check_numbers(args):
    """The numeric flags, through the one validation layer (before anything is written)."""
    validation.check_number("--timeout", args.timeout, 0, MAX_TIMEOUT_S,
                            low_inclusive=False, example=60)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_numbers(args)
        return run(args)
    except (UsageError, validation.ValidationError, fetch.ChecksumStoreError) as error:
        print(f"download: error: {error}", file=sys.stderr)   # (each exits 2)
        return error.exit_code


def cli(argv=None):
    """main() with no traceback: an unexpected error is one line, exit code 1."""
    from domainbed.lib.cli import one_line_errors

    return one_line_errors(main, argv, "download",
                           "interrupted; rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(cli())
