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
"""
import collections
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
from domainbed.lib import checkpoint, jobdir, misc, validation
from domainbed.lib.cli import OneLineErrorParser
from domainbed.lib.progress import progress_bar
from domainbed.lib.registry import PluginError

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_IO_ERROR = 4     # writing the job directory failed (disk full, permissions...)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)   # exit code: 128 + signal number

# Args that do not change what a job computes: they may differ between the starts of one
# job. (data_dir: a dataset may move without orphaning its jobs.)
NON_IDENTIFYING_ARGS = ("output_dir", "data_dir", "skip_model_save", "save_model_every_checkpoint")


class BadInput(Exception):
    """A problem with the command line or the output directory; the message says what to do."""


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
    return parser


# ---------------------------------------------------------------------------------------
# Validation (writes nothing)

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


def check_output_dir(args):
    """Refuse a directory of another job. Returns True when this job is already done."""
    try:
        jobdir.check_job_identity(args.output_dir, identifying_args(args))
    except jobdir.JobIdentityError as e:
        raise BadInput(str(e)) from None
    return jobdir.is_done(args.output_dir)


# ---------------------------------------------------------------------------------------
# Set-up, in upstream's order (everything stays in memory until the job is accepted)

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
    check_test_envs(args.test_envs, len(dataset), dataset_class.environment_names(hparams),
                    args.dataset)
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


class LogTee:
    """Console plus log file(s). A write that fails (a full disk, a closed console) never
    stops the run: the stream is dropped and the first error kept in `error`."""

    def __init__(self, console, path):
        self.console = console
        self.error = None
        self.file = None
        try:
            self.file = open(path, "a")
        except OSError as e:
            self.error = e

    def _write_file(self, stream, message):
        if stream is None or stream.closed:
            return
        try:
            stream.write(message)
            stream.flush()
        except (OSError, ValueError) as e:
            self.error = self.error or e
            if stream is self.file:
                try:
                    self.file.close()
                except OSError:
                    pass
                self.file = None

    def _write_console(self, message):
        try:
            self.console.write(message)
            self.console.flush()
        except (OSError, ValueError):
            pass

    def write(self, message):
        self._write_console(message)
        self._write_file(self.file, message)

    def flush(self):
        pass  # every write is flushed

    def isatty(self):
        return False

    def close(self):
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None


class StderrTee(LogTee):
    """stderr goes to err.txt and out.txt, as upstream's, and to the console's *stderr*
    (upstream's went to its stdout, which hid tracebacks from launchers' error logs)."""

    def __init__(self, err_path, out_tee):
        super().__init__(sys.stderr, err_path)
        self.out_tee = out_tee

    def write(self, message):
        self._write_console(message)
        self.log_only(message)

    def log_only(self, message):
        """Into the log files but not the console."""
        self._write_file(self.file, message)
        self.out_tee._write_file(self.out_tee.file, message)


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


def save_selected_model(job, record):
    """With DOMAINBED_SAVE_SELECTED set: model_iid.pkl is the model of the record with the
    best training-domain validation accuracy so far (the first of equals), the checkpoint
    training-domain validation selects in this run; the oracle's is the last, model.pkl."""
    if not model_files.save_selected_enabled():
        return
    val_acc = model_files.training_domain_val_acc(record, job.args.test_envs)
    if job.best_val_acc is not None and not val_acc > job.best_val_acc:
        return
    save_model(job, model_files.SELECTED_MODEL_FILE, step=record["step"], val_acc=val_acc)
    job.best_val_acc = val_acc


# ---------------------------------------------------------------------------------------
# Training

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
        self.step = 0            # the step being run (for `failed`)
        self.last_header = None
        self.best_val_acc = None  # of the records so far (DOMAINBED_SAVE_SELECTED)

    @property
    def streams(self):
        return self.train_loaders + self.uda_loaders


def next_minibatches(job):
    device = job.device
    minibatches = [(x.to(device), y.to(device)) for x, y in
                   (next(loader) for loader in job.train_loaders)]
    unlabeled = None
    if job.args.task == "domain_adaptation":
        unlabeled = [x.to(device) for x, _ in (next(loader) for loader in job.uda_loaders)]
    return minibatches, unlabeled


def write_record(job, step, steps_per_epoch, running_lists, bar):
    from domainbed.lib.device import peak_memory_gb

    results = {"step": step, "epoch": step / steps_per_epoch}
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
    if keys != job.last_header:
        misc.print_row(keys, colwidth=12)
        job.last_header = keys
    misc.print_row([results[key] for key in keys], colwidth=12)
    bar.refresh()

    results.update({"hparams": job.hparams, "args": vars(job.args)})
    misc.append_json_line(os.path.join(job.args.output_dir, "results.jsonl"), results)
    return results


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
    (first step to run, running lists).

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
    if model_files.save_selected_enabled():   # the best so far is that of the records kept
        job.best_val_acc = model_files.best_val_acc_of_records(
            os.path.join(out, jobdir.RESULTS_FILE), job.args.test_envs)
    return next_step, collections.defaultdict(list, running_lists)


def train(job, stop):
    """Run the remaining steps. Returns the exit code."""
    args, out = job.args, job.args.output_dir
    steps_per_epoch = min(n / job.hparams["batch_size"] for n in job.in_split_lengths)
    n_steps = args.steps or job.dataset.N_STEPS
    checkpoint_freq = args.checkpoint_freq or job.dataset.CHECKPOINT_FREQ

    start_step, running_lists = start_or_resume(job, n_steps, checkpoint_freq)
    started = last_beat = time.time()
    jobdir.write_heartbeat(out, start_step, n_steps, started, start_step)
    bar = progress_bar(n_steps, initial=start_step)

    def save_state(next_step):
        checkpoint.save_checkpoint(out, checkpoint.training_state(
            job.algorithm, job.streams, next_step, running_lists))
        jobdir.write_heartbeat(out, next_step, n_steps, started, start_step)

    try:
        for step in range(start_step, n_steps):
            job.step = step
            step_start_time = time.time()
            minibatches, unlabeled = next_minibatches(job)
            step_vals = job.algorithm.update(minibatches, unlabeled)
            check_finite(step_vals, step)
            running_lists["step_time"].append(time.time() - step_start_time)
            for key, value in step_vals.items():
                running_lists[key].append(value)
            bar.update(1)

            if step % checkpoint_freq == 0 or step == n_steps - 1:
                record = write_record(job, step, steps_per_epoch, running_lists, bar)
                running_lists.clear()
                if args.save_model_every_checkpoint:
                    save_model(job, f"model_step{step}.pkl")
                save_selected_model(job, record)
                save_state(step + 1)
                last_beat = time.time()
            elif stop.signum is not None:
                save_state(step + 1)
            elif time.time() - last_beat >= jobdir.HEARTBEAT_PERIOD_S:
                jobdir.write_heartbeat(out, step + 1, n_steps, started, start_step)
                last_beat = time.time()

            if stop.signum is not None:
                name = signal.Signals(stop.signum).name
                print(f"train.py: {name} received: stopped after step {step} with a checkpoint;"
                      f" rerun the same command to resume", file=sys.stderr)
                return 128 + stop.signum
    finally:
        bar.close()

    save_model(job, "model.pkl")
    jobdir.write_done(out)
    checkpoint.remove_checkpoint(out)  # a done job never resumes; spare the disk
    jobdir.write_heartbeat(out, n_steps, n_steps, started, start_step)
    return 0


# ---------------------------------------------------------------------------------------
# Main

def prepare(args):
    """Validate and build everything in memory. Returns a Job, or None when already done."""
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
    if check_output_dir(args):
        return None

    from domainbed.lib.device import get_device

    seed_everything(args.seed)
    device = get_device()
    dataset = build_dataset(dataset_class, args, hparams)
    splits = make_splits(dataset, args, hparams)
    train_loaders, uda_loaders, evals = make_loaders(dataset, args, hparams, splits)
    algorithm = build_algorithm(algorithm_class, dataset, args, hparams, device)
    in_split_lengths = [len(split) for split, _ in splits[0]]
    return Job(args, hparams, dataset, in_split_lengths, algorithm, train_loaders, uda_loaders,
               evals, device)


def already_done_message(output_dir):
    return (f"train.py: {output_dir} is already done (see its results.jsonl); nothing to do. "
            f"Delete that directory to run the job again.")


def run_locked(job):
    """Inside the job's lock: Tee the logs, record the job's identity, train."""
    args, out = job.args, job.args.output_dir
    if check_output_dir(args):  # finished while we were building
        print(already_done_message(out), file=sys.stderr)
        return 0
    saved_streams = sys.stdout, sys.stderr
    sys.stdout = LogTee(sys.stdout, os.path.join(out, "out.txt"))
    sys.stderr = StderrTee(os.path.join(out, "err.txt"), sys.stdout)
    io_error = None
    try:
        print_environment()
        print_sorted_block("Args", vars(args))
        print_sorted_block("HParams", job.hparams)
        jobdir.write_job_identity(out, identifying_args(args))
        jobdir.clear_failed(out)
        return train_guarded(job)
    except OSError as e:
        # Writing the job directory failed (a full disk, permissions...): one line on the
        # console, `failed` when there is room for it, no temporary file left behind.
        sys.stderr.log_only(traceback.format_exc())
        checkpoint.remove_own_temporaries(out)
        recorded = jobdir.try_write_failed(out, f"{type(e).__name__}: {e}", job.step)
        io_error = io_error_message(e, job, recorded)
    except BadInput:
        raise
    except Exception as e:
        # Re-raised below, after the streams are restored; the console gets one line from
        # cli(), the log files the traceback (as upstream's Tee gave).
        sys.stderr.log_only(traceback.format_exc())
        checkpoint.remove_own_temporaries(out)
        e.train_py_where = (f"at step {job.step}; `failed` written, the traceback is in "
                            f"{os.path.join(out, 'err.txt')}")
        raise
    finally:
        log_error = sys.stdout.error or sys.stderr.error
        for tee in (sys.stderr, sys.stdout):
            tee.close()
        sys.stdout, sys.stderr = saved_streams
    if log_error is not None and io_error is None:
        warn(f"could not write the logs in {out} ({log_error})")
    print(f"train.py: error: {io_error}", file=sys.stderr)
    return EXIT_IO_ERROR


def io_error_message(error, job, recorded):
    filename = getattr(error, "filename", None)
    where = f" ({re.sub(r'[.]tmp[.][0-9]+$', '', str(filename))})" if filename else ""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        what = f"the disk is full{where}"
        todo = "free some space, then rerun the same command: it resumes from the last checkpoint"
    else:
        what = f"{type(error).__name__}: {error.strerror or error}{where}"
        todo = "fix the cause, then rerun the same command: it resumes from the last checkpoint"
    marker = "`failed` written" if recorded else "no `failed` written (no room)"
    return f"{what} at step {job.step}; {marker}; {todo}"


def train_guarded(job):
    """train() with SIGTERM/SIGUSR1 caught, and `failed` written when it stops on an error."""
    with StopRequest() as stop:
        return _train_or_record_failure(job, stop)


def _train_or_record_failure(job, stop):
    out = job.args.output_dir
    try:
        return train(job, stop)
    except NonFiniteLoss as e:
        jobdir.try_write_failed(out, str(e), job.step)
        print(f"train.py: error: {e}; the run stopped (no 'done'). Try a smaller learning "
              f"rate, e.g. --hparams '{{\"lr\": 1e-4}}'", file=sys.stderr)
        return EXIT_NON_FINITE
    except Exception as e:
        if stop.signum is not None:
            # Stopping anyway (e.g. the launcher also killed the data workers): the last
            # checkpoint stands, and this is no failure of the job.
            return 128 + stop.signum
        if not isinstance(e, (OSError, BadInput)):  # run_locked records an OSError
            jobdir.try_write_failed(out, f"{type(e).__name__}: {e}", job.step)
        raise


def report_bad_input(message):
    print(f"train.py: error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_BAD_INPUT


def acquire_lock(output_dir):
    lock = jobdir.JobLock(output_dir)
    try:
        return lock.acquire()
    except jobdir.JobRunningError as e:
        raise BadInput(str(e)) from None
    except jobdir.JobLockError as e:
        raise BadInput(e.strerror) from None
    except OSError as e:
        raise BadInput(f"cannot use --output_dir {output_dir} ({e.strerror}); "
                       f"choose a writable directory") from None


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        job = prepare(args)
        if job is None:
            print(already_done_message(args.output_dir), file=sys.stderr)
            return 0
        lock = acquire_lock(args.output_dir)
    except BadInput as e:
        return report_bad_input(e)
    except Exception as e:
        # Nothing is written before the lock: whatever building the dataset, the loaders or
        # the algorithm raised comes from this combination of arguments and hparams.
        return report_bad_input(
            f"cannot set up this job ({type(e).__name__}: {' '.join(str(e).split())[:300]}); "
            "check --hparams and the other arguments (see docs/reliability.md)")
    try:
        return run_locked(job)
    except BadInput as e:
        return report_bad_input(e)
    finally:
        lock.release()


def cli(argv=None):
    """The command line: main() with no traceback on the console. An unexpected error is
    one line (the traceback is in the job's err.txt), exit code 1."""
    from domainbed.lib.cli import one_line_errors, squeeze

    def describe(error):
        where = getattr(error, "train_py_where", "before training started")
        return (f"{type(error).__name__}: {squeeze(error)} ({where}); rerun the same command "
                "to resume")

    return one_line_errors(main, argv, "train.py", "interrupted (Ctrl-C); rerun the same "
                           "command to resume from the last checkpoint", describe)


if __name__ == "__main__":
    sys.exit(cli())
