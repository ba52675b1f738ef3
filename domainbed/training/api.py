"""`domainbed.train(...)`: one training job from Python, with train.py's arguments as
keywords; returns the job's records."""
import json
import os
import signal

from domainbed.lib import jobdir
from domainbed.config import RunConfig
from domainbed.training.errors import EXIT_NON_FINITE, BadInput, RunStopped, non_finite_advice
from domainbed.training.run import run_job


def train(*, dataset, algorithm, test_envs, output_dir, data_dir, hparams=None,
          hparams_seed=0, trial_seed=0, seed=0, steps=None, checkpoint_freq=None,
          holdout_fraction=0.2, uda_holdout_fraction=0, skip_model_save=False,
          save_model_every_checkpoint=False, task="domain_generalization", pipeline="default",
          precision="fp32", memory_format="contiguous", metrics="accuracy", tensorboard=False):
    """Run one job as `python -m domainbed.scripts.train` does with the same flags (same
    job directory, files and records; a finished job is not run again, an interrupted one
    resumes) and return its records: the dicts of OUTPUT_DIR/results.jsonl.

    pipeline, precision, memory_format, metrics: the speed options (train.py's flags of
    those names; the defaults leave the job upstream's); tensorboard: also log TensorBoard
    scalars.
    test_envs: a list of environment indices (or one index); hparams: a dict or a JSON
    string of overrides, None for none; data_dir: None for datasets that read no files.
    A refusal (bad arguments, another job's directory, a failed write) raises a BadInput
    (or one of its kinds, e.g. `ValidationError`) or WriteError (`domainbed.errors`'
    DomainBedErrors, with train.py's exit codes) and leaves no trace; a run that ends without `done` raises RunStopped."""
    for name, value in (("output_dir", output_dir), ("data_dir", data_dir)):
        if not isinstance(value, (str, os.PathLike)) and not (name == "data_dir" and value is None):
            raise BadInput(f"train() needs {name} as a path (a str or os.PathLike), got "
                           f"{value!r}; e.g. {name}='train_output/job1'")
    if isinstance(hparams, dict):
        hparams = json.dumps(hparams, sort_keys=True)
    test_envs = [test_envs] if isinstance(test_envs, int) else list(test_envs)
    config = RunConfig(
        data_dir=None if data_dir is None else os.fspath(data_dir), dataset=dataset,
        algorithm=algorithm, task=task, hparams=hparams, hparams_seed=hparams_seed,
        trial_seed=trial_seed, seed=seed, steps=steps, checkpoint_freq=checkpoint_freq,
        test_envs=test_envs, output_dir=os.fspath(output_dir),
        holdout_fraction=holdout_fraction, uda_holdout_fraction=uda_holdout_fraction,
        skip_model_save=skip_model_save, save_model_every_checkpoint=save_model_every_checkpoint,
        pipeline=pipeline, precision=precision, memory_format=memory_format, metrics=metrics,
        tensorboard=tensorboard)
    code = run_job(config)
    if code == EXIT_NON_FINITE:
        raise RunStopped(f"a non-finite loss stopped the run in {config.output_dir} (no 'done'; "
                         f"see its err.txt). {non_finite_advice(overrides_of(hparams))}", code)
    if code:
        raise RunStopped(f"{signal.Signals(code - 128).name} stopped the run in "
                         f"{config.output_dir} after a checkpoint; call train() again with the "
                         "same arguments to resume", code)
    return read_records(config.output_dir)


def overrides_of(hparams):
    """The JSON overrides as a dict (whatever they are, for a message only)."""
    try:
        value = json.loads(hparams) if hparams else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def read_records(output_dir):
    """The records of a job directory's results.jsonl, in order."""
    lines = jobdir.read_records_file(os.path.join(output_dir, jobdir.RESULTS_FILE))
    return [record for _, _, record in lines if record is not None]
