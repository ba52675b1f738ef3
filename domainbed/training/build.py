"""Building a job in memory, in upstream's order: seeds, dataset, splits, loaders,
algorithm. Nothing is written; a refusal is a BadInput."""
import random

import numpy as np

from domainbed import datasets
from domainbed.errors import BadInput
from domainbed.lib import misc, threads, validation
from domainbed.training import precision
from domainbed.training.plan import validate


def seed_everything(seed):
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def build_dataset(dataset_class, config, hparams):
    # Ours: a dataset that is a fresh draw in every trial also takes the trial seed.
    extra = {"trial_seed": config.trial_seed} if dataset_class.SEEDED_BY_TRIAL else {}
    try:
        dataset = dataset_class(config.data_dir, list(config.test_envs), hparams, **extra)
    except BadInput:   # DatasetNotFoundError, DatasetArgumentError: it says what to do
        raise
    except ImportError as e:  # an optional extra (e.g. wilds) that is not installed
        raise BadInput(str(e)) from None
    except ValueError as e:  # upstream's 'Data directory not specified!'
        raise BadInput(f"{e} Pass --data_dir DIR (see python -m domainbed.scripts.download).") from None
    return dataset


def make_splits(dataset, config, hparams):
    """(in_splits, out_splits, uda_splits), each a list of (split, sampling weights)."""
    in_splits, out_splits, uda_splits = [], [], []
    for env_i, env in enumerate(dataset):
        out, in_ = misc.split_dataset(env, int(len(env) * config.holdout_fraction),
                                      misc.seed_hash(config.trial_seed, env_i))
        uda = []
        if env_i in config.test_envs:
            uda, in_ = misc.split_dataset(in_, int(len(in_) * config.uda_holdout_fraction),
                                          misc.seed_hash(config.trial_seed, env_i))
        if len(out) == 0 or len(in_) == 0:
            # Evaluating an empty split divides by zero (upstream crashes at step 0).
            raise BadInput(
                f"--holdout_fraction {config.holdout_fraction} leaves env {env_i} of {config.dataset} "
                f"({len(env)} items) an empty {'out' if len(out) == 0 else 'in'}-split; "
                f"choose a fraction in (0, 1) that leaves both splits non-empty (e.g. 0.2)")
        weigh = misc.make_weights_for_balanced_classes if hparams["class_balanced"] else None
        in_splits.append((in_, weigh(in_) if weigh else None))
        out_splits.append((out, weigh(out) if weigh else None))
        if len(uda):
            uda_splits.append((uda, weigh(uda) if weigh else None))
    if config.task == "domain_adaptation" and not uda_splits:
        raise BadInput("--task domain_adaptation needs unlabeled test-env data: set "
                       "--uda_holdout_fraction above 0 (e.g. 0.2)")
    return in_splits, out_splits, uda_splits


def _eval_names(splits):
    in_splits, out_splits, uda_splits = splits
    return ([f"env{i}_in" for i in range(len(in_splits))]
            + [f"env{i}_out" for i in range(len(out_splits))]
            + [f"env{i}_uda" for i in range(len(uda_splits))])  # upstream: uda list index


def make_loaders(dataset, config, hparams, splits):
    """Training streams (each seeded from --seed and its index: deterministic and
    resumable) and the evaluation loaders with upstream's names, from the job's pipeline:
    upstream's (`default_loader_makers`) or the decoded cache's (`fast_loader_makers`)."""
    in_splits, out_splits, uda_splits = splits
    makers = fast_loader_makers if config.pipeline == "fast" \
        else default_loader_makers
    stream, eval_loader = makers(dataset, config, hparams)
    batch_size = hparams["batch_size"]

    def seeded_stream(split, weights, kind, i):
        return stream(split, weights, batch_size, misc.seed_hash(config.seed, kind, i))

    train_loaders = [seeded_stream(split, w, "train_stream", i)
                     for i, (split, w) in enumerate(in_splits) if i not in config.test_envs]
    uda_loaders = [seeded_stream(split, w, "uda_stream", i)
                   for i, (split, w) in enumerate(uda_splits)]
    eval_batch_size = getattr(dataset, "EVAL_BATCH_SIZE", 64)
    names = _eval_names(splits)
    eval_loaders = [eval_loader(split, eval_batch_size, i, name) for i, (name, (split, _))
                    in enumerate(zip(names, in_splits + out_splits + uda_splits))]
    return train_loaders, uda_loaders, list(zip(names, eval_loaders))


def loader_workers(dataset):
    """The dataset's loader workers (upstream's 8 for image datasets) capped at the usable
    cores, or DOMAINBED_LOADER_WORKERS (lib/threads.py); not one of the job's arguments."""
    try:
        return threads.loader_workers(getattr(dataset, "N_WORKERS", 0))
    except threads.ThreadSettingError as error:
        raise BadInput(str(error)) from None


def default_loader_makers(dataset, config, hparams):
    """(stream, eval_loader) of upstream's pipeline: the splits through torch's DataLoader
    (or gathered by index when in memory), the dataset's own transforms."""
    from domainbed.datasets.fast_data_loader import FastDataLoader, InfiniteDataLoader

    workers = loader_workers(dataset)

    def stream(split, weights, batch_size, seed):
        return InfiniteDataLoader(dataset=split, weights=weights, batch_size=batch_size,
                                  num_workers=workers, seed=seed)

    def eval_loader(split, batch_size, index, name):
        return FastDataLoader(dataset=split, batch_size=batch_size,
                              num_workers=workers,
                              seed=misc.seed_hash(config.seed, "eval_loader", index))
    return stream, eval_loader


def fast_loader_makers(dataset, config, hparams):
    """(stream, eval_loader) of `--pipeline fast`: the decoded uint8 cache, batches
    augmented on the device. An augmented evaluation loader (a training env's split, as
    upstream) draws from its own fixed seed."""
    from domainbed.datasets.fast_pipeline import FastPipeline
    from domainbed.lib.device import get_device

    # No room or no usable DOMAINBED_CACHE: a CacheError (a BadInput), before anything of
    # the job is written.
    pipeline = FastPipeline(dataset, config.test_envs, hparams["data_augmentation"],
                            get_device(), loader_workers(dataset))

    def eval_loader(split, batch_size, index, name):
        return pipeline.eval_loader(split, batch_size,
                                    misc.seed_hash(config.seed, "eval_augmentation", name))
    return pipeline.stream, eval_loader


def describe_pipeline(dataset, config):
    """The line out.txt gets about the input pipeline."""
    if config.pipeline == "fast":
        from domainbed.datasets.decoded_cache import SIZE, cache_dir
        from domainbed.lib.device import get_device

        n_images = sum(len(env) for env in dataset)
        return (f"Pipeline: fast (decoded cache {cache_dir()}, {n_images} images at "
                f"{SIZE}x{SIZE}, augmentation on {get_device().type})")
    from domainbed.datasets.image_folder import ImageFolderDataset

    workers = loader_workers(dataset)
    if not isinstance(dataset, ImageFolderDataset):   # tensors in memory, no transforms
        return f"Pipeline: default (the dataset's tensors, {workers} loader workers)"
    return f"Pipeline: default (torchvision transforms, {workers} loader workers)"


def build_algorithm(algorithm_class, dataset, config, hparams, device):
    # (networks.WeightsUnavailableError, a BadInput, says how to train without them)
    algorithm = algorithm_class(dataset.input_shape, dataset.num_classes,
                                len(dataset) - len(config.test_envs), hparams)
    return algorithm.to(device)


class Job:
    """Everything one run needs, built before anything is written."""

    def __init__(self, config, hparams, dataset, in_split_lengths, algorithm, train_loaders,
                 uda_loaders, evals, device):
        self.config = config
        self.hparams = hparams
        self.dataset = dataset
        self.in_split_lengths = in_split_lengths  # all envs' (test envs too), for epochs
        self.algorithm = algorithm
        self.train_loaders = train_loaders
        self.uda_loaders = uda_loaders
        self.evals = evals
        self.device = device
        # What `run_job` adds once the job is accepted (a Job from `prepare` keeps these):
        self.started = None          # the process's start, for out.txt's timing line
        self.threads_line = None     # out.txt's `Threads:` line
        self.tensorboard = False     # TensorBoard scalars on (the flag or DOMAINBED_TENSORBOARD)

    @property
    def streams(self):
        return self.train_loaders + self.uda_loaders

    def close(self):
        """Stop the loaders' background threads (the fast pipeline's prefetchers): a
        thread still inside torch when the interpreter exits aborts the process."""
        for loader in self.streams:
            close = getattr(loader, "close", None)
            if close is not None:
                close()


def prepare(config):
    """Validation and build of a RunConfig without the output directory: the Job in memory
    (benchmark, soups)."""
    return build(validate(config))


def build(plan):
    """The dataset, its splits and loaders and the algorithm, in memory. Returns a Job."""
    from domainbed.lib.device import get_device

    config, hparams = plan.config, plan.hparams
    seed_everything(config.seed)
    device = get_device()
    dataset = build_dataset(plan.dataset_class, config, hparams)
    if plan.env_names is None:   # the environments are known now
        validation.check_test_envs(config.test_envs, len(dataset), None, config.dataset)
    splits = make_splits(dataset, config, hparams)
    train_loaders, uda_loaders, evals = make_loaders(dataset, config, hparams, splits)
    algorithm = build_algorithm(plan.algorithm_class, dataset, config, hparams, device)
    algorithm = precision.prepare_algorithm(algorithm, config)   # channels_last, if asked
    in_split_lengths = [len(split) for split, _ in splits[0]]
    return Job(config, hparams, dataset, in_split_lengths, algorithm, train_loaders, uda_loaders,
               evals, device)
