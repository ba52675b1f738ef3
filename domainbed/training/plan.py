"""Validation of a job (reads and writes nothing in the output directory): the flags, the
algorithm and dataset names, the hparams (upstream's choice plus the checked `--hparams`
overrides) and the test environments. `validate(args)` returns the `Plan` that `build`
carries out. A refusal is a BadInput, or one of its kinds as the check raised it (a
`ValidationError` of lib/validation.py, a `DatasetArgumentError`: the same one line)."""
import contextlib
import os

from domainbed import datasets, hparams_registry
from domainbed.algorithms import get_algorithm_class
from domainbed.errors import BadInput, DomainBedError
from domainbed.lib import misc, validation
from domainbed.lib.cli import squeeze
from domainbed.lib.registry import PluginError
from domainbed.training.arguments import drop_default_speed_options, speed_option


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
    validation.check_train_args(args)


def choose_hparams(args):
    """Upstream's choice: defaults for hparams_seed 0, else the seeded random draw; then
    the --hparams overrides, checked for unknown names, wrong types and ranges."""
    overrides = validation.parse_hparams(args.hparams)
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


def check_pipeline(args):
    """--pipeline fast decodes image folders: any other dataset is refused up front."""
    from domainbed.datasets.image_folder import fast_pipeline_refusal

    if speed_option(args, "pipeline") == "fast":
        refusal = fast_pipeline_refusal(args.dataset)
        if refusal:
            raise BadInput(refusal)


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
    drop_default_speed_options(args)
    check_plain_args(args)
    algorithm_class, dataset_class = lookup_classes(args)
    check_pipeline(args)
    hparams = choose_hparams(args)
    # Ours: a dataset's environments may depend on hparams, and it may refuse arguments
    # (a DatasetArgumentError).
    dataset_class.check_arguments(args.test_envs, hparams)
    env_names = dataset_class.environment_names(hparams)
    if env_names:
        validation.check_test_envs(args.test_envs, len(env_names), env_names, args.dataset)
    return Plan(args, algorithm_class, dataset_class, hparams, env_names or None)


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
