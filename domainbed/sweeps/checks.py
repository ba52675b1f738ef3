"""A sweep's arguments and jobs checked before any job is listed or made: names, test-env
counts, selection methods, every job's train arguments and hparams, the launcher and its
options. Each refusal is a one-line SweepError, or the BadInput a check raised as it is
(an UnknownNameError, a ValidationError; torch-free)."""
import json
import os

from domainbed import algorithms, datasets, model_selection
from domainbed.algorithms.registry import check_algorithm_name
from domainbed.config import RunConfig
from domainbed.launchers import command_launchers
from domainbed.lib import validation
from domainbed.lib.registry import UnknownNameError
from domainbed.sweeps.errors import SweepError


def check_names(args, methods=None):
    """Validate every name before any job is listed; a "did you mean" error otherwise."""
    known_algorithms = algorithms.ALGORITHMS
    for algorithm in args.algorithms:
        if algorithm not in known_algorithms:
            # X+SWAD, X+MA: a registered algorithm with a weight-averaging wrapper; an
            # UnknownNameError otherwise
            check_algorithm_name(algorithm)
    pairs = (not args.single_test_envs and args.best_hparams_from is None
             and (methods is None or 2 in model_selection.test_env_counts(methods)))
    for dataset in args.datasets:
        try:   # an unknown name: an UnknownNameError
            n_envs = datasets.num_environments(dataset, data_dir=args.data_dir)
        except (datasets.DatasetArgumentError, datasets.DatasetNotFoundError) as error:
            raise SweepError(" ".join(str(error).split()))
        if n_envs < 3 and pairs:
            raise SweepError(f"dataset {dataset} has {n_envs} environments; pairs of test envs need "
                             "3 or more: add --single_test_envs")
        if getattr(args, "pipeline", "default") == "fast":
            from domainbed.datasets.image_folder import fast_pipeline_refusal

            refusal = fast_pipeline_refusal(dataset)
            if refusal:
                raise SweepError(refusal)
    if args.command_launcher is None and args.command != "status":
        raise SweepError("the following arguments are required: --command_launcher")
    if args.hparams is not None:
        validation.parse_hparams(args.hparams)   # a ValidationError otherwise
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise SweepError(f"--output_dir {args.output_dir} is a file; give the sweep's directory")



def resolve_selection_methods(args):
    """--selection_method as classes (None: not given), each once, in the order given."""
    if args.selection_method is None:
        return None
    methods = []
    for name in args.selection_method:
        try:
            method = model_selection.get_selection_method(name)
        except UnknownNameError as error:
            raise SweepError(f"--selection_method: {error}")
        if method not in methods:
            methods.append(method)
    needs_pairs = [m.__name__ for m in methods if 2 in m.TEST_ENV_COUNTS]
    if args.single_test_envs and needs_pairs:
        raise SweepError(f"--selection_method {needs_pairs[0]} reads the runs with 2 test envs, "
                         "which --single_test_envs leaves out: drop one of the two")
    return methods



def check_jobs(args, args_list):
    """Before `launch` makes any directory: every job's train arguments, the dataset's own
    checks of its test envs, hparams and data (`check_arguments`; for `Folder`, the tree or
    manifest under --data_dir, every image opened once), and the --hparams overrides of
    each (algorithm, dataset), with train.py's own checks."""
    if args.task == "domain_adaptation":
        raise SweepError("--task domain_adaptation: train.py then needs --uda_holdout_fraction "
                         "above 0, which a sweep does not pass (as upstream); run those jobs with "
                         "train.py")
    for train_args in args_list:
        try:
            RunConfig.from_args(train_args)   # the job's configuration, as train.py makes it
        except validation.ValidationError as error:
            raise SweepError(f"{error} (in job {train_args['dataset']} / {train_args['algorithm']}"
                             f", from --n_hparams_from / --n_trials / --steps / "
                             f"--holdout_fraction)")
    checked = set()
    for train_args in args_list:
        dataset, test_envs = train_args["dataset"], train_args["test_envs"]
        key = (dataset, tuple(test_envs), train_args.get("hparams"))
        if key in checked:
            continue
        checked.add(key)
        dataset_class = datasets.get_dataset_class(dataset)
        overrides = json.loads(train_args["hparams"]) if train_args.get("hparams") else {}
        try:
            if dataset_class.ENVIRONMENTS_FROM_DATA:
                dataset_class.check_arguments(test_envs, overrides, data_dir=args.data_dir)
            else:
                dataset_class.check_arguments(test_envs, overrides)
        except (datasets.DatasetArgumentError, datasets.DatasetNotFoundError) as error:
            raise SweepError(f"{' '.join(str(error).split())} (nothing launched)")
    with_hparams = sorted({(a["algorithm"], a["dataset"], a["hparams"]) for a in args_list
                           if a.get("hparams") is not None})
    if not with_hparams:
        return
    from domainbed import hparams_registry

    for algorithm, dataset, text in with_hparams:
        try:
            hparams_registry.apply_overrides(
                hparams_registry.default_hparams(algorithm, dataset),
                validation.parse_hparams(text))
        except hparams_registry.HparamError as error:
            raise SweepError(f"--hparams: {error} ({algorithm} on {dataset}; nothing launched)")



def check_launcher_args(launcher_fn, launcher_args):
    """--launcher_args that the launcher does not take: refused before anything is made."""
    import inspect

    try:
        inspect.signature(launcher_fn).bind([], **launcher_args)
    except TypeError as error:
        raise SweepError(f"--launcher_args: {error}; see the launcher's options in "
                         "domainbed/launchers/command_launchers.py")
    except ValueError:  # no signature (a builtin): let the launcher decide
        pass
    check = getattr(launcher_fn, "check_options", None)
    if check is not None:
        try:
            check(launcher_args)
        except command_launchers.LauncherError as error:
            raise SweepError(f"--launcher_args: {error}")



def resolve_launcher(args):
    if args.command_launcher is None:
        return None
    return command_launchers.get_launcher(args.command_launcher)   # or an UnknownNameError

