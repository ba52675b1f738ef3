"""Time training steps of algorithms side by side, and FGMix's closed-form compatibilities.

    python -m domainbed.scripts.benchmark                        # MNIST CNN, synthetic data
    python -m domainbed.scripts.benchmark --arch resnet50 --device cuda
    python -m domainbed.scripts.benchmark --compat               # closed form vs autograd
    python -m domainbed.scripts.benchmark --device cpu --clock cpu  # on a shared machine
    python -m domainbed.scripts.benchmark --run_cost --dataset RotatedMNIST5k  # one run's costs
    python -m domainbed.scripts.benchmark --arch vector --num_domains 10 --num_classes 2
                                                                 # the unit tests' linear model

Step times: every algorithm is built in the same process on the same synthetic
minibatches, warmed up, then timed in interleaved rounds (the order rotates each round),
so that machine noise hits all of them alike. Each algorithm's ratio to ERM is taken per
round and summarised by its median and min-max. Compatibilities: the N×N cosine matrix of
per-instance head gradients, in closed form (as FGMix computes it) against per-instance
autograd (`torch.func.vmap(grad)`), at DomainBed's batch shapes.
"""
import argparse
import json
import os
import statistics
import sys
import time

from domainbed.errors import BadInput, DomainBedError
from domainbed.lib import validation
from domainbed.lib.cli import OneLineErrorParser
from domainbed.lib.misc import did_you_mean, format_table

DEFAULT_ALGORITHMS = "ERM,Mixup,InterpMix,ExtrapMix,GMix,FGMix"
ARCH_IMAGE_SIZE = {"mnist_cnn": 28, "resnet18": 224, "resnet50": 224}
# "vector": inputs of --input_dim numbers and the vector featurizer the dataset declares
# (IUTExample*: a linear model), e.g. the invariance unit tests' steps.
ARCHS = sorted(ARCH_IMAGE_SIZE) + ["vector"]
# (label, N = domains x batch, F = features, C = classes): DomainBed's default batches.
COMPAT_SHAPES = [
    ("MNIST CNN, RotatedMNIST", 3 * 64, 128, 10),
    ("ResNet-50, PACS/VLCS", 3 * 32, 2048, 7),
    ("ResNet-50, OfficeHome", 3 * 32, 2048, 65),
    ("ResNet-50, DomainNet", 5 * 32, 2048, 345),
]


class BenchmarkError(BadInput, ValueError):
    """An option the benchmark refuses; the message says what to do (exit 2)."""


def parse_args(argv):
    parser = OneLineErrorParser(prog="benchmark", description=__doc__.split("\n")[0],
                                hint="see --help")
    parser.add_argument("--algorithms", default=DEFAULT_ALGORITHMS,
                        help="comma-separated; ERM is added when missing (ratios are to ERM)")
    parser.add_argument("--arch", choices=ARCHS, default="mnist_cnn")
    parser.add_argument("--input_dim", type=int, default=10,
                        help="input size for --arch vector (default %(default)s)")
    parser.add_argument("--channels", type=int, default=None,
                        help="input channels (default 1 for mnist_cnn, 3 for ResNets)")
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--num_domains", type=int, default=3, help="training domains")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="per domain (default: the dataset's default hparam, 64 / 32)")
    parser.add_argument("--dataset", default=None,
                        help="whose default hparams to use (default Debug28 / Debug224)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per algorithm")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: get_device())")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time, which other "
                             "processes on a shared machine barely disturb (CPU device only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compat", action="store_true",
                        help="also time closed-form compatibilities against autograd")
    parser.add_argument("--compat_only", action="store_true", help="skip the step timings")
    parser.add_argument("--compat_shapes", default="all",
                        help="'all' or comma-separated indices into the shape list (0 = MNIST)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--count_ops", action="store_true",
                        help="also count the tensor operations of one step per algorithm "
                             "(studies/op_count.py): what a launch-bound GPU step costs, "
                             "measured on any device")
    parser.add_argument("--run_cost", action="store_true",
                        help="where one train.py run's time goes on --dataset (start-up, data, "
                             "steps, evaluation, checkpoints), in a new process and in a warm "
                             "pool worker")
    parser.add_argument("--hparams", default=None,
                        help="JSON hparams overrides (step timings and --run_cost), e.g. "
                             "'{\"fgmix_space\": \"features\"}'")
    parser.add_argument("--fgmix_measure_every", type=int, default=None, metavar="N",
                        help="step timings: FGMix's costly diagnostics every N-th step "
                             "(default: the family's MEASURE_EVERY, 10; 1 = every step)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="step timings: bf16 autocast around each update, as train.py's "
                             "--precision")
    parser.add_argument("--memory_format", choices=["contiguous", "channels_last"],
                        default="contiguous", help="step timings: as train.py's --memory_format")
    runs = parser.add_argument_group(
        "--run_cost on an image dataset (e.g. PACS): whole train.py runs (studies/train_runs.py)")
    runs.add_argument("--data_dir", default=None,
                      help="the dataset's root (default: a generated PACS-shaped tree)")
    runs.add_argument("--upstream", default=None, metavar="PATH",
                      help="an upstream DomainBed checkout: also time its train.py")
    runs.add_argument("--variants", default="default,fast,fast-bf16",
                      help="comma-separated: default, fast, fast-bf16, default-bf16")
    runs.add_argument("--run_steps", type=int, default=301)
    runs.add_argument("--run_checkpoint_freq", type=int, default=100)
    runs.add_argument("--images_per_class", type=int, default=60,
                      help="generated tree: images per domain and class (60: 1,680 images)")
    runs.add_argument("--work_dir", default=None,
                      help="keep the runs (and the generated tree) here (default: removed)")
    runs.add_argument("--run_timeout", type=int, default=3600, help="seconds per run")
    parser.add_argument("--seed_batching", type=int, default=None, metavar="S",
                        help="what training S data seeds as one batched model would save: "
                             "ERM on an --input_dim -> --num_classes linear model, --steps "
                             "steps, as S runs, vmapped over seeds, and stacked by hand")
    args = parser.parse_args(argv)
    check_numbers(args)
    if args.clock == "cpu" and args.device and not args.device.startswith("cpu"):
        raise BenchmarkError("--clock cpu measures host CPU time: use it with --device cpu.")
    check_device(args.device)
    check_dataset(args.dataset)
    check_hparams(args)
    return args


# Sizes beyond these are typos, not benchmarks (and overflow or exhaust memory first).
_MAX_SIZE = 2**20
_NUMBERS = {   # flag: (lowest, highest); None values are "not given"
    "steps": (1, validation.MAX_STEPS), "warmup": (0, validation.MAX_STEPS),
    "repeats": (1, 10000), "num_classes": (1, _MAX_SIZE),
    "num_domains": (2, 1024),   # mixing and pairing algorithms need two training domains
    "input_dim": (1, _MAX_SIZE), "channels": (1, 4096), "batch_size": (1, 65536),
    "threads": (1, 4096), "seed_batching": (1, 4096), "run_steps": (1, validation.MAX_STEPS),
    "run_checkpoint_freq": (1, validation.MAX_STEPS), "images_per_class": (1, 100000),
    "run_timeout": (1, 7 * 86400), "fgmix_measure_every": (1, validation.MAX_STEPS)}


def check_numbers(args):
    """Every numeric flag through the one validation layer (one line, nothing made)."""
    validation.check_seed("--seed", args.seed)
    for name, (low, high) in _NUMBERS.items():
        if getattr(args, name) is not None:
            validation.check_count(f"--{name}", getattr(args, name), low, high)


def check_device(name):
    """A device torch knows and this machine has (e.g. cpu, cuda, cuda:1)."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BenchmarkError(f"--device {name!r} is not a device torch knows; e.g. --device "
                             "cpu or --device cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError(f"--device {name}: no CUDA device here; use --device cpu")


def check_dataset(name):
    from domainbed import datasets

    if name is not None and name not in datasets.DATASETS:
        raise BenchmarkError(f"unknown --dataset {name!r}.{did_you_mean(name, datasets.DATASETS)}")


def check_hparams(args):
    """--hparams: a JSON object whose names some timed algorithm knows (on the dataset
    whose defaults are used) and whose values pass train.py's checks."""
    from domainbed import hparams_registry

    overrides = validation.parse_hparams(args.hparams)
    for name, value in overrides.items():
        validation.check_hparam_value(name, value)
    if not overrides or args.seed_batching:
        return
    known = {}
    for algorithm in algorithm_names(args):
        known.update(hparams_registry.default_hparams(algorithm, hparams_dataset(args)))
    for name, value in overrides.items():
        if name not in known:
            raise BenchmarkError(f"unknown hparam {name!r} for {args.algorithms} on "
                                 f"{hparams_dataset(args)}.{did_you_mean(name, known)}")
        hparams_registry.apply_overrides(known, {name: value})


# -- step timings ------------------------------------------------------------------------
def algorithm_names(args):
    from domainbed import algorithms
    from domainbed.algorithms.registry import check_algorithm_name

    names = [n.strip() for n in args.algorithms.split(",") if n.strip()]
    known = algorithms.algorithm_names()
    for name in names:
        if name not in known:   # X+SWAD, X+MA: an algorithm with a weight-averaging wrapper
            check_algorithm_name(name)   # an UnknownNameError otherwise
    return (["ERM"] if "ERM" not in names else []) + names


def hparams_dataset(args):
    """The dataset whose default hparams the step timings use."""
    return args.dataset or {"mnist_cnn": "Debug28", "vector": "IUTExample3"}.get(
        args.arch, "Debug224")


def build_hparams(name, args):
    from domainbed import hparams_registry

    hparams = hparams_registry.default_hparams(name, hparams_dataset(args))
    # Synthetic data, no downloads: random initial weights, torchvision's ResNets.
    hparams.update({"pretrained": False, "resnet50_augmix": False,
                    "resnet18": args.arch == "resnet18"})
    if args.batch_size is not None:
        hparams["batch_size"] = args.batch_size
    if args.hparams and not args.run_cost:
        hparams.update(json.loads(args.hparams))
    return hparams


def input_shape(args):
    if args.arch == "vector":
        return (args.input_dim,)
    channels = args.channels or (1 if args.arch == "mnist_cnn" else 3)
    size = ARCH_IMAGE_SIZE[args.arch]
    return (channels, size, size)


def synthetic_minibatches(args, batch_size, device, n_batches=3):
    import torch

    g = torch.Generator().manual_seed(args.seed)
    shape = input_shape(args)
    return [[(torch.randn(batch_size, *shape, generator=g).to(device),
              torch.randint(0, args.num_classes, (batch_size,), generator=g).to(device))
             for _ in range(args.num_domains)] for _ in range(n_batches)]


def synchronize(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_steps(algorithm, batches, steps, device, clock=time.perf_counter, speed=None):
    """Seconds per `update` over `steps` steps (cycling through `batches`), under the
    autocast of train.py's --precision in `speed` (a namespace), if given."""
    from domainbed.training import precision

    synchronize(device)
    start = clock()
    for step in range(steps):
        with precision.autocast(speed, device):
            algorithm.update(batches[step % len(batches)])
    synchronize(device)
    return (clock() - start) / steps


def time_training(args, device):
    """{name: [seconds per step, one per round]} with interleaved, rotating rounds."""
    import torch

    from domainbed.algorithms import get_algorithm_class

    from domainbed.training import precision

    names = algorithm_names(args)
    built = {}
    for name in names:
        torch.manual_seed(args.seed)
        hparams = build_hparams(name, args)
        algorithm = get_algorithm_class(name)(input_shape(args), args.num_classes,
                                              args.num_domains, hparams)
        if args.fgmix_measure_every is not None and hasattr(algorithm, "MEASURE_EVERY"):
            algorithm.MEASURE_EVERY = args.fgmix_measure_every
        built[name] = precision.prepare_algorithm(algorithm.to(device), args).train()
    batch_size = build_hparams("ERM", args)["batch_size"]
    convert = precision.input_converter(args)
    batches = [[(convert(x), y) for x, y in batch]
               for batch in synthetic_minibatches(args, batch_size, device)]
    for algorithm in built.values():
        time_steps(algorithm, batches, args.warmup, device, speed=args) if args.warmup else None
    times = {name: [] for name in names}
    for round_index in range(args.repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_steps(built[name], batches, args.steps, device,
                                          CLOCKS[args.clock], speed=args))
    ops = count_step_ops(built, batches[0], args, device) if args.count_ops else None
    return times, batch_size, ops


def count_step_ops(built, batch, args, device):
    """{name: {"kernels", "other"}} of one more update of each algorithm (as timed)."""
    from domainbed.studies.op_count import count_ops

    return {name: count_ops(time_steps, algorithm, [batch], 1, device, speed=args)[0]
            for name, algorithm in built.items()}


def quartiles(values):
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarise_training(times, ops=None):
    rows = []
    for name, seconds in times.items():
        ratios = [t / e for t, e in zip(seconds, times["ERM"])]
        q1, q3 = quartiles(seconds)
        rows.append({"algorithm": name, "median_ms": 1e3 * statistics.median(seconds),
                     "q1_ms": 1e3 * q1, "q3_ms": 1e3 * q3,
                     "ratio_to_erm": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios)})
        if ops:
            rows[-1]["ops"] = ops[name]
    return rows


# -- compatibility timings ---------------------------------------------------------------
def closed_form_cosine(z, weight, bias, y, metric):
    """FGMix's way: residuals, two small Gram products, cosine."""
    import torch.nn.functional as F

    from domainbed.algorithms import per_sample

    residuals = per_sample.head_residuals(F.linear(z, weight, bias), y)
    return per_sample.cosine_from_gram(per_sample.head_gradient_gram(z, residuals, metric))


def autograd_gradients(z, weight, bias, y, metric):
    """Per-instance head gradients by vmap(grad), flattened, scaled so that plain dot
    products are the metric inner products: [N, C·F + C]."""
    import torch
    import torch.nn.functional as F

    def loss(w, b, zi, yi):
        return F.cross_entropy(F.linear(zi[None], w, b), yi[None])

    grad_w, grad_b = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)),
                                     in_dims=(None, None, 0, 0))(weight, bias, z, y)
    return torch.cat([(grad_w * metric.sqrt()).flatten(1), grad_b], dim=1)


def loop_gradients(z, weight, bias, y, metric):
    """Per-instance head gradients the plain way: one autograd backward per instance
    (what a method needs without a closed form or a per-sample-gradient library)."""
    import torch
    import torch.nn.functional as F

    weight = weight.detach().requires_grad_()
    bias = bias.detach().requires_grad_()
    rows = []
    for zi, yi in zip(z, y):
        grad_w, grad_b = torch.autograd.grad(
            F.cross_entropy(F.linear(zi[None], weight, bias), yi[None]), (weight, bias))
        rows.append(torch.cat([(grad_w * metric.sqrt()).flatten(), grad_b]))
    return torch.stack(rows)


def loop_cosine(z, weight, bias, y, metric):
    """Reference for the N×N matrix from one backward pass per instance."""
    from domainbed.algorithms import per_sample

    flat = loop_gradients(z, weight, bias, y, metric)
    return per_sample.cosine_from_gram(flat @ flat.T)


def autograd_cosine(z, weight, bias, y, metric):
    """Reference for the N×N matrix: metric inner products of autograd's gradients."""
    from domainbed.algorithms import per_sample

    flat = autograd_gradients(z, weight, bias, y, metric)
    return per_sample.cosine_from_gram(flat @ flat.T)


def closed_form_grouped_cosine(z, weight, bias, y, metric, index):
    """What FGMix computes each step: cosines inside the [N, D] groups only."""
    import torch.nn.functional as F

    from domainbed.algorithms import per_sample

    residuals = per_sample.head_residuals(F.linear(z, weight, bias), y)
    return per_sample.grouped_head_gradient_cosine(z, residuals, index, metric)


def autograd_grouped_cosine(z, weight, bias, y, metric, index):
    """Reference for the groups: autograd's gradients, gathered per group, batched dots."""
    flat = autograd_gradients(z, weight, bias, y, metric)[index]
    gram = flat @ flat.transpose(1, 2)
    norms = gram.diagonal(dim1=1, dim2=2).clamp(min=1e-30).sqrt()
    return gram / (norms.unsqueeze(2) * norms.unsqueeze(1))


def compat_problem(n, n_features, n_classes, device, seed, num_domains=3):
    """Features, head, labels, metric, and [N, D] group indices (as FGMix draws them)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    tensors = (torch.randn(n, n_features, generator=g).relu(),  # post-ReLU features
               0.05 * torch.randn(n_classes, n_features, generator=g),
               torch.zeros(n_classes),
               torch.randint(0, n_classes, (n,), generator=g),
               torch.rand(n_features, generator=g) + 0.5,
               torch.randint(0, n, (n, num_domains), generator=g))
    return [t.to(device) for t in tensors]


def time_call(fn, inputs, device, repeats, clock=time.perf_counter):
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = clock()
        fn(*inputs)
        synchronize(device)
        seconds.append(clock() - start)
    return statistics.median(seconds)


def time_compatibilities(args, device):
    shapes = COMPAT_SHAPES
    if args.compat_shapes != "all":
        try:
            shapes = [COMPAT_SHAPES[int(i)] for i in args.compat_shapes.split(",")]
        except (ValueError, IndexError):
            raise BenchmarkError(f"--compat_shapes: 'all' or indices 0..{len(COMPAT_SHAPES) - 1},"
                                 f" got {args.compat_shapes!r}.")
    rows = []
    for label, n, n_features, n_classes in shapes:
        inputs = compat_problem(n, n_features, n_classes, device, args.seed)
        row = {"shape": label, "N": n, "F": n_features, "C": n_classes}
        for kind, closed_fn, reference_fn, matrix_inputs in [
                ("full", closed_form_cosine, autograd_cosine, inputs[:5]),
                ("grouped", closed_form_grouped_cosine, autograd_grouped_cosine, inputs)]:
            difference = closed_fn(*matrix_inputs) - reference_fn(*matrix_inputs)
            closed, reference = [], []
            for _ in range(args.repeats):  # interleaved, as for the steps
                closed.append(time_call(closed_fn, matrix_inputs, device, 3, CLOCKS[args.clock]))
                reference.append(time_call(reference_fn, matrix_inputs, device, 3,
                                           CLOCKS[args.clock]))
            closed_s, reference_s = statistics.median(closed), statistics.median(reference)
            row[kind] = {"autograd_ms": 1e3 * reference_s, "closed_form_ms": 1e3 * closed_s,
                         "speedup": reference_s / closed_s,
                         "max_abs_difference": difference.abs().max().item()}
        # The literal per-instance reference (one backward per instance) is slow, so it is
        # timed once per repeat, for the N x N matrix only.
        loop_s = statistics.median(time_call(loop_cosine, inputs[:5], device, 1, CLOCKS[args.clock])
                                   for _ in range(max(1, args.repeats)))
        row["full"]["loop_autograd_ms"] = 1e3 * loop_s
        row["full"]["speedup_vs_loop"] = loop_s / (row["full"]["closed_form_ms"] / 1e3)
        row["full"]["loop_max_abs_difference"] = (
            closed_form_cosine(*inputs[:5]) - loop_cosine(*inputs[:5])).abs().max().item()
        rows.append(row)
    return rows


# -- output ------------------------------------------------------------------------------
def training_table(rows):
    header = ["algorithm", "ms/step (median)", "IQR ms", "ratio to ERM", "ratio min-max"]
    counted = all("ops" in r for r in rows)
    if counted:
        header += ["kernel ops/step", "other ops"]
    return format_table(header, [
        [r["algorithm"], f"{r['median_ms']:.1f}", f"{r['q1_ms']:.1f}-{r['q3_ms']:.1f}",
         f"{r['ratio_to_erm']:.3f}", f"{r['ratio_min']:.3f}-{r['ratio_max']:.3f}"]
        + ([r["ops"]["kernels"], r["ops"]["other"]] if counted else [])
        for r in rows])


def compat_table(rows):
    header = ["shape", "N", "F", "C", "S", "closed form ms", "vmap ms", "speed-up vs vmap",
              "loop ms", "speed-up vs loop", "max |dS|"]
    return format_table(header, [
        [r["shape"], r["N"], r["F"], r["C"], kind if kind == "grouped" else "N x N",
         f"{r[kind]['closed_form_ms']:.3f}", f"{r[kind]['autograd_ms']:.2f}",
         f"{r[kind]['speedup']:.1f}x",
         f"{r[kind]['loop_autograd_ms']:.1f}" if "loop_autograd_ms" in r[kind] else "-",
         f"{r[kind]['speedup_vs_loop']:.0f}x" if "speedup_vs_loop" in r[kind] else "-",
         f"{r[kind]['max_abs_difference']:.1e}"]
        for r in rows for kind in ["full", "grouped"]])


def environment(args, device):
    import torch

    return {"device": str(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "clock": args.clock,
            "arch": args.arch,
            "input_shape": list(input_shape(args)), "num_domains": args.num_domains,
            "num_classes": args.num_classes, "steps": args.steps, "warmup": args.warmup,
            "repeats": args.repeats, "precision": args.precision,
            "memory_format": args.memory_format, "hparams": args.hparams}


def run(args):
    import torch

    from domainbed.lib.device import get_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else get_device()
    report = {"environment": environment(args, device)}
    if not args.compat_only:
        times, batch_size, ops = time_training(args, device)
        report["environment"]["batch_size_per_domain"] = batch_size
        report["training"] = summarise_training(times, ops)
    if args.compat or args.compat_only:
        report["compatibility"] = time_compatibilities(args, device)
    return report


def print_report(report, as_json):
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(", ".join(f"{k}={v}" for k, v in report["environment"].items()))
    if "training" in report:
        print("\nTraining step time (interleaved rounds; ratios per round, to ERM)")
        print(training_table(report["training"]))
    if "compatibility" in report:
        print("\nGradient compatibilities S: closed form vs per-instance autograd, vectorised"
              " (vmap) and one backward per instance (loop);\nN x N = all pairs, grouped ="
              " FGMix's [N, D] groups")
        print(compat_table(report["compatibility"]))


# -- the cost of one train.py run ------------------------------------------------------------
def timed(fn, clock=time.perf_counter):
    start = clock()
    value = fn()
    return value, clock() - start


def children_cpu_seconds():
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def startup_seconds(clock_name):
    """A new `python -m domainbed.scripts.train` process: the interpreter and the imports
    (wall time, or the child's CPU time with --clock cpu)."""
    import subprocess

    code = "import domainbed.scripts.train, torch"
    clock = children_cpu_seconds if clock_name == "cpu" else time.perf_counter
    _, seconds = timed(lambda: subprocess.run([sys.executable, "-c", code], check=True), clock)
    return seconds


def evaluate_as_a_record(job):
    """What train.py does at a record step: the averaging hook (SWAD), then accuracies."""
    from domainbed.lib import misc

    job.algorithm.before_record(job.evals, list(job.config.test_envs), job.device)
    return [misc.accuracy(job.algorithm, loader, None, job.device) for _, loader in job.evals]


def run_algorithm(args):
    """The one algorithm whole runs time: the first of --algorithms, ERM by default."""
    if args.algorithms == DEFAULT_ALGORITHMS:
        return "ERM"
    algorithm_names(args)   # "did you mean" for a wrong name
    return [name.strip() for name in args.algorithms.split(",") if name.strip()][0]


def is_image_dataset(name):
    """Whether --run_cost on `name` means whole train.py runs (an image-folder dataset)."""
    from domainbed import datasets
    from domainbed.datasets.image_folder import ImageFolderDataset

    if not name or name not in datasets.DATASETS:
        return False
    return issubclass(datasets.get_dataset_class(name), ImageFolderDataset)


def run_cost(args):
    """{algorithm: seconds of each part of one run} on --dataset, and the totals of a
    whole run in a new process (`local`) and in a warm worker (`pool`, data cached)."""
    import tempfile

    from domainbed.training import checkpoint
    from domainbed import training
    from domainbed.training.loop import next_minibatches

    if not args.dataset:
        raise BenchmarkError("--run_cost needs --dataset (e.g. RotatedMNIST5k or IUTExample2)")
    dataset_class = __import__("domainbed.datasets", fromlist=["x"]).get_dataset_class(args.dataset)
    hparams = json.loads(args.hparams) if args.hparams else None
    test_env = dataset_class.test_env(hparams) if hasattr(dataset_class, "test_env") else 0
    clock = CLOCKS[args.clock]
    report = {"startup_s": startup_seconds(args.clock), "dataset": args.dataset,
              "clock": args.clock, "algorithms": {}}
    for i, name in enumerate(algorithm_names(args)):
        with tempfile.TemporaryDirectory() as out:
            argv = ["--dataset", args.dataset, "--algorithm", name, "--test_envs", str(test_env),
                    "--output_dir", out] + (["--hparams", args.hparams] if args.hparams else [])
            job, prepare_s = timed(lambda: training.prepare(training.parse_command_line(argv)),
                                   clock)
            batches = [next_minibatches(job)[0] for _ in range(args.warmup + args.steps)]
            for batch in batches[:args.warmup]:
                job.algorithm.update(batch)
            _, steps_s = timed(lambda: [job.algorithm.update(b) for b in batches[args.warmup:]],
                               clock)
            _, eval_s = timed(lambda: evaluate_as_a_record(job), clock)
            _, save_s = timed(lambda: checkpoint.save_checkpoint(out, checkpoint.training_state(
                job.algorithm, job.streams, 1, {})), clock)
        n_steps = job.dataset.N_STEPS
        n_records = len(range(0, n_steps, job.dataset.CHECKPOINT_FREQ)) + (
            (n_steps - 1) % job.dataset.CHECKPOINT_FREQ != 0)
        parts = {"prepare_s": prepare_s, "step_ms": 1000 * steps_s / args.steps,
                 "evaluation_s": eval_s, "checkpoint_s": save_s}
        loop = n_steps * steps_s / args.steps + n_records * (eval_s + save_s)
        parts["run_in_new_process_s"] = report["startup_s"] + prepare_s + loop
        parts["run_in_warm_worker_s"] = prepare_s + loop
        parts["steps"], parts["records"], parts["first_prepare"] = n_steps, n_records, i == 0
        report["algorithms"][name] = parts
    return report


def print_run_cost(report):
    print(f"One run on {report['dataset']} ({report['clock']} clock): new process start-up "
          f"(interpreter, torch, train.py) {report['startup_s']:.2f} s")
    header = ["algorithm", "prepare s", "step ms", "steps", "eval s", "ckpt s", "records",
              "new process s", "warm worker s"]
    rows = [[name, f"{p['prepare_s']:.2f}" + (" (data built)" if p["first_prepare"] else ""),
             f"{p['step_ms']:.2f}", str(p["steps"]), f"{p['evaluation_s']:.3f}",
             f"{p['checkpoint_s']:.3f}", str(p["records"]), f"{p['run_in_new_process_s']:.1f}",
             f"{p['run_in_warm_worker_s']:.1f}"] for name, p in report["algorithms"].items()]
    print(format_table(header, rows))


# -- training several data seeds as one model (a design question of the unit tests) -----
def seed_batching(args):
    """CPU seconds of S ERM runs of a linear model: one after another with torch.optim.Adam,
    as one `vmap` over seeds (hand-written Adam), and as batched matrices (baddbmm, one
    Adam over the stacked parameters: elementwise, so S independent Adams)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads or 1)
    n_seeds, n = args.seed_batching, args.num_domains * (args.batch_size or 64)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(n_seeds, n, args.input_dim, generator=g)
    y = torch.randint(0, args.num_classes, (n_seeds, n), generator=g)

    def one_after_another():
        for seed in range(n_seeds):
            model = torch.nn.Linear(args.input_dim, args.num_classes)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            for _ in range(args.steps):
                loss = F.cross_entropy(model(x[seed]), y[seed])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    def vmapped():
        params = [torch.zeros(n_seeds, args.num_classes, args.input_dim),
                  torch.zeros(n_seeds, args.num_classes)]
        moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        step = torch.func.vmap(torch.func.grad(
            lambda w, b, xs, ys: F.cross_entropy(F.linear(xs, w, b), ys), argnums=(0, 1)))
        for t in range(1, args.steps + 1):
            for p, grad, (m, v) in zip(params, step(*params, x, y), moments):
                m.mul_(0.9).add_(grad, alpha=0.1)
                v.mul_(0.999).addcmul_(grad, grad, value=0.001)
                p.sub_(1e-3 * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8))

    def stacked():
        weight = torch.zeros(n_seeds, args.input_dim, args.num_classes, requires_grad=True)
        bias = torch.zeros(n_seeds, 1, args.num_classes, requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=1e-3)
        for _ in range(args.steps):
            logits = torch.baddbmm(bias, x, weight).reshape(-1, args.num_classes)
            # The sum over seeds of each seed's mean loss: each seed gets its own gradient.
            loss = F.cross_entropy(logits, y.reshape(-1), reduction="sum") / n
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    seconds = {}
    for name, fn in [("one after another", one_after_another), ("vmap over seeds", vmapped),
                     ("stacked by hand", stacked)]:
        fn()  # warm-up
        _, seconds[name] = timed(fn, time.process_time)
    return {"seeds": n_seeds, "steps": args.steps, "instances_per_step": n,
            "cpu_seconds": seconds}


def print_seed_batching(report):
    print(f"ERM, {report['seeds']} seeds x {report['steps']} steps, "
          f"{report['instances_per_step']} instances per step (CPU seconds):")
    base = report["cpu_seconds"]["one after another"]
    for name, value in report["cpu_seconds"].items():
        print(f"  {name:<18} {value:7.3f}  ({base / value:.1f}x)")


def show(report, as_json, print_table):
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


def main(argv=None):
    try:
        try:
            args = parse_args(argv)
        except SystemExit as stop:   # a usage error (one line) or --help
            return stop.code
        if args.seed_batching is not None:
            return show(seed_batching(args), args.json, print_seed_batching)
        if args.run_cost and is_image_dataset(args.dataset):
            from domainbed.studies import train_runs

            report = train_runs.train_runs(args, run_algorithm(args))
            return show(report, args.json, train_runs.print_train_runs)
        if args.run_cost:
            return show(run_cost(args), args.json, print_run_cost)
        report = run(args)
    except DomainBedError as error:   # BenchmarkError, ValidationError, RunsError...
        print(f"benchmark: error: {error}", file=sys.stderr)
        return error.exit_code
    print_report(report, args.json)
    return 0
