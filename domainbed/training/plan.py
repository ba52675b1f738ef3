"""A run's configuration turned into its plan (reads and writes nothing in the output
directory): what needs the registries, since the RunConfig checked its own fields when it
was made. The algorithm and dataset names, the hparams (upstream's choice plus the checked
`--hparams` overrides), the dataset's own checks and the test environments.
`validate(config)` returns the `Plan` that `build` carries out. A refusal is a BadInput, or
one of its kinds as the check raised it (a `ValidationError` of lib/validation.py, a
`DatasetArgumentError`: the same one line)."""
import contextlib
import os

from domainbed import datasets, hparams_registry
from domainbed.algorithms import get_algorithm_class
from domainbed.config import RunConfig
from domainbed.errors import BadInput, DomainBedError
from domainbed.lib import misc, validation
from domainbed.lib.cli import squeeze
from domainbed.lib.registry import PluginError


def lookup_classes(config):
    try:
        algorithm_class = get_algorithm_class(config.algorithm)
    except PluginError as e:
        raise BadInput(str(e)) from None
    except NotImplementedError as e:
        raise BadInput(f"--algorithm: {e}") from None
    try:
        dataset_class = datasets.get_dataset_class(config.dataset)
    except NotImplementedError as e:
        raise BadInput(f"--dataset: {e}") from None
    return algorithm_class, dataset_class


def check_output_dir(config):
    if os.path.exists(config.output_dir) and not os.path.isdir(config.output_dir):
        raise BadInput(f"--output_dir {config.output_dir} is a file; choose a directory")


def choose_hparams(config):
    """Upstream's choice: defaults for hparams_seed 0, else the seeded random draw; then
    the --hparams overrides, checked for unknown names, wrong types and ranges."""
    overrides = validation.parse_hparams(config.hparams)
    if config.hparams_seed == 0:
        hparams = hparams_registry.default_hparams(config.algorithm, config.dataset)
    else:
        hparams = hparams_registry.random_hparams(
            config.algorithm, config.dataset,
            misc.seed_hash(config.hparams_seed, config.trial_seed))
    try:
        hparams = hparams_registry.apply_overrides(hparams, overrides)
    except hparams_registry.HparamError as e:
        raise BadInput(f"--hparams: {e}") from None
    return hparams


def check_pipeline(config):
    """--pipeline fast decodes image folders: any other dataset is refused up front."""
    from domainbed.datasets.image_folder import fast_pipeline_refusal

    if config.pipeline == "fast":
        refusal = fast_pipeline_refusal(config.dataset)
        if refusal:
            raise BadInput(refusal)


class Plan:
    """What validation found: the classes, the hparams and the environment names."""

    def __init__(self, config, algorithm_class, dataset_class, hparams, env_names):
        self.config = config
        self.algorithm_class = algorithm_class
        self.dataset_class = dataset_class
        self.hparams = hparams
        self.env_names = env_names   # None: known only once the dataset is built


def validate(config):
    """Every check that needs neither the output directory nor the data. Returns a Plan."""
    if not isinstance(config, RunConfig):
        raise TypeError(f"validate() takes a domainbed.config.RunConfig, not "
                        f"{type(config).__name__} (make one with RunConfig.from_args)")
    check_output_dir(config)
    algorithm_class, dataset_class = lookup_classes(config)
    check_pipeline(config)
    hparams = choose_hparams(config)
    test_envs = list(config.test_envs)
    # Ours: a dataset's environments may depend on hparams, and it may refuse arguments
    # (a DatasetArgumentError).
    dataset_class.check_arguments(test_envs, hparams)
    env_names = dataset_class.environment_names(hparams)
    if env_names:
        validation.check_test_envs(test_envs, len(env_names), env_names, config.dataset)
    return Plan(config, algorithm_class, dataset_class, hparams, env_names or None)


@contextlib.contextmanager
def setting_up():
    """An unforeseen error while validating or building comes from this combination of
    arguments and hparams (nothing is written yet): a BadInput, one line, exit 2; a
    DomainBedError goes on as it is."""
    try:
        yield
    except DomainBedError:
        raise
    except Exception as e:
        raise BadInput(f"cannot set up this job ({type(e).__name__}: {squeeze(e)}); check "
                       "--hparams and the other arguments (see docs/reliability.md)") from None
