"""Every DOMAINBED_* environment variable the package reads: one function each, with its
meaning, default and check (torch-free).

Nothing else in the package reads a DOMAINBED_* variable from the environment
(tests/test_architecture.py checks it); they call these functions, which read the
environment when called, never at import (a test or a launcher may change it in between).
A value that cannot be used is a `SettingError` (exit 1) whose one line names the variable
and says what to set. README.md's "Environment variables" table lists the same variables
as `SETTINGS` (tests/lib/test_settings.py checks it).

None of these enters a job's arguments, hash, command string or records.
"""
import contextlib
import os

from domainbed.errors import EXIT_FAILURE, DomainBedError


class SettingError(DomainBedError, ValueError):
    """An environment variable whose value cannot be used; the message names it and says
    what to set (exit 1: the command could not run in this environment)."""

    exit_code = EXIT_FAILURE


class Setting:
    """One environment variable: its name, its default in words and what it does."""

    def __init__(self, name, default, meaning):
        self.name = name
        self.default = default
        self.meaning = meaning

    def text(self, environ=None):
        """The variable's value as it is set (`environ`: os.environ), None when unset."""
        return (os.environ if environ is None else environ).get(self.name)

    def __repr__(self):
        return f"Setting({self.name!r})"


SETTINGS = {}   # name -> Setting, in README.md's order


def _declare(name, default, meaning):
    SETTINGS[name] = Setting(name, default, meaning)
    return SETTINGS[name]


DEVICE = _declare(
    "DOMAINBED_DEVICE", "CUDA when present, else CPU",
    "the torch device every run uses (e.g. `cpu`, `cuda:1`, `mps`)")
THREADS = _declare(
    "DOMAINBED_THREADS", "the usable cores divided by the jobs running at once",
    "CPU threads per job (a whole number >= 1); before OMP_NUM_THREADS")
LOADER_WORKERS = _declare(
    "DOMAINBED_LOADER_WORKERS", "the dataset's (8 for image folders), at most the usable cores",
    "data-loader worker processes per job (a whole number >= 0)")
LOCAL_JOBS = _declare(
    "DOMAINBED_LOCAL_JOBS", "1",
    "jobs the `local` launcher runs side by side (an integer; 1 or less: one at a time)")
POOL_WORKERS = _declare(
    "DOMAINBED_POOL_WORKERS", "the CPU count",
    "warm worker processes of the `pool` launcher (an integer; at least 1 is used)")
JOBS_PER_GPU = _declare(
    "DOMAINBED_JOBS_PER_GPU", "1",
    "jobs per visible GPU of the `multi_gpu` launcher (an integer; it refuses less than 1)")
# The slurm launcher's options (sweep's --launcher_args names) -> their variables.
SLURM = {option: _declare(f"DOMAINBED_SLURM_{suffix}", default, f"the `slurm` launcher's {what}")
         for option, suffix, default, what in (
             ("partition", "PARTITION", "the cluster's default", "partition"),
             ("time_min", "TIME_MIN", "1440", "time limit per job, in minutes"),
             ("gpus_per_node", "GPUS", "1", "GPUs per node"),
             ("cpus_per_task", "CPUS", "8", "CPUs per task"),
             ("mem_gb", "MEM_GB", "32", "memory per job, in GB"),
             ("max_concurrent", "MAX_CONCURRENT", "64",
              "jobs running at once (array parallelism)"),
             ("log_dir", "LOG_DIR", "SWEEP_DIR/slurm_logs", "log directory"),
             ("cluster", "CLUSTER", "Slurm when available",
              "submitit cluster (`local`: run the array here)"))}
PLUGINS = _declare(
    "DOMAINBED_PLUGINS", "none",
    "modules to import before any registry is read (comma-separated import paths): your "
    "algorithms, datasets and launchers")
CACHE = _declare(
    "DOMAINBED_CACHE", "~/.cache/domainbed/decoded",
    "the decoded image cache of `--pipeline fast`")
TENSORBOARD = _declare(
    "DOMAINBED_TENSORBOARD", "off",
    "any value but empty or `0`: every run also writes a TensorBoard log (as `train.py "
    "--tensorboard`)")
SAVE_SELECTED = _declare(
    "DOMAINBED_SAVE_SELECTED", "off",
    "any value but empty or `0`: train.py also keeps `model_iid.pkl`, the model training-domain "
    "validation selects")
CUDA_GRAPHS = _declare(
    "DOMAINBED_CUDA_GRAPHS", "on",
    "`0`: FGMix's step runs without its CUDA graph (on a GPU)")


# ---------------------------------------------------------------------------------------
# Checks

def whole_number(name, minimum, environ=None):
    """The whole number >= `minimum` in the variable `name` (any variable: OMP_NUM_THREADS
    too), None when unset or blank; a SettingError otherwise."""
    text = (os.environ if environ is None else environ).get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise SettingError(f"{name}={text!r} is not a whole number >= {minimum}; "
                           f"unset it or set e.g. {name}={max(minimum, 1)}")
    return value


def _integer(setting, example):
    """The integer in `setting`, None when unset or blank; a SettingError otherwise."""
    text = (setting.text() or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise SettingError(f"{setting.name}={text!r} is not an integer; unset it or set e.g. "
                           f"{setting.name}={example}") from None


def _switch(setting):
    """On unless unset, blank or `0`."""
    return (setting.text() or "").strip() not in ("", "0")


def _text(setting):
    """The value, None when unset or empty."""
    return setting.text() or None


# ---------------------------------------------------------------------------------------
# One function per variable

def device():
    """DOMAINBED_DEVICE: the torch device's name, None when unset (lib/device.py chooses;
    torch itself refuses a name it does not know)."""
    return _text(DEVICE)


def threads(environ=None):
    """DOMAINBED_THREADS in `environ` (default os.environ): threads per job, None when
    unset (lib/threads.py's policy)."""
    return whole_number(THREADS.name, 1, environ)


def loader_workers():
    """DOMAINBED_LOADER_WORKERS: loader workers per job, None when unset."""
    return whole_number(LOADER_WORKERS.name, 0)


def local_jobs():
    """DOMAINBED_LOCAL_JOBS: the `local` launcher's jobs at once (default 1)."""
    value = _integer(LOCAL_JOBS, 2)
    return 1 if value is None else value


def pool_workers():
    """DOMAINBED_POOL_WORKERS: the `pool` launcher's workers, None when unset (the CPU
    count)."""
    return _integer(POOL_WORKERS, 4)


def jobs_per_gpu():
    """DOMAINBED_JOBS_PER_GPU: the `multi_gpu` launcher's jobs per GPU (default 1)."""
    value = _integer(JOBS_PER_GPU, 2)
    return 1 if value is None else value


def slurm_options():
    """{option: text} of the DOMAINBED_SLURM_* variables set and not empty; the slurm
    launcher checks them with its --launcher_args (launchers/command_launchers.py)."""
    return {option: setting.text() for option, setting in SLURM.items() if setting.text()}


def plugins():
    """DOMAINBED_PLUGINS: the import paths it lists, in order (none when unset)."""
    return [name.strip() for name in (PLUGINS.text() or "").split(",") if name.strip()]


def cache_dir():
    """DOMAINBED_CACHE: the decoded cache's directory, None when unset or empty
    (datasets/decoded_cache.py then uses ~/.cache/domainbed/decoded)."""
    return _text(CACHE)


def tensorboard():
    """DOMAINBED_TENSORBOARD: whether every run writes a TensorBoard log."""
    return _switch(TENSORBOARD)


def save_selected():
    """DOMAINBED_SAVE_SELECTED: whether train.py keeps model_iid.pkl."""
    return _switch(SAVE_SELECTED)


def cuda_graphs():
    """DOMAINBED_CUDA_GRAPHS: False only when it is exactly `0`."""
    return CUDA_GRAPHS.text() != "0"


@contextlib.contextmanager
def overridden(values):
    """These settings ({Setting: text}) set while the block runs, the previous values put
    back after: a study running a sweep in its own process (studies/sweep_listing.py) gives
    it the variables a child process would have got in its environment."""
    saved = {setting.name: os.environ.get(setting.name) for setting in values}
    os.environ.update({setting.name: text for setting, text in values.items()})
    try:
        yield
    finally:
        for name, text in saved.items():
            if text is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = text
