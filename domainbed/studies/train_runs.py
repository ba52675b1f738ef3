"""Whole train.py runs on an image dataset, timed: where each run's wall time goes, images
per second, and the same job under upstream's train.py when given its checkout.

    python -m domainbed.scripts.benchmark --run_cost --dataset PACS            # synthetic tree
    python -m domainbed.scripts.benchmark --run_cost --dataset PACS --data_dir D \\
        --upstream ~/DomainBed --variants default,fast,fast-bf16

Each variant is one `python -m domainbed.scripts.train` process (`--steps`, `--checkpoint_freq`,
ResNet-50 without pretrained weights) in a directory of its own. Our runs print where their
wall time went (the last line of out.txt, `training/timing.py`); every run's records give
the per-step time (`step_time`: waiting for data plus the update, as upstream measures it).
Images per second count the training images of all steps (steps x batch x training envs)
over the process's whole wall time ("run") and over the loop's data and steps ("loop").

Without --data_dir a PACS-shaped tree is generated: 4 domains x 7 classes of smooth random
227x227 JPEGs (--images_per_class each). The fast pipeline's decoded cache is built once
before the runs (its time is its own row) in a cache directory of the benchmark's own.

Upstream's train.py is run unmodified, in its checkout, with two patches made from outside:
torchvision's ResNets are built without downloading weights (`pretrained=True` there), and
where the `wilds` package is missing, empty stand-ins for the two WILDS modules that
upstream's datasets.py imports at its top (PACS uses neither). Its `resnet50_augmix` hparam
is off, as ours, so both train the same randomly initialised torchvision ResNet-50.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from domainbed.errors import BadInput
from domainbed.lib import jobdir, safe_write
from domainbed.lib.misc import format_table
from domainbed.training.timing import parse_summary

# variant name -> our train.py's speed flags (None: upstream's train.py)
VARIANTS = {
    "upstream": None,
    "default": [],
    "fast": ["--pipeline", "fast"],
    "fast-bf16": ["--pipeline", "fast", "--precision", "bf16", "--memory_format",
                  "channels_last"],
    "default-bf16": ["--precision", "bf16", "--memory_format", "channels_last"],
}
PACS_DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]
PACS_CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
OUR_HPARAMS = {"pretrained": False, "resnet50_augmix": False}
UPSTREAM_HPARAMS = {"resnet50_augmix": False}

# Run inside upstream's checkout: its train.py as __main__, with torchvision's ResNet
# constructors told not to download weights (no network on a benchmark machine).
UPSTREAM_LAUNCHER = """
import runpy, sys, types, torchvision.models as models
try:
    import wilds
except ImportError:   # upstream's datasets.py imports WILDS at its top; PACS needs none of it
    for name, attribute in (("wilds", None), ("wilds.datasets", None),
                            ("wilds.datasets.camelyon17_dataset", "Camelyon17Dataset"),
                            ("wilds.datasets.fmow_dataset", "FMoWDataset")):
        sys.modules[name] = types.ModuleType(name)
        if attribute:
            setattr(sys.modules[name], attribute, None)
def without_weights(build):
    return lambda *args, **kwargs: build(weights=None)
for name in ("resnet18", "resnet50"):
    setattr(models, name, without_weights(getattr(models, name)))
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_module("domainbed.scripts.train", run_name="__main__")
"""


class RunsError(BadInput, ValueError):
    """`benchmark --run_cost` cannot run as asked; the message says what to do (exit 2)."""


def make_synthetic_tree(root, images_per_class, size=227, seed=0):
    """root/PACS/<domain>/<class>/<i>.jpg: smooth random images (an 8x8 colour field
    upsampled), so JPEG decoding costs what a photo of that size costs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for domain in PACS_DOMAINS:
        for cls in PACS_CLASSES:
            folder = os.path.join(root, "PACS", domain, cls)
            os.makedirs(folder, exist_ok=True)
            for i in range(images_per_class):
                field = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                image = Image.fromarray(field).resize((size, size), Image.BICUBIC)
                image.save(os.path.join(folder, f"{i}.jpg"), quality=90)
    return root


def run_hparams(args, upstream):
    """The runs' --hparams: no weight downloads, then the benchmark's --batch_size (per
    domain) and --hparams (e.g. '{"resnet18": true}' for a quick CPU check)."""
    hparams = dict(UPSTREAM_HPARAMS if upstream else OUR_HPARAMS)
    if args.batch_size:
        hparams["batch_size"] = args.batch_size
    hparams.update(json.loads(args.hparams) if args.hparams else {})
    return hparams


def train_command(variant, args, data_dir, output_dir, hparams):
    flags = ["--data_dir", data_dir, "--dataset", args.dataset, "--algorithm", args.algorithm,
             "--test_envs", "0", "--steps", str(args.run_steps),
             "--checkpoint_freq", str(args.run_checkpoint_freq), "--output_dir", output_dir,
             "--hparams", json.dumps(hparams)]
    if VARIANTS[variant] is None:
        return [sys.executable, "-c", UPSTREAM_LAUNCHER] + flags
    return [sys.executable, "-m", "domainbed.scripts.train"] + flags + VARIANTS[variant]


def read_run(output_dir):
    """(records, wall-time summary or None) of a finished run's directory."""
    lines = jobdir.read_records_file(os.path.join(output_dir, jobdir.RESULTS_FILE))
    records = [record for _, _, record in lines if record is not None]
    summary = None
    out_txt = os.path.join(output_dir, "out.txt")
    if os.path.exists(out_txt):
        with open(out_txt, errors="replace") as f:
            for line in f:
                summary = parse_summary(line.strip()) or summary
    return records, summary


def timed_process(command, args, env, cwd=None):
    """(wall seconds, None) of a process that succeeded, or (None, why it did not)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=args.run_timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {args.run_timeout} s (--run_timeout)"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no error output)"])[-1]
        return None, f"exit {proc.returncode}: {tail[:300]}"
    return time.perf_counter() - start, None


def run_variant(variant, args, data_dir, work_dir, env):
    """One train.py process; its measurements, or {"error": ...}."""
    hparams = run_hparams(args, upstream=VARIANTS[variant] is None)
    output_dir = os.path.join(work_dir, variant)
    cwd = args.upstream if VARIANTS[variant] is None else None
    run_env = dict(env)
    if cwd:   # upstream's package first on the path, not ours
        run_env["PYTHONPATH"] = os.path.abspath(cwd)
    wall, error = timed_process(train_command(variant, args, data_dir, output_dir, hparams),
                                args, run_env, cwd)
    if error:
        return {"variant": variant, "error": error}
    records, summary = read_run(output_dir)
    n_envs = len(records[-1]["args"]["test_envs"])
    n_train_envs = sum(1 for key in records[-1] if key.endswith("_in_acc")) - n_envs
    batch = records[-1]["hparams"]["batch_size"]
    images = args.run_steps * batch * n_train_envs
    step_times = [r["step_time"] for r in records[1:]] or [records[0]["step_time"]]
    result = {"variant": variant, "wall_s": wall, "images": images,
              "images_per_s_run": images / wall,
              "step_ms_records": 1e3 * statistics.median(step_times)}
    if summary is not None:
        loop = summary["data"] + summary["steps"]
        result.update({"phases_s": summary, "images_per_s_loop": images / loop,
                       "update_ms": 1e3 * summary["steps"] / args.run_steps})
    else:   # upstream: the records' step_time is its loop's per-step time
        result["images_per_s_loop"] = 1e3 * batch * n_train_envs / result["step_ms_records"]
    return result


def build_cache(args, data_dir, work_dir, env):
    """Seconds of a one-step `--pipeline fast` run, which decodes the dataset into the
    cache the later fast runs read (a user's first fast run on a dataset pays it once)."""
    quick = argparse.Namespace(**{**vars(args), "run_steps": 1, "run_checkpoint_freq": 1})
    hparams = run_hparams(args, upstream=False)
    command = train_command("fast", quick, data_dir, os.path.join(work_dir, "cache-run"),
                            hparams)
    seconds, error = timed_process(command, args, env)
    if error:
        raise RunsError(f"building the fast pipeline's cache failed: {error}")
    return seconds


def claim_work_dir(work_dir):
    """--work_dir is benchmark's whole tree (data/, runs/, cache/): new, empty, or marked
    by an earlier benchmark (the write rule's marker, by content); a directory with
    anything else in it (a user's data/PACS, say) is never written into."""
    if os.path.lexists(work_dir) and not os.path.isdir(work_dir):
        raise RunsError(f"--work_dir {work_dir} is not a directory; choose a new directory")
    if os.path.isdir(work_dir) and os.listdir(work_dir) and not safe_write.is_claimed(
            work_dir, "benchmark"):
        raise RunsError(f"--work_dir {work_dir} is not empty and was not made by benchmark; "
                        "choose a new or empty directory (it writes data/, runs/ and cache/ "
                        "there)")
    safe_write.claim_directory(work_dir, "benchmark")


def train_runs(args, algorithm="ERM"):
    """The report of the runs of `args.variants` (and upstream's with --upstream)."""
    args = argparse.Namespace(**vars(args), algorithm=algorithm)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise RunsError(f"--variants: unknown {', '.join(unknown)}; choose from "
                        f"{', '.join(VARIANTS)}")
    if args.upstream:
        if not os.path.isfile(os.path.join(args.upstream, "domainbed", "scripts", "train.py")):
            raise RunsError(f"--upstream {args.upstream} is not a DomainBed checkout (no "
                            "domainbed/scripts/train.py in it)")
        variants = ["upstream"] + [v for v in variants if v != "upstream"]
    elif "upstream" in variants:
        raise RunsError("the upstream variant needs --upstream PATH (a DomainBed checkout)")
    if args.work_dir:
        claim_work_dir(args.work_dir)
    with tempfile.TemporaryDirectory(prefix="domainbed-runs-") as scratch:
        work_dir = args.work_dir or scratch
        data_dir = args.data_dir or make_synthetic_tree(os.path.join(work_dir, "data"),
                                                        args.images_per_class)
        env = dict(os.environ, DOMAINBED_CACHE=os.path.join(work_dir, "cache"))
        report = {"dataset": args.dataset, "algorithm": args.algorithm, "steps": args.run_steps,
                  "checkpoint_freq": args.run_checkpoint_freq, "synthetic": not args.data_dir,
                  "runs": []}
        if any("fast" in v for v in variants):
            report["cache_build_s"] = build_cache(args, data_dir, work_dir, env)
        for variant in variants:
            print(f"benchmark: running {variant} ...", file=sys.stderr, flush=True)
            report["runs"].append(run_variant(variant, args, data_dir,
                                              os.path.join(work_dir, "runs"), env))
    add_ratios(report)
    return report


def add_ratios(report):
    """Images per second relative to upstream's run (else to our default pipeline's)."""
    done = [r for r in report["runs"] if "error" not in r]
    base = next((r for r in done if r["variant"] == "upstream"),
                next((r for r in done if r["variant"] == "default"), None))
    report["baseline"] = base["variant"] if base else None
    for run in done:
        if base:
            run["ratio_run"] = run["images_per_s_run"] / base["images_per_s_run"]
            run["ratio_loop"] = run["images_per_s_loop"] / base["images_per_s_loop"]


def print_train_runs(report):
    print(f"{report['algorithm']} on {report['dataset']}"
          f"{' (synthetic PACS-shaped tree)' if report['synthetic'] else ''}: "
          f"{report['steps']} steps, a record every {report['checkpoint_freq']}")
    if "cache_build_s" in report:
        print(f"fast pipeline's decoded cache built once (a 1-step run): "
              f"{report['cache_build_s']:.1f} s")
    header = ["variant", "wall s", "start-up", "data", "steps", "eval", "ckpt", "model",
              "step ms", "img/s run", "img/s loop", f"x {report['baseline']} run", "loop"]
    rows = []
    for run in report["runs"]:
        if "error" in run:
            rows.append([run["variant"], run["error"]] + [""] * (len(header) - 2))
            continue
        phases = run.get("phases_s", {})
        rows.append([run["variant"], f"{run['wall_s']:.1f}"]
                    + [f"{phases[p]:.1f}" if p in phases else "-" for p in
                       ("start-up", "data", "steps", "evaluation", "checkpoints", "model files")]
                    + [f"{run['step_ms_records']:.1f}", f"{run['images_per_s_run']:.0f}",
                       f"{run['images_per_s_loop']:.0f}",
                       f"{run['ratio_run']:.2f}" if "ratio_run" in run else "-",
                       f"{run['ratio_loop']:.2f}" if "ratio_loop" in run else "-"])
    print(format_table(header, rows))
