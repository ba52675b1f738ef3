"""Where a run starts: from step 0, or from checkpoint.pt exactly where it stopped, with
results.jsonl trimmed to match (records are never written twice, never missing)."""
import collections
import os
import sys

from domainbed import model_files
from domainbed.lib import jobdir
from domainbed.training import checkpoint
from domainbed.training.errors import BadInput


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
    out = job.config.output_dir
    checkpoint.remove_stale_temporaries(out)
    next_step, running_lists = 0, {}
    try:
        state = checkpoint.load_checkpoint(out)
        missing = []
        if isinstance(state, dict) and isinstance(state.get("next_step"), int):
            missing = missing_record_steps(out, state["next_step"], n_steps, checkpoint_freq,
                                           job.config.identity())
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
                                              job.config.identity())
    except jobdir.NotRegularFileError:
        raise BadInput(f"{os.path.join(out, jobdir.RESULTS_FILE)} is not a regular file; "
                       "move it away and rerun") from None
    if kept_as:
        warn(f"{jobdir.RESULTS_FILE} had lines that are not records; dropped them, the "
             f"original is kept as {kept_as}")
    best_val_acc = None
    if model_files.save_selected_enabled():   # the best so far is that of the records kept
        best_val_acc = model_files.best_val_acc_of_records(
            os.path.join(out, jobdir.RESULTS_FILE), job.config.test_envs)
    return next_step, collections.defaultdict(list, running_lists), best_val_acc
