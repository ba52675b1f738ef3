"""The training loop: the steps from the last checkpoint (or 0) to the end, a record and
the training state at every checkpoint step, stop requests between steps; then the finish
(model.pkl, `done`)."""
import math
import numbers
import os
import signal
import sys
import threading
import time

import numpy as np

from domainbed.lib import jobdir, misc
from domainbed.training import checkpoint, tensorboard_logs
from domainbed.lib.progress import progress_bar
from domainbed.training import precision
from domainbed.training.models import save_model, save_selected_model
from domainbed.training.resume import start_or_resume
from domainbed.training.timing import PhaseClock

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)   # exit code: 128 + signal number


class StopRequest:
    """Remembers a SIGTERM / SIGUSR1; the loop checks it between steps. (Signals reach
    the main thread only: a run in another thread is not stopped this way.)"""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
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
    device, as_input = job.device, precision.input_converter(job.config)  # channels_last
    minibatches = [(as_input(x.to(device)), y.to(device)) for x, y in
                   (next(loader) for loader in job.train_loaders)]
    unlabeled = None
    if job.config.task == "domain_adaptation":
        unlabeled = [as_input(x.to(device))
                     for x, _ in (next(loader) for loader in job.uda_loaders)]
    return minibatches, unlabeled


class TrainingLoop:
    """The steps from the last checkpoint (or 0) to the end, a record at every checkpoint
    step; then the finish. `step` is the step being run, for the failure path."""

    def __init__(self, job):
        self.job = job
        self.step = 0
        config = job.config
        self.n_steps = config.steps or job.dataset.N_STEPS
        self.checkpoint_freq = config.checkpoint_freq or job.dataset.CHECKPOINT_FREQ
        self.steps_per_epoch = min(n / job.hparams["batch_size"] for n in job.in_split_lengths)
        self.last_header = None    # the record table's header printed last
        self.best_val_acc = None   # of the records so far (DOMAINBED_SAVE_SELECTED)
        self.started = self.start_step = None   # this process's start (heartbeats)
        self.clock = None                        # where the wall time goes (timing.py)
        self.writer = checkpoint.CheckpointWriter(config.output_dir)

    def run(self, stop):
        """Train the remaining steps, then finish. Returns the exit code. Every checkpoint
        written in the background is on disk when this returns or raises."""
        self.clock = PhaseClock(self.job.started)
        try:
            code = self.train(stop)
            with self.clock("checkpoints"):
                self.writer.wait()
        except BaseException as error:
            self.writer.wait(raise_error=False)
            step = getattr(error, "checkpoint_step", None)
            if step is not None:   # a background write failed: name the step it belongs to
                self.step = step
            raise
        return self.finish() if code is None else code

    def train(self, stop):
        """The steps; None when all are done, else the exit code of a stop request."""
        job, out = self.job, self.job.config.output_dir
        n_steps, checkpoint_freq = self.n_steps, self.checkpoint_freq
        start_step, running_lists, self.best_val_acc = start_or_resume(job, n_steps,
                                                                       checkpoint_freq)
        self.scalar_log = tensorboard_logs.open_log(out, start_step, job.tensorboard)
        self.started = last_beat = time.time()
        self.start_step = start_step
        jobdir.write_heartbeat(out, start_step, n_steps, self.started, start_step)
        bar = progress_bar(n_steps, initial=start_step)
        try:
            for step in range(start_step, n_steps):
                self.step = step
                step_start_time = time.time()
                with self.clock("data"):
                    minibatches, unlabeled = next_minibatches(job)
                with self.clock("steps"), precision.autocast(job.config, job.device):
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
                    with self.clock("checkpoints"):
                        self.save_state(step + 1, running_lists)
                elif time.time() - last_beat >= jobdir.HEARTBEAT_PERIOD_S:
                    jobdir.write_heartbeat(out, step + 1, n_steps, self.started, start_step)
                    last_beat = time.time()

                if stop.signum is not None:
                    name = signal.Signals(stop.signum).name
                    self.writer.wait()   # the checkpoint is on disk before we say so
                    print(f"train.py: {name} received: stopped after step {step} with a "
                          f"checkpoint; rerun the same command to resume", file=sys.stderr)
                    return 128 + stop.signum
        finally:
            bar.close()
            self.scalar_log.close()
        return None

    def write_checkpoint(self, step, running_lists, bar):
        """A checkpoint step's results: the record (results.jsonl, the out.txt table), the
        models asked for, and the training state (checkpoint.pt, heartbeat.json)."""
        job = self.job
        with self.clock("evaluation"):
            record = self.write_record(step, running_lists, bar)
        self.scalar_log(record)
        running_lists.clear()
        with self.clock("model files"):
            if job.config.save_model_every_checkpoint:
                save_model(job, f"model_step{step}.pkl")
            self.best_val_acc = save_selected_model(job, record, self.best_val_acc)
        with self.clock("checkpoints"):
            self.save_state(step + 1, running_lists)

    def write_record(self, step, running_lists, bar):
        """The record of `step`: means of the step values, accuracies; a row of the out.txt
        table (its header when the keys change) and one line of results.jsonl."""
        from domainbed.lib.device import peak_memory_gb

        job = self.job
        results = {"step": step, "epoch": step / self.steps_per_epoch}
        for key, values in running_lists.items():
            results[key] = np.mean(values)
        evals = precision.eval_loaders(job.evals, job.config, job.device)   # channels_last
        with precision.autocast(job.config, job.device):   # --precision bf16
            # The algorithm's hook (SWAD: choose the averaged model it is evaluated as),
            # given upstream's list of test envs, as the dataset classes are.
            test_envs = list(job.config.test_envs)
            results.update(job.algorithm.before_record(evals, test_envs, job.device))
            for name, loader in evals:
                results[name + "_acc"] = misc.accuracy(job.algorithm, loader, None, job.device)
            if job.config.metrics == "all":
                from domainbed.training import evaluation
                for name, loader in evals:
                    results.update(evaluation.split_metrics(name, job.algorithm, loader,
                                                            job.device))
        results["mem_gb"] = peak_memory_gb(job.device)

        # The table shows numbers; a confusion matrix (--metrics all) is in results.jsonl.
        keys = sorted(k for k in results if not k.endswith("_confusion"))
        bar.clear()
        if keys != self.last_header:
            misc.print_row(keys, colwidth=12)
            self.last_header = keys
        misc.print_row([results[key] for key in keys], colwidth=12)
        bar.refresh()

        results.update({"hparams": job.hparams, "args": job.config.record_args()})
        misc.append_json_line(os.path.join(job.config.output_dir, "results.jsonl"), results)
        return results

    def save_state(self, next_step, running_lists):
        """Hand the training state after `next_step - 1` to the background writer."""
        out = self.job.config.output_dir
        self.writer.save(checkpoint.training_state(
            self.job.algorithm, self.job.streams, next_step, running_lists))
        jobdir.write_heartbeat(out, next_step, self.n_steps, self.started, self.start_step)

    def finish(self):
        """model.pkl, then `done`; the checkpoint is removed (a done job never resumes).
        The last line of out.txt says where the run's wall time went."""
        out = self.job.config.output_dir
        with self.clock("model files"):
            save_model(self.job, "model.pkl")
        jobdir.write_done(out)
        checkpoint.remove_checkpoint(out)  # spare the disk
        jobdir.write_heartbeat(out, self.n_steps, self.n_steps, self.started, self.start_step)
        print(self.clock.summary())
        return 0
