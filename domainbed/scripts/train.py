"""Train one algorithm on one dataset with some test environments held out.

Upstream DomainBed's train.py (same flags, defaults, order of operations, out.txt,
results.jsonl, model.pkl and done), made reliable:

* every input is checked before anything is written: a bad one is a one-line
  `train.py: error: ...` with a hint, exit code 2, and no file created or changed;
* a job directory belongs to one job (`job.json`) and one process (`.lock`);
* at every checkpoint step the full training state goes to `checkpoint.pt`; a restart in
  the same output_dir resumes from it exactly (results.jsonl is trimmed to that step);
* SIGTERM / SIGUSR1 finish the current step, checkpoint and exit with 128 + signal number
  (143 / 138) so that a launcher can requeue the job;
* a non-finite loss stops the run (exit 3) and any crash leaves a `failed` file; neither
  leaves `done`. See docs/reliability.md.

`main` is a straight line: cheap validation (flags, names, hparams, test environments;
nothing read from or written to the output directory) -> the job's lock (which also
checks the directory's identity) -> build (dataset, splits, loaders, algorithm) -> the
training loop -> the finish. A refusal anywhere before the loop leaves the file system
as it was (what the lock made is removed again); a failure in the loop goes through
`record_failure`, the one failure path.
"""
import argparse
import collections
import contextlib
import errno
import math
import numbers
import os
import random
import re
import signal
import sys
import time
import traceback

import numpy as np

from domainbed import datasets, hparams_registry, model_files
from domainbed.algorithms import get_algorithm_class
from domainbed.lib import checkpoint, jobdir, misc, tensorboard_logs, validation
from domainbed.lib.cli import CommandError, OneLineErrorParser, one_line_errors, report, squeeze
from domainbed.lib.progress import progress_bar
from domainbed.lib.registry import PluginError

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_IO_ERROR = 4     # writing the job directory failed (disk full, permissions...)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)   # exit code: 128 + signal number

# Args that do not change what a job computes: they may differ between the starts of one
# job. (data_dir: a dataset may move without orphaning its jobs.)
NON_IDENTIFYING_ARGS = ("output_dir", "data_dir", "skip_model_save", "save_model_every_checkpoint")


class JobError(CommandError):
    """A reason to stop with one line on the console (after the logs are closed) and
    `exit_code`; the message says what to do."""


class BadInput(JobError):
    """A problem with the command line or the output directory; the message says what to do."""

    exit_code = EXIT_BAD_INPUT


class WriteError(JobError):
    """Writing the job directory failed (a full disk, permissions...)."""

    exit_code = EXIT_IO_ERROR


def build_parser():
    parser = OneLineErrorParser(prog="train.py", description="Domain generalization",
                                hint="see --help")
    parser.add_argument("--data_dir", type=str)
    parser.add_argument("--dataset", type=str, default="RotatedMNIST")
    parser.add_argument("--algorithm", type=str, default="ERM")
    parser.add_argument("--task", type=str, default="domain_generalization",
                        choices=["domain_generalization", "domain_adaptation"])
    parser.add_argument("--hparams", type=str, help="JSON-serialized hparams dict")
    parser.add_argument("--hparams_seed", type=int, default=0,
                        help='Seed for random hparams (0 means "default hparams")')
    parser.add_argument("--trial_seed", type=int, default=0,
                        help="Trial number (used for seeding split_dataset and random_hparams).")
    parser.add_argument("--seed", type=int, default=0, help="Seed for everything else")
    parser.add_argument("--steps", type=int, default=None,
                        help="Number of steps. Default is dataset-dependent.")
    parser.add_argument("--checkpoint_freq", type=int, default=None,
                        help="Checkpoint every N steps. Default is dataset-dependent.")
    parser.add_argument("--test_envs", type=int, nargs="+", default=[0])
    parser.add_argument("--output_dir", type=str, default="train_output")
    parser.add_argument("--holdout_fraction", type=float, default=0.2)
    parser.add_argument("--uda_holdout_fraction", type=float, default=0,
                        help="For domain adaptation, %% of test to use unlabeled for training.")
    parser.add_argument("--skip_model_save", action="store_true")
    parser.add_argument("--save_model_every_checkpoint", action="store_true")
    parser.add_argument("--tensorboard", action="store_true", default=argparse.SUPPRESS,
                        help="ours: also log TensorBoard scalars (not one of the job's args)")
    return parser


# ---------------------------------------------------------------------------------------
# 1. Validation (reads and writes nothing in the output directory)

def lookup_classes(args):
    try:
        algorithm_class = get_algorithm_class(args.algorithm)
    except PluginError as e:
        raise BadInput(str(e)) from None
    except NotImplementedError as e:
        raise BadInput(f"--algorithm: {e}") from None
    try:
        dataset_class = datasets.get_dataset_class(args.dataset)
    except NotImplementedError as e:
        raise BadInput(f"--dataset: {e}") from None
    return algorithm_class, dataset_class


def check_plain_args(args):
    """The flags that need no dataset (seeds, fractions, steps, task; shared with sweep)."""
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise BadInput(f"--output_dir {args.output_dir} is a file; choose a directory")
    try:
        validation.check_train_args(args)
    except validation.ValidationError as e:
        raise BadInput(str(e)) from None


def check_test_envs(test_envs, n_envs, env_names, dataset_name):
    """In range, not repeated, at least one training environment left."""
    try:
        validation.check_test_envs(test_envs, n_envs, env_names, dataset_name)
    except validation.ValidationError as e:
        raise BadInput(str(e)) from None


def choose_hparams(args):
    """Upstream's choice: defaults for hparams_seed 0, else the seeded random draw; then
    the --hparams overrides, checked for unknown names, wrong types and ranges."""
    try:
        overrides = validation.parse_hparams(args.hparams)
    except validation.ValidationError as e:
        raise BadInput(str(e)) from None
    if args.hparams_seed == 0:
        hparams = hparams_registry.default_hparams(args.algorithm, args.dataset)
    else:
        hparams = hparams_registry.random_hparams(
            args.algorithm, args.dataset, misc.seed_hash(args.hparams_seed, args.trial_seed))
    try:
        hparams = hparams_registry.apply_overrides(hparams, overrides)
    except hparams_registry.HparamError as e:
        raise BadInput(f"--hparams: {e}") from None
    return hparams


def identifying_args(args):
    return {k: v for k, v in sorted(vars(args).items()) if k not in NON_IDENTIFYING_ARGS}


class Plan:
    """What validation found: the classes, the hparams and the environment names."""

    def __init__(self, args, algorithm_class, dataset_class, hparams, env_names):
        self.args = args
        self.algorithm_class = algorithm_class
        self.dataset_class = dataset_class
        self.hparams = hparams
        self.env_names = env_names   # None: known only once the dataset is built


def validate(args):
    """Every check that needs neither the output directory nor the data. Returns a Plan."""
    check_plain_args(args)
    algorithm_class, dataset_class = lookup_classes(args)
    hparams = choose_hparams(args)
    # Ours: a dataset's environments may depend on hparams, and it may refuse arguments.
    try:
        dataset_class.check_arguments(args.test_envs, hparams)
        env_names = dataset_class.environment_names(hparams)
    except datasets.DatasetArgumentError as e:
        raise BadInput(str(e)) from None
    if env_names:
        check_test_envs(args.test_envs, len(env_names), env_names, args.dataset)
    return Plan(args, algorithm_class, dataset_class, hparams, env_names or None)


@contextlib.contextmanager
def setting_up():
    """An unforeseen error while validating or building comes from this combination of
    arguments and hparams (nothing is written yet): a BadInput, one line, exit 2."""
    try:
        yield
    except JobError:
        raise
    except Exception as e:
        raise BadInput(f"cannot set up this job ({type(e).__name__}: {squeeze(e)}); check "
                       "--hparams and the other arguments (see docs/reliability.md)") from None


# ---------------------------------------------------------------------------------------
# 2. The job's lock and directory

class JobDirectoryLock:
    """`with JobDirectoryLock(args) as lock:` holds the job's lock (made in the directory,
    which is created if needed) and checks that the directory is this job's. Until
    `lock.keep()` (the job is accepted) a refusal removes what the lock made, so a
    refused job leaves no trace."""

    def __init__(self, args):
        self.args = args
        self.lock = jobdir.JobLock(args.output_dir)
        self.kept = False

    def __enter__(self):
        output_dir = self.args.output_dir
        try:
            self.lock.acquire(write_holder=False)   # a refused job changes no file
        except jobdir.JobRunningError as e:
            raise BadInput(str(e)) from None
        except jobdir.JobLockError as e:
            raise BadInput(e.strerror) from None
        except OSError as e:
            raise BadInput(f"cannot use --output_dir {output_dir} ({e.strerror}); "
                           f"choose a writable directory") from None
        return self

    def is_done(self):
        """Refuse a directory of another job; True when this job is already done."""
        try:
            jobdir.check_job_identity(self.args.output_dir, identifying_args(self.args))
        except jobdir.JobIdentityError as e:
            raise BadInput(str(e)) from None
        return jobdir.is_done(self.args.output_dir)

    def keep(self):
        self.kept = True
        self.lock.write_holder()

    def __exit__(self, *exc):
        self.lock.release(remove_created=not self.kept)
        return False


def already_done_message(output_dir):
    return (f"train.py: {output_dir} is already done (see its results.jsonl); nothing to do. "
            f"Delete that directory to run the job again.")


# ---------------------------------------------------------------------------------------
# 3. Build, in upstream's order (everything stays in memory until the job is accepted)

def seed_everything(seed):
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def build_dataset(dataset_class, args, hparams):
    # Ours: a dataset that is a fresh draw in every trial also takes the trial seed.
    extra = {"trial_seed": args.trial_seed} if dataset_class.SEEDED_BY_TRIAL else {}
    try:
        dataset = dataset_class(args.data_dir, args.test_envs, hparams, **extra)
    except datasets.DatasetNotFoundError as e:
        raise BadInput(str(e)) from None
    except datasets.DatasetArgumentError as e:  # before ValueError: it says what to do
        raise BadInput(str(e)) from None
    except ImportError as e:  # an optional extra (e.g. wilds) that is not installed
        raise BadInput(str(e)) from None
    except ValueError as e:  # upstream's 'Data directory not specified!'
        raise BadInput(f"{e} Pass --data_dir DIR (see python -m domainbed.scripts.download).") from None
    return dataset


def make_splits(dataset, args, hparams):
    """(in_splits, out_splits, uda_splits), each a list of (split, sampling weights)."""
    in_splits, out_splits, uda_splits = [], [], []
    for env_i, env in enumerate(dataset):
        out, in_ = misc.split_dataset(env, int(len(env) * args.holdout_fraction),
                                      misc.seed_hash(args.trial_seed, env_i))
        uda = []
        if env_i in args.test_envs:
            uda, in_ = misc.split_dataset(in_, int(len(in_) * args.uda_holdout_fraction),
                                          misc.seed_hash(args.trial_seed, env_i))
        if len(out) == 0 or len(in_) == 0:
            # Evaluating an empty split divides by zero (upstream crashes at step 0).
            raise BadInput(
                f"--holdout_fraction {args.holdout_fraction} leaves env {env_i} of {args.dataset} "
                f"({len(env)} items) an empty {'out' if len(out) == 0 else 'in'}-split; "
                f"choose a fraction in (0, 1) that leaves both splits non-empty (e.g. 0.2)")
        weigh = misc.make_weights_for_balanced_classes if hparams["class_balanced"] else None
        in_splits.append((in_, weigh(in_) if weigh else None))
        out_splits.append((out, weigh(out) if weigh else None))
        if len(uda):
            uda_splits.append((uda, weigh(uda) if weigh else None))
    if args.task == "domain_adaptation" and not uda_splits:
        raise BadInput("--task domain_adaptation needs unlabeled test-env data: set "
                       "--uda_holdout_fraction above 0 (e.g. 0.2)")
    return in_splits, out_splits, uda_splits


def make_loaders(dataset, args, hparams, splits):
    """Training streams (each seeded from --seed and its index: deterministic and
    resumable) and the evaluation loaders with upstream's names."""
    from domainbed.lib.fast_data_loader import FastDataLoader, InfiniteDataLoader

    in_splits, out_splits, uda_splits = splits
    batch_size = hparams["batch_size"]

    def stream(split, weights, kind, i):
        return InfiniteDataLoader(dataset=split, weights=weights, batch_size=batch_size,
                                  num_workers=dataset.N_WORKERS,
                                  seed=misc.seed_hash(args.seed, kind, i))

    train_loaders = [stream(split, w, "train_stream", i)
                     for i, (split, w) in enumerate(in_splits) if i not in args.test_envs]
    uda_loaders = [stream(split, w, "uda_stream", i) for i, (split, w) in enumerate(uda_splits)]
    eval_splits = in_splits + out_splits + uda_splits
    eval_batch_size = getattr(dataset, "EVAL_BATCH_SIZE", 64)
    eval_loaders = [FastDataLoader(dataset=split, batch_size=eval_batch_size,
                                   num_workers=dataset.N_WORKERS)
                    for split, _ in eval_splits]
    eval_names = ([f"env{i}_in" for i in range(len(in_splits))]
                  + [f"env{i}_out" for i in range(len(out_splits))]
                  + [f"env{i}_uda" for i in range(len(uda_splits))])  # upstream: uda list index
    return train_loaders, uda_loaders, list(zip(eval_names, eval_loaders))


def build_algorithm(algorithm_class, dataset, args, hparams, device):
    from domainbed.networks import WeightsUnavailableError

    try:
        algorithm = algorithm_class(dataset.input_shape, dataset.num_classes,
                                    len(dataset) - len(args.test_envs), hparams)
    except WeightsUnavailableError as e:
        raise BadInput(str(e)) from None
    return algorithm.to(device)


class Job:
    """Everything one run needs, built before anything is written."""

    def __init__(self, args, hparams, dataset, in_split_lengths, algorithm, train_loaders,
                 uda_loaders, evals, device):
        self.args = args
        self.hparams = hparams
        self.dataset = dataset
        self.in_split_lengths = in_split_lengths  # all envs' (test envs too), for epochs
        self.algorithm = algorithm
        self.train_loaders = train_loaders
        self.uda_loaders = uda_loaders
        self.evals = evals
        self.device = device

    @property
    def streams(self):
        return self.train_loaders + self.uda_loaders


def prepare(args):
    """Validation and build without the output directory: the Job in memory (benchmark)."""
    return build(validate(args))


def build(plan):
    """The dataset, its splits and loaders and the algorithm, in memory. Returns a Job."""
    from domainbed.lib.device import get_device

    args, hparams = plan.args, plan.hparams
    seed_everything(args.seed)
    device = get_device()
    dataset = build_dataset(plan.dataset_class, args, hparams)
    if plan.env_names is None:   # the environments are known now
        check_test_envs(args.test_envs, len(dataset), None, args.dataset)
    splits = make_splits(dataset, args, hparams)
    train_loaders, uda_loaders, evals = make_loaders(dataset, args, hparams, splits)
    algorithm = build_algorithm(plan.algorithm_class, dataset, args, hparams, device)
    in_split_lengths = [len(split) for split, _ in splits[0]]
    return Job(args, hparams, dataset, in_split_lengths, algorithm, train_loaders, uda_loaders,
               evals, device)


# ---------------------------------------------------------------------------------------
# Output

def _installed_version(distribution):
    """A package's version without importing it (importing torchvision costs seconds)."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_environment():
    import torch

    print("Environment:")
    print(f"\tPython: {sys.version.split(' ')[0]}")
    print(f"\tPyTorch: {torch.__version__}")
    print(f"\tTorchvision: {_installed_version('torchvision')}")
    print(f"\tCUDA: {torch.version.cuda}")
    print(f"\tCUDNN: {torch.backends.cudnn.version()}")
    print(f"\tNumPy: {np.__version__}")
    print(f"\tPIL: {_installed_version('Pillow')}")


def print_sorted_block(title, mapping):
    print(f"{title}:")
    for key, value in sorted(mapping.items()):
        print(f"\t{key}: {value}")


class Logs:
    """`with Logs(output_dir):` upstream's out.txt and err.txt through `misc.Tee`: stdout
    into out.txt, stderr into err.txt and out.txt, as upstream's, and to the console's
    *stderr* (upstream's went to its stdout, which hid tracebacks from launchers' error
    logs). Logging never stops the run (a full disk drops the file). The console streams
    are restored on exit."""

    def __init__(self, output_dir):
        self.output_dir = output_dir

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        console_out, console_err = self.saved
        self.out = misc.Tee(os.path.join(self.output_dir, "out.txt"), console=console_out,
                            keep_going=True)
        self.err = misc.Tee(os.path.join(self.output_dir, "err.txt"), console=console_err,
                            also=self.out, keep_going=True)
        sys.stdout, sys.stderr = self.out, self.err
        return self

    def log_only(self, message):
        """Into err.txt and out.txt, not the console."""
        self.err.log_only(message)

    def __exit__(self, *exc):
        for tee in (self.err, self.out):
            tee.close()
        sys.stdout, sys.stderr = self.saved
        return False


def save_model(job, filename, **extra):
    """Upstream's model.pkl dict. `model_dict` is the module's weights and buffers under
    upstream's keys (loads strict into upstream's class; for `X+SWAD` / `X+MA` the
    averaged model, into X's class); the training state is checkpoint.pt's."""
    if job.args.skip_model_save:
        return
    from domainbed.lib.model_state import model_state_dict

    dump = {
        "args": vars(job.args),
        "model_input_shape": job.dataset.input_shape,
        "model_num_classes": job.dataset.num_classes,
        "model_num_domains": len(job.dataset) - len(job.args.test_envs),
        "model_hparams": job.hparams,
        "model_dict": model_state_dict(job.algorithm),
    }
    dump.update(extra)
    checkpoint.save_atomic(dump, os.path.join(job.args.output_dir, filename))


def save_selected_model(job, record, best_val_acc):
    """With DOMAINBED_SAVE_SELECTED set: model_iid.pkl is the model of the record with the
    best training-domain validation accuracy so far (the first of equals), the checkpoint
    training-domain validation selects in this run; the oracle's is the last, model.pkl.
    Returns the best accuracy so far."""
    if not model_files.save_selected_enabled():
        return best_val_acc
    val_acc = model_files.training_domain_val_acc(record, job.args.test_envs)
    if best_val_acc is not None and not val_acc > best_val_acc:
        return best_val_acc
    save_model(job, model_files.SELECTED_MODEL_FILE, step=record["step"], val_acc=val_acc)
    return val_acc


# ---------------------------------------------------------------------------------------
# 4. The training loop and 5. the finish

class StopRequest:
    """Remembers a SIGTERM / SIGUSR1; the loop checks it between steps."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum, frame):
        self.signum = signum


class NonFiniteLoss(Exception):
    pass


def check_finite(step_vals, step):
    for key, value in step_vals.items():
        if isinstance(value, numbers.Real) and not math.isfinite(value):
            raise NonFiniteLoss(f"non-finite {key} ({value}) at step {step}")


def next_minibatches(job):
    device = job.device
    minibatches = [(x.to(device), y.to(device)) for x, y in
                   (next(loader) for loader in job.train_loaders)]
    unlabeled = None
    if job.args.task == "domain_adaptation":
        unlabeled = [x.to(device) for x, _ in (next(loader) for loader in job.uda_loaders)]
    return minibatches, unlabeled


def warn(message):
    print(f"train.py: warning: {message}", file=sys.stderr)


def missing_record_steps(output_dir, next_step, n_steps, checkpoint_freq, identity):
    """The record steps before `next_step` that results.jsonl lacks (e.g. lost lines)."""
    try:
        lines = jobdir.read_records_file(os.path.join(output_dir, jobdir.RESULTS_FILE))
    except jobdir.NotRegularFileError:
        lines = []
    present = {record["step"] for _, _, record in lines
               if checkpoint.is_own_record(record, identity)}
    return [step for step in range(next_step)
            if (step % checkpoint_freq == 0 or step == n_steps - 1) and step not in present]


def start_or_resume(job, n_steps, checkpoint_freq):
    """Load checkpoint.pt if there is one; trim results.jsonl to match. Returns
    (first step to run, running lists, best training-domain validation accuracy so far).

    A checkpoint that cannot be read or does not fit the job is set aside as
    `checkpoint.pt.corrupt-N` (never deleted) and the job starts from step 0. So does a
    job whose results.jsonl lacks records before the checkpoint's step (records never lie:
    a done job has every record)."""
    out = job.args.output_dir
    checkpoint.remove_stale_temporaries(out)
    next_step, running_lists = 0, {}
    try:
        state = checkpoint.load_checkpoint(out)
        missing = []
        if isinstance(state, dict) and isinstance(state.get("next_step"), int):
            missing = missing_record_steps(out, state["next_step"], n_steps, checkpoint_freq,
                                           identifying_args(job.args))
        if missing:
            warn(f"{jobdir.RESULTS_FILE} lacks the records of steps "
                 f"{', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''} "
                 f"before the checkpoint's step {state['next_step']}; starting again from "
                 "step 0 to write them")
            state = None
        if state is not None:
            next_step, running_lists = checkpoint.restore_training_state(
                state, job.algorithm, job.streams)
            print(f"Resuming from {checkpoint.CHECKPOINT_FILE} at step {next_step}")
    except checkpoint.CheckpointError as e:
        kept_as = checkpoint.set_aside(out)
        if kept_as is None:
            raise BadInput(f"{os.path.join(out, checkpoint.CHECKPOINT_FILE)} is unusable ({e}) "
                           "and cannot be renamed; move it away and rerun") from None
        warn(f"{checkpoint.CHECKPOINT_FILE} is unusable ({e}); kept as {kept_as}, "
             "starting again from step 0")
        next_step, running_lists = 0, {}
    # Records beyond the checkpoint (or any, on a fresh start) would be written twice.
    try:
        kept_as = checkpoint.truncate_records(os.path.join(out, jobdir.RESULTS_FILE), next_step,
                                              identifying_args(job.args))
    except jobdir.NotRegularFileError:
        raise BadInput(f"{os.path.join(out, jobdir.RESULTS_FILE)} is not a regular file; "
                       "move it away and rerun") from None
    if kept_as:
        warn(f"{jobdir.RESULTS_FILE} had lines that are not records; dropped them, the "
             f"original is kept as {kept_as}")
    best_val_acc = None
    if model_files.save_selected_enabled():   # the best so far is that of the records kept
        best_val_acc = model_files.best_val_acc_of_records(
            os.path.join(out, jobdir.RESULTS_FILE), job.args.test_envs)
    return next_step, collections.defaultdict(list, running_lists), best_val_acc


class TrainingLoop:
    """4. The steps from the last checkpoint (or 0) to the end, a record at every
    checkpoint step; 5. the finish. `step` is the step being run, for the failure path."""

    def __init__(self, job):
        self.job = job
        self.step = 0
        args = job.args
        self.n_steps = args.steps or job.dataset.N_STEPS
        self.checkpoint_freq = args.checkpoint_freq or job.dataset.CHECKPOINT_FREQ
        self.steps_per_epoch = min(n / job.hparams["batch_size"] for n in job.in_split_lengths)
        self.last_header = None    # the record table's header printed last
        self.best_val_acc = None   # of the records so far (DOMAINBED_SAVE_SELECTED)
        self.started = self.start_step = None   # this process's start (heartbeats)

    def run(self, stop):
        """Train the remaining steps, then finish. Returns the exit code."""
        job, out = self.job, self.job.args.output_dir
        n_steps, checkpoint_freq = self.n_steps, self.checkpoint_freq
        start_step, running_lists, self.best_val_acc = start_or_resume(job, n_steps,
                                                                       checkpoint_freq)
        self.scalar_log = tensorboard_logs.open_log(out, start_step,
                                                    getattr(job, "tensorboard", False))
        self.started = last_beat = time.time()
        self.start_step = start_step
        jobdir.write_heartbeat(out, start_step, n_steps, self.started, start_step)
        bar = progress_bar(n_steps, initial=start_step)
        try:
            for step in range(start_step, n_steps):
                self.step = step
                step_start_time = time.time()
                minibatches, unlabeled = next_minibatches(job)
                step_vals = job.algorithm.update(minibatches, unlabeled)
                check_finite(step_vals, step)
                running_lists["step_time"].append(time.time() - step_start_time)
                for key, value in step_vals.items():
                    running_lists[key].append(value)
                bar.update(1)

                if step % checkpoint_freq == 0 or step == n_steps - 1:
                    self.write_checkpoint(step, running_lists, bar)
                    last_beat = time.time()
                elif stop.signum is not None:
                    self.save_state(step + 1, running_lists)
                elif time.time() - last_beat >= jobdir.HEARTBEAT_PERIOD_S:
                    jobdir.write_heartbeat(out, step + 1, n_steps, self.started, start_step)
                    last_beat = time.time()

                if stop.signum is not None:
                    name = signal.Signals(stop.signum).name
                    print(f"train.py: {name} received: stopped after step {step} with a "
                          f"checkpoint; rerun the same command to resume", file=sys.stderr)
                    return 128 + stop.signum
        finally:
            bar.close()
            self.scalar_log.close()
        return self.finish()

    def write_checkpoint(self, step, running_lists, bar):
        """A checkpoint step's results: the record (results.jsonl, the out.txt table), the
        models asked for, and the training state (checkpoint.pt, heartbeat.json)."""
        job = self.job
        record = self.write_record(step, running_lists, bar)
        self.scalar_log(record)
        running_lists.clear()
        if job.args.save_model_every_checkpoint:
            save_model(job, f"model_step{step}.pkl")
        self.best_val_acc = save_selected_model(job, record, self.best_val_acc)
        self.save_state(step + 1, running_lists)

    def write_record(self, step, running_lists, bar):
        """The record of `step`: means of the step values, accuracies; a row of the out.txt
        table (its header when the keys change) and one line of results.jsonl."""
        from domainbed.lib.device import peak_memory_gb

        job = self.job
        results = {"step": step, "epoch": step / self.steps_per_epoch}
        for key, values in running_lists.items():
            results[key] = np.mean(values)
        before_record = getattr(job.algorithm, "before_record", None)
        if before_record is not None:   # SWAD: choose the averaged model this record evaluates
            results.update(before_record(job.evals, job.args.test_envs, job.device))
        for name, loader in job.evals:
            results[name + "_acc"] = misc.accuracy(job.algorithm, loader, None, job.device)
        results["mem_gb"] = peak_memory_gb(job.device)

        keys = sorted(results)
        bar.clear()
        if keys != self.last_header:
            misc.print_row(keys, colwidth=12)
            self.last_header = keys
        misc.print_row([results[key] for key in keys], colwidth=12)
        bar.refresh()

        results.update({"hparams": job.hparams, "args": vars(job.args)})
        misc.append_json_line(os.path.join(job.args.output_dir, "results.jsonl"), results)
        return results

    def save_state(self, next_step, running_lists):
        out = self.job.args.output_dir
        checkpoint.save_checkpoint(out, checkpoint.training_state(
            self.job.algorithm, self.job.streams, next_step, running_lists))
        jobdir.write_heartbeat(out, next_step, self.n_steps, self.started, self.start_step)

    def finish(self):
        """5. model.pkl, then `done`; the checkpoint is removed (a done job never resumes)."""
        out = self.job.args.output_dir
        save_model(self.job, "model.pkl")
        jobdir.write_done(out)
        checkpoint.remove_checkpoint(out)  # spare the disk
        jobdir.write_heartbeat(out, self.n_steps, self.n_steps, self.started, self.start_step)
        return 0


def run(job):
    """4-5 in the job's logs: the header blocks, job.json, the loop and the finish. Returns
    the exit code; every failure goes through `record_failure`."""
    out = job.args.output_dir
    loop = TrainingLoop(job)
    with Logs(out) as logs, StopRequest() as stop:
        try:
            print_environment()
            print_sorted_block("Args", vars(job.args))
            print_sorted_block("HParams", job.hparams)
            jobdir.write_job_identity(out, identifying_args(job.args))
            jobdir.clear_failed(out)
            return loop.run(stop)
        except BadInput:
            raise
        except Exception as error:
            return record_failure(job, error, loop.step, stop, logs)


def record_failure(job, error, step, stop, logs):
    """The one failure path: what a run that stopped on `error` at `step` leaves (`failed`,
    the traceback in err.txt and out.txt, no temporary) and how it exits. Returns the exit
    code, or raises the JobError or the error itself that main() and cli() report."""
    out = job.args.output_dir
    if isinstance(error, NonFiniteLoss):
        jobdir.try_write_failed(out, str(error), step)
        print(f"train.py: error: {error}; the run stopped (no 'done'). Try a smaller learning "
              f"rate, e.g. --hparams '{{\"lr\": 1e-4}}'", file=sys.stderr)
        return EXIT_NON_FINITE
    if stop.signum is not None:
        # Stopping anyway (e.g. the launcher also killed the data workers): the last
        # checkpoint stands, and this is no failure of the job.
        return 128 + stop.signum
    logs.log_only(traceback.format_exc())   # the console gets one line, after the logs close
    checkpoint.remove_own_temporaries(out)
    recorded = jobdir.try_write_failed(out, f"{type(error).__name__}: {error}", step)
    if isinstance(error, OSError):
        # Writing the job directory failed (a full disk, permissions...).
        raise WriteError(io_error_message(error, step, recorded)) from None
    error.train_py_where = (f"at step {step}; `failed` written, the traceback is in "
                            f"{os.path.join(out, 'err.txt')}")
    raise error


def io_error_message(error, step, recorded):
    filename = getattr(error, "filename", None)
    where = f" ({re.sub(r'[.]tmp[.][0-9]+$', '', str(filename))})" if filename else ""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        what = f"the disk is full{where}"
        todo = "free some space, then rerun the same command: it resumes from the last checkpoint"
    else:
        what = f"{type(error).__name__}: {error.strerror or error}{where}"
        todo = "fix the cause, then rerun the same command: it resumes from the last checkpoint"
    marker = "`failed` written" if recorded else "no `failed` written (no room)"
    return f"{what} at step {step}; {marker}; {todo}"


# ---------------------------------------------------------------------------------------
# Main

def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        tensorboard = tensorboard_requested(args)            # ours: not one of the job's args
        with setting_up():
            plan = validate(args)                            # 1
        with JobDirectoryLock(args) as lock:                 # 2
            with setting_up():
                if lock.is_done():
                    print(already_done_message(args.output_dir), file=sys.stderr)
                    return 0
                job = build(plan)                            # 3
                job.tensorboard = tensorboard
            lock.keep()
            return run(job)                                  # 4, 5
    except JobError as e:
        return report("train.py", e)


def tensorboard_requested(args):
    """Whether to log TensorBoard scalars (--tensorboard, popped from the args so that it
    never reaches records or the job hash, or DOMAINBED_TENSORBOARD)."""
    try:
        return tensorboard_logs.requested(vars(args).pop("tensorboard", False))
    except tensorboard_logs.TensorBoardUnavailable as e:
        raise BadInput(str(e)) from None


def cli(argv=None):
    """The command line: main() with no traceback on the console. An unexpected error is
    one line (the traceback is in the job's err.txt), exit code 1."""
    def describe(error):
        where = getattr(error, "train_py_where", "before training started")
        return (f"{type(error).__name__}: {squeeze(error)} ({where}); rerun the same command "
                "to resume")

    return one_line_errors(main, argv, "train.py", "interrupted (Ctrl-C); rerun the same "
                           "command to resume from the last checkpoint", describe)


if __name__ == "__main__":
    sys.exit(cli())
