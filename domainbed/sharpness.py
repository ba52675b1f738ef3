"""How flat is a trained model's training loss? Two standard measures, for any job directory.

* **ρ-ball increase** (SAM's first-order worst case): L(θ + ρ g/‖g‖) − L(θ), g = ∇L(θ),
  computed per batch and averaged (Foret et al., ICLR 2021; Keskar et al. measure the same
  ball's maximum by optimisation, SAM's one step is its cheap estimate).
* **Top Hessian eigenvalue** of the mean training loss over the same batches, by power
  iteration with Hessian-vector products (double back-propagation, no Hessian formed).
* On request, the **loss along random filter-normalised directions** (Li et al., NeurIPS
  2018): L(θ + α d) for K directions d, and a 2-D slice L(θ + α d₁ + β d₂), for the
  figures of `sharpness --plot` (domainbed/sharpness_plots.py).

Both are taken over the parameters `predict` uses (an algorithm's extra modules, such as a
discriminator or FGMix's policy, receive no gradient and are left out), with the model in
evaluation mode (BatchNorm's running statistics, no dropout), on fixed batches of the
training environments' in-splits: the data the training loss was minimised on.

    from domainbed import sharpness
    sharpness.measure_job("sweep_out/<job hash>")       # {"loss": ..., "rho_increase": ..., ...}

The command is `python -m domainbed.scripts.sharpness`.
"""
import contextlib
import math

import torch
import torch.nn.functional as F

from domainbed.algorithms import rho_ball

DEFAULTS = {"rho": 0.05, "n_batches": 8, "batch_size": 64, "iterations": 20, "seed": 0}


# -- the two measures, on any differentiable loss of a list of parameters -------------------
def rho_ball_increase(loss_fn, params, rho):
    """L(θ + ε) − L(θ), ε = ρ g/‖g‖: SAM's first-order worst case in the ρ-ball.
    `loss_fn()` evaluates the loss at the parameters' current values; they are restored."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params)
    if not any(g.any() for g in grads):
        return 0.0   # a flat point: no second evaluation
    with torch.no_grad():
        steps = rho_ball.ascent(grads, rho)
        for p, e in zip(params, steps):
            p.add_(e)
        try:
            perturbed = loss_fn()
        finally:
            for p, e in zip(params, steps):
                p.sub_(e)
    return float(perturbed - loss.detach())


def hessian_vector_product(loss_fns, params, vector):
    """(Σ_b ∇²L_b) v / len(loss_fns): the Hessian of the mean loss times `vector`."""
    total = [torch.zeros_like(p) for p in params]
    for loss_fn in loss_fns:
        grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vector))
        for t, h in zip(total, torch.autograd.grad(dot, params)):
            t.add_(h)
    return [t / len(loss_fns) for t in total]


def top_hessian_eigenvalue(loss_fns, params, iterations=20, seed=0, rtol=1e-4):
    """The eigenvalue of largest magnitude of the mean loss's Hessian, by power iteration
    from a seeded random direction (stops early once it changes by less than `rtol`)."""
    generator = torch.Generator().manual_seed(seed)
    vector = [torch.randn(p.shape, generator=generator).to(p) for p in params]
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = math.sqrt(sum(float((v * v).sum()) for v in vector))
        if norm == 0:
            return 0.0
        vector = [v / norm for v in vector]
        product = hessian_vector_product(loss_fns, params, vector)
        estimate = sum(float((v * h).sum()) for v, h in zip(vector, product))
        converged = abs(estimate - eigenvalue) <= rtol * abs(estimate)
        eigenvalue, vector = estimate, product
        if converged:
            break
    return eigenvalue


# -- a model on batches ------------------------------------------------------------------
def used_parameters(model, x):
    """The parameters `model.predict` depends on (the others get no gradient)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(model.predict(x).sum(), params, allow_unused=True)
    return [p for p, g in zip(params, grads) if g is not None]


def measure(model, batches, rho=DEFAULTS["rho"], iterations=DEFAULTS["iterations"],
            seed=DEFAULTS["seed"]):
    """{"loss", "rho_increase", "top_eigenvalue"} of cross-entropy on `batches` [(x, y)]."""
    model.eval()
    params = used_parameters(model, batches[0][0])

    def loss_of(x, y):
        return lambda: F.cross_entropy(model.predict(x), y)

    loss_fns = [loss_of(x, y) for x, y in batches]
    with torch.no_grad():
        loss = sum(float(fn()) for fn in loss_fns) / len(loss_fns)
    increase = sum(rho_ball_increase(fn, params, rho) for fn in loss_fns) / len(loss_fns)
    return {"loss": loss, "rho_increase": increase,
            "top_eigenvalue": top_hessian_eigenvalue(loss_fns, params, iterations, seed),
            "rho": rho, "n_batches": len(batches), "n_parameters": sum(p.numel() for p in params)}


# -- the loss along random directions (Li et al., NeurIPS 2018) --------------------------------
def filter_normalized_direction(params, generator):
    """A Gaussian direction with each filter (a weight tensor's slice along its first
    dimension: a conv's output channel, a linear layer's row) rescaled to the norm of the
    same filter of θ, so that steps are comparable across layers and networks whatever
    their scale. Biases and normalisation parameters (1-D tensors) get no component, as in
    Li et al.'s figures."""
    direction = []
    for p in params:
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p)
        if p.dim() <= 1:
            d.zero_()
        else:
            rows, weights = d.view(d.shape[0], -1), p.detach().reshape(p.shape[0], -1)
            rows.mul_(weights.norm(dim=1, keepdim=True)
                      / rows.norm(dim=1, keepdim=True).clamp(min=1e-12))
        direction.append(d)
    return direction


def loss_at_points(loss_fns, params, directions, points):
    """The mean of `loss_fns` at θ + Σ_k a_k d_k for each point (a_1, ..., a_K) of `points`,
    with `directions` [d_1, ..., d_K]; the parameters are put back after."""
    originals = [p.detach().clone() for p in params]
    losses = []
    try:
        with torch.no_grad():
            for point in points:
                for index, p in enumerate(params):
                    shifted = originals[index].clone()
                    for a, direction in zip(point, directions):
                        if a:
                            shifted.add_(direction[index], alpha=float(a))
                    p.copy_(shifted)
                losses.append(sum(float(fn()) for fn in loss_fns) / len(loss_fns))
    finally:
        with torch.no_grad():
            for p, original in zip(params, originals):
                p.copy_(original)
    return losses


def direction_generator(seed, index):
    """The generator of direction `index` under `seed` (the same directions on every run)."""
    from domainbed.lib.misc import seed_hash

    return torch.Generator().manual_seed(seed_hash("direction", seed, index))


def loss_landscape(model, batches, n_directions=4, span=1.0, n_points=21, slice_points=0,
                   seed=DEFAULTS["seed"]):
    """{"alphas", "curves" [K][n_points]} and, when slice_points > 0, {"slice_alphas",
    "slice" [β][α]} of the cross-entropy on `batches` around the model's weights, in
    evaluation mode. α = 0 is θ itself: every curve passes through `measure`'s loss."""
    model.eval()
    params = used_parameters(model, batches[0][0])
    loss_fns = [(lambda x, y: lambda: F.cross_entropy(model.predict(x), y))(x, y)
                for x, y in batches]
    directions = [filter_normalized_direction(params, direction_generator(seed, k))
                  for k in range(max(n_directions, 2 if slice_points else 0))]
    alphas = [span * (2 * i / (n_points - 1) - 1) for i in range(n_points)]
    result = {"alphas": alphas, "span": span,
              "curves": [loss_at_points(loss_fns, params, [d], [(a,) for a in alphas])
                         for d in directions[:n_directions]]}
    if slice_points:
        grid = [span * (2 * i / (slice_points - 1) - 1) for i in range(slice_points)]
        flat = loss_at_points(loss_fns, params, directions[:2],
                              [(a, b) for b in grid for a in grid])
        result["slice_alphas"] = grid
        result["slice"] = [flat[row * slice_points:(row + 1) * slice_points]
                           for row in range(slice_points)]
    return result


# -- a job directory ---------------------------------------------------------------------
@contextlib.contextmanager
def seeded_as_the_run(seed):
    """The global RNGs (Python, NumPy, torch) seeded as train.py seeds them before it
    builds the dataset, so a dataset drawn from them (Debug*) is the run's; the caller's
    states are put back after."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)   # training.build.seed_everything's order (a layer above us)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def training_in_splits(args, hparams):
    """The training environments' in-splits of the run with these records' `args`, split as
    train.py splits them (`misc.split_dataset` seeded by the trial and the environment)."""
    from domainbed import datasets
    from domainbed.lib import misc

    dataset_class = datasets.get_dataset_class(args["dataset"])
    extra = {"trial_seed": args["trial_seed"]} if dataset_class.SEEDED_BY_TRIAL else {}
    with seeded_as_the_run(args["seed"]):   # Debug datasets draw from the global RNGs
        dataset = dataset_class(args["data_dir"], args["test_envs"], hparams, **extra)
    splits = []
    for env_i, env in enumerate(dataset):
        if env_i not in args["test_envs"]:
            holdout = int(len(env) * args["holdout_fraction"])
            splits.append(misc.split_dataset(env, holdout,
                                             misc.seed_hash(args["trial_seed"], env_i))[1])
    return splits


def training_batches(dump, n_batches, batch_size, seed, device):
    """Fixed batches drawn (seeded, without replacement) from the union of the training
    environments' in-splits, as the run that wrote `dump` (a model file's dict) split them."""
    from domainbed import model_files

    splits = training_in_splits(dump["args"], model_files.build_hparams(dump))
    pool = torch.utils.data.ConcatDataset(splits)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pool), generator=generator)[: n_batches * batch_size].tolist()
    batches = []
    for start in range(0, len(order), batch_size):
        xs, ys = zip(*[pool[i] for i in order[start:start + batch_size]])
        batches.append((torch.stack(xs).to(device), torch.as_tensor(ys).to(device)))
    return batches


def measure_job(path, model="final", landscape=None, **options):
    """`measure` at a job's final model (`model.pkl`) or the one training-domain validation
    selects (`model="selected"`: `model_iid.pkl`, kept with DOMAINBED_SAVE_SELECTED=1),
    with the job's identity (dataset, algorithm, test envs, seeds) in the result.
    `landscape`: `loss_landscape`'s keyword arguments, to add its curves (same batches)."""
    import os

    from domainbed import model_files
    from domainbed.lib.device import get_device

    settings = dict(DEFAULTS, **options)
    if os.path.isdir(path):
        path = os.path.join(path, "model_iid.pkl" if model == "selected" else "model.pkl")
    device = get_device()
    algorithm = model_files.load_model(path, device)
    dump = model_files.read_model_file(model_files.model_file_path(path))  # its args
    batches = training_batches(dump, settings["n_batches"], settings["batch_size"],
                               settings["seed"], device)
    args = dump["args"]
    result = {key: args[key] for key in ("dataset", "algorithm", "test_envs", "hparams_seed",
                                         "trial_seed", "seed")}
    result["model"] = model
    result["path"] = path
    result.update(measure(algorithm, batches, settings["rho"], settings["iterations"],
                          settings["seed"]))
    if landscape is not None:
        result["landscape"] = loss_landscape(algorithm, batches, seed=settings["seed"],
                                             **landscape)
    return result


def job_directories(paths, hparams_seed=None):
    """Finished job directories: each path is one (it has `done`) or a sweep holding them;
    with `hparams_seed`, only the jobs of that hparam draw (0: the defaults)."""
    return find_jobs(paths, hparams_seed)[0]


def job_args(job):
    """The job's identifying args: job.json's, else those of its first readable record
    (a garbage line is passed over); None when neither says."""
    import os

    from domainbed.lib import jobdir

    args = jobdir.read_job_args(job)
    if args is not None:
        return args
    try:
        lines = jobdir.read_records_file(os.path.join(job, jobdir.RESULTS_FILE))
    except jobdir.NotRegularFileError:
        return None
    return next((record["args"] for _, _, record in lines
                 if record is not None and isinstance(record.get("args"), dict)), None)


def find_jobs(paths, hparams_seed=None):
    """(finished job directories, [(job, why it is skipped)]): job_directories, and the
    jobs whose hparam draw cannot be read when `hparams_seed` asks for one."""
    import os

    found = []
    for path in paths:
        if os.path.isfile(os.path.join(path, "done")):
            found.append(path)
        elif os.path.isdir(path):
            found += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if os.path.isfile(os.path.join(path, name, "done")))
    if hparams_seed is None:
        return found, []
    jobs, skipped = [], []
    for job in found:
        draw = (job_args(job) or {}).get("hparams_seed")
        if draw is None:
            skipped.append((job, "neither job.json nor results.jsonl says its hparams_seed"))
        elif draw == hparams_seed:
            jobs.append(job)
    return jobs, skipped


def row_order(result):
    """Rows in a stable, readable order: dataset, algorithm, test envs, hparam draw, trial
    (then the path), not the order of the job hashes."""
    return (str(result["dataset"]), str(result["algorithm"]), list(result["test_envs"]),
            result["hparams_seed"], result["trial_seed"], result["path"])


def summarize(results):
    """[(algorithm, n, mean ρ-increase, its s.e., mean top eigenvalue, its s.e., mean loss)]."""
    import collections

    from domainbed.results.paired import summarise

    by_algorithm = collections.defaultdict(list)
    for result in results:
        by_algorithm[result["algorithm"]].append(result)

    rows = []
    for name, group in by_algorithm.items():
        increase = summarise([r["rho_increase"] for r in group])
        eigenvalue = summarise([r["top_eigenvalue"] for r in group])
        rows.append((name, len(group), increase["mean"], increase["se"], eigenvalue["mean"],
                     eigenvalue["se"], summarise([r["loss"] for r in group])["mean"]))
    return rows
