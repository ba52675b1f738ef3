"""Weight soups over a finished sweep: the runs a sweep already trained, averaged.

For each (dataset, algorithm, test environment, trial_seed) group of a sweep's finished
runs with one test environment (the hparams candidates among which training-domain
validation chooses), from each run's final `model.pkl` (or, with `model="selected"`,
`model_iid.pkl`, the checkpoint training-domain validation selects in the run, kept when
the sweep ran with DOMAINBED_SAVE_SELECTED=1):

* **uniform soup**: the mean of every member's weights (DiWA, Ramé et al., NeurIPS 2022;
  "uniform soup", Wortsman et al., ICML 2022);
* **greedy soup**: the members in decreasing training-domain validation accuracy (of the
  record whose model is averaged: the last one for `model.pkl`, the selected one for
  `model_iid.pkl`, read with `IIDAccuracySelectionMethod`); each is added only if the
  soup's training-domain validation accuracy does not drop (Wortsman et al.'s greedy soup,
  DiWA's "restricted" one).

Floating-point tensors are averaged (sums in float64); integer buffers (BatchNorm's
`num_batches_tracked`) are the first member's. Members must have the same state-dict keys,
shapes and dtypes (one architecture): a group that does not is skipped with a note. Where
the network has BatchNorm layers (and `freeze_bn` is off: frozen statistics are the same in
every member), their running statistics are recomputed on the training environments'
in-splits before every evaluation (train mode, no gradient, `bn_batches` batches of each
training environment, concatenated as a training step sees them).

A soup is evaluated as a run is: `training.prepare` builds the dataset, splits and
evaluation loaders from the best member's arguments (same holdout_fraction, trial_seed and
seed), so every environment's in/out accuracy is on the run's splits. Each soup is a run
directory `<output_dir>/<dataset>_<algorithm>+UniformSoup_env<t>_trial<s>` (or
`+GreedySoup`): `results.jsonl` (one record: the usual accuracies, `args` with that
algorithm name and hparams_seed 0, so that collect_results reads it as a row of its own,
`hparams` of the best member, and `soup`), `model.pkl` (upstream's dict with the members'
algorithm name, so `load_model` and upstream's class load it; plus `soup`) and `done`. It
is written in a `.partial-<name>` directory and renamed when whole: a finished soup is
never rewritten (a rerun skips it), a directory that is not one of ours is never touched.

The command is `python -m domainbed.scripts.soup`.
"""
import os
import shutil
import sys

from domainbed import model_files
from domainbed.lib import jobdir, misc, safe_write
from domainbed.lib.cli import CommandError, squeeze
from domainbed.lib.reporting import parse_record_line
from domainbed.model_selection import IIDAccuracySelectionMethod

OWNER = "soup"                        # the marker of the output directory and of each soup
KINDS = {"uniform": "UniformSoup", "greedy": "GreedySoup"}
MODELS = {"final": model_files.MODEL_FILE, "selected": model_files.SELECTED_MODEL_FILE}
DEFAULT_BN_BATCHES = 16
PARTIAL_PREFIX = ".partial-"


class SoupError(CommandError):
    """Bad input (no sweep, no finished run, no model files, an output directory that is
    not ours): one line, exit 2, nothing written."""

    exit_code = 2


class SkipGroup(Exception):
    """A group that cannot be souped (the message says why); the others go on."""


# ---------------------------------------------------------------------------------------
# The members: a sweep's finished runs, grouped

class Member:
    """One finished run of a group: its directory, records and model file."""

    def __init__(self, path, records, model):
        self.path = path
        self.name = os.path.basename(path)
        self.records = records
        self.last = max(records, key=lambda record: record["step"])
        self.args = self.last["args"]
        self.hparams_seed = self.args["hparams_seed"]
        self.model_path = os.path.join(path, MODELS[model])
        scored = records if model == "selected" else [self.last]
        self.val_acc = IIDAccuracySelectionMethod.run_acc(scored)["val_acc"]

    @property
    def key(self):
        args = self.args
        return (args["dataset"], args["algorithm"], args["test_envs"][0], args["trial_seed"])


def finished_runs(input_dir):
    """[(job directory, its usable records)] of the finished runs directly under
    `input_dir` (a `done` file and at least one record), by name; soups are left out."""
    if not os.path.isdir(input_dir):
        raise SoupError(f"--input_dir {input_dir} is not a directory; give the --output_dir "
                        "of a finished sweep")
    try:
        names = sorted(os.listdir(input_dir))
    except OSError as error:
        raise SoupError(f"--input_dir {input_dir} cannot be read ({error.strerror})") from None
    runs = []
    for name in names:
        path = os.path.join(input_dir, name)
        if not os.path.isdir(path) or not jobdir.is_done(path):
            continue
        try:
            lines = jobdir.read_records_file(os.path.join(path, jobdir.RESULTS_FILE))
        except OSError:   # a FIFO, a directory, unreadable: no records
            continue
        records = [record for record in (parse_record_line(line) for _, line, _ in lines)
                   if record is not None]
        if records and not any("soup" in record for record in records):
            runs.append((path, records))
    return runs


def find_groups(input_dir, model="final"):
    """({(dataset, algorithm, test_env, trial_seed): [Member]}, notes): the finished runs
    with one test environment and a model file, grouped; a note for each run left out.
    A SoupError when there is nothing to soup, saying why."""
    runs = finished_runs(input_dir)
    if not runs:
        raise SoupError(f"{input_dir} holds no finished run (a job directory with 'done' and "
                        "records); give a sweep's --output_dir once its jobs are done (see "
                        "python -m domainbed.scripts.sweep status)")
    single = [(path, records) for path, records in runs
              if len(records[-1]["args"]["test_envs"]) == 1]
    if not single:
        raise SoupError(f"{input_dir} holds no finished run with one test environment; soups "
                        "are made of the runs training-domain validation chooses among")
    with_model = [(path, records) for path, records in single
                  if os.path.isfile(os.path.join(path, MODELS[model]))]
    if not with_model:
        if model == "selected":
            advice = ("rerun the sweep with DOMAINBED_SAVE_SELECTED=1 in its environment, or "
                      "use --model final")
        else:
            advice = "the sweep ran with --skip_model_save: launch it again without that flag"
        raise SoupError(f"no finished run in {input_dir} has {MODELS[model]}; {advice}")
    kept = {path for path, _ in with_model}
    notes = [f"{os.path.basename(path)} has no {MODELS[model]}: left out of its group"
             for path, _ in single if path not in kept]
    groups = {}
    for path, records in with_model:
        member = Member(path, records, model)
        groups.setdefault(member.key, []).append(member)
    return dict(sorted(groups.items(), key=lambda item: item[0])), notes


def ranked(members):
    """Best training-domain validation accuracy first; on a tie the higher hparams_seed
    first (upstream's order of hparams candidates)."""
    return sorted(members, key=lambda member: (member.val_acc, member.hparams_seed),
                  reverse=True)


def check_group(members):
    """Raise SkipGroup when the group is no set of hparams candidates of one trial."""
    seeds = {}
    for member in members:
        if member.hparams_seed in seeds:
            raise SkipGroup(f"{seeds[member.hparams_seed]} and {member.name} share "
                            f"hparams_seed {member.hparams_seed} (runs of two sweeps?); soup "
                            "each sweep's directory on its own")
        seeds[member.hparams_seed] = member.name


# ---------------------------------------------------------------------------------------
# Averaging

def incompatibility(dumps, names):
    """Why these model files (dicts) cannot be averaged, or None: they must agree on the
    input shape, classes and domains, and on every state-dict key, shape and dtype."""
    first, first_name = dumps[0], names[0]
    for dump, name in zip(dumps[1:], names[1:]):
        for field in ("model_input_shape", "model_num_classes", "model_num_domains"):
            if list(map(int, _as_list(dump[field]))) != list(map(int, _as_list(first[field]))):
                return f"{field} is {dump[field]} in {name} but {first[field]} in {first_name}"
        keys, first_keys = set(dump["model_dict"]), set(first["model_dict"])
        if keys != first_keys:
            extra = sorted(keys - first_keys)[:2] or sorted(first_keys - keys)[:2]
            return (f"{name} and {first_name} have different state-dict keys "
                    f"({', '.join(extra)}): different architectures")
        for key, value in first["model_dict"].items():
            other = dump["model_dict"][key]
            if tuple(other.shape) != tuple(value.shape) or other.dtype != value.dtype:
                return (f"{key} is {tuple(other.shape)} {other.dtype} in {name} but "
                        f"{tuple(value.shape)} {value.dtype} in {first_name}: different "
                        "architectures (e.g. a width hparam drawn differently)")
    return None


def _as_list(value):
    return value if isinstance(value, (list, tuple)) else [value]


def add_to_sums(sums, model_dict):
    """The running sums (float64) of the floating-point tensors with `model_dict` added; a
    new dict, `sums` (None: empty) is left as it is."""
    import torch

    result = {}
    for key, value in model_dict.items():
        if torch.is_tensor(value) and value.is_floating_point():
            value = value.detach().to("cpu", torch.float64)
            result[key] = value if sums is None else sums[key] + value
    return result


def mean_of(sums, count, template):
    """The soup: sums / count in `template`'s dtypes; what is not averaged (integer
    buffers) is `template`'s (the first member's)."""
    return {key: (sums[key] / count).to(value.dtype) if key in sums else value
            for key, value in template.items()}


def uniform_soup(model_dicts):
    """The mean of the model dicts (every floating-point tensor; the rest: the first's)."""
    sums = None
    for model_dict in model_dicts:
        sums = add_to_sums(sums, model_dict)
    return mean_of(sums, len(model_dicts), model_dicts[0])


def greedy_select(candidates, score):
    """Wortsman et al.'s greedy soup: `candidates` best first; `score(members)` is the
    training-domain validation accuracy of the soup of `members`. The first candidate
    starts the soup; each next one is kept when the score with it does not drop.
    Returns (the members kept, their score, [(candidate, score with it, kept)])."""
    chosen = [candidates[0]]
    best = score(chosen)
    trace = [(candidates[0], best, True)]
    for candidate in candidates[1:]:
        value = score(chosen + [candidate])
        kept = value >= best
        if kept:
            chosen, best = chosen + [candidate], value
        trace.append((candidate, value, kept))
    return chosen, best, trace


# ---------------------------------------------------------------------------------------
# Evaluating a soup as its runs were evaluated

class Evaluator:
    """The members' evaluation, rebuilt: `training.prepare` on the best member's arguments
    (dataset, splits, evaluation loaders, precision), and the best member's model
    (`load_model`) into which each soup is loaded. Use as a context manager."""

    def __init__(self, member, data_dir=None, bn_batches=DEFAULT_BN_BATCHES):
        from domainbed import training
        from domainbed.training import precision

        args = dict(member.args)
        if data_dir is not None:
            args["data_dir"] = data_dir
        args["output_dir"] = member.path   # read by nobody; prepare writes nothing
        self.job = training.prepare(training.RunConfig.from_args(args))
        self.job.algorithm = None          # built for training; the members' model is below
        self.device = self.job.device
        self.test_envs = list(self.job.config.test_envs)
        self.evals = precision.eval_loaders(self.job.evals, self.job.config, self.device)
        self.model = model_files.load_model(member.model_path, self.device)
        self.name = member.args["algorithm"]
        self.bn_batches = bn_batches
        self.bn_layers = 0 if self.job.hparams.get("freeze_bn", False) \
            else count_batchnorm(self.model)
        self.loaded = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.job.close()
        return False

    def load(self, model_dict, source):
        """Put the soup's weights into the model; recompute BatchNorm statistics."""
        from domainbed.algorithms.weight_averaging import recompute_batchnorm

        model_files.load_model_dict(self.model, model_dict, source, self.name)
        if self.bn_layers:
            recompute_batchnorm(self.model, [self.training_batches()], self.device)
        self.loaded = source

    def training_batches(self):
        """`bn_batches` batches of the training environments' in-splits (the evaluation
        loaders': deterministic), each environment's batch concatenated."""
        import torch

        loaders = [loader for name, loader in self.evals
                   if name.endswith("_in") and int(name[3:-3]) not in self.test_envs]
        for step, batches in enumerate(zip(*loaders)):
            if step >= self.bn_batches:
                break
            yield torch.cat([x for x, _ in batches]), None

    def accuracies(self, suffixes=("_in", "_out", "_uda")):
        """{name_acc: accuracy} of the loaded model on the evaluation splits whose names
        end with one of `suffixes`, as train.py computes a record's."""
        from domainbed.training import precision

        with precision.autocast(self.job.config, self.device):
            return {f"{name}_acc": misc.accuracy(self.model, loader, None, self.device)
                    for name, loader in self.evals if name.endswith(tuple(suffixes))}

    def val_acc(self):
        """Training-domain validation accuracy of the loaded model."""
        return model_files.training_domain_val_acc(self.accuracies(("_out",)), self.test_envs)


def count_batchnorm(model):
    """The BatchNorm layers with running statistics in `model`."""
    import torch

    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
               for m in model.modules())


class SoupScorer:
    """score(members) for greedy_select: the training-domain validation accuracy of their
    soup. Greedy always scores (the kept members + one), so the sums of the last two
    member lists are kept: each score adds one member's weights."""

    def __init__(self, evaluator, model_dicts):
        self.evaluator = evaluator
        self.model_dicts = model_dicts   # member name -> its model_dict
        self.cache = {}                  # tuple(member names) -> sums

    def sums(self, members):
        key = tuple(member.name for member in members)
        if key not in self.cache:
            base = self.sums(members[:-1]) if len(members) > 1 else None
            self.cache = {key: add_to_sums(base, self.model_dicts[key[-1]])}
            if base is not None:
                self.cache[key[:-1]] = base
        return self.cache[key]

    def load(self, members):
        """Load the soup of `members` into the evaluator's model."""
        template = self.model_dicts[members[0].name]
        self.evaluator.load(mean_of(self.sums(members), len(members), template),
                            "+".join(member.name for member in members))

    def __call__(self, members):
        self.load(members)
        return self.evaluator.val_acc()


# ---------------------------------------------------------------------------------------
# The soups of a sweep

def soup_name(key, kind):
    dataset, algorithm, test_env, trial_seed = key
    name = f"{dataset}_{algorithm}+{KINDS[kind]}_env{test_env}_trial{trial_seed}"
    return name.replace(os.sep, "_")


def check_output_dir(output_dir, input_dir):
    """The output directory is new, empty, or one of ours (soup's marker); never the
    sweep itself."""
    if not os.path.lexists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise SoupError(f"--output_dir {output_dir} is not a directory; choose another "
                        "--output_dir")
    if os.path.realpath(output_dir) == os.path.realpath(input_dir):
        raise SoupError("--output_dir is --input_dir; give the soups a directory of their "
                        "own (collect_results reads it like a sweep)")
    try:
        entries = os.listdir(output_dir)
    except OSError as error:
        raise SoupError(f"--output_dir {output_dir} cannot be read ({error.strerror})") from None
    if entries and not safe_write.is_claimed(output_dir, OWNER):
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise SoupError(f"{output_dir} was not written by soup (it holds {shown}); move it "
                        "away or choose another --output_dir")


def read_soup_record(path):
    """The `soup` entry of a finished soup directory of ours, or None."""
    try:
        lines = jobdir.read_records_file(os.path.join(path, jobdir.RESULTS_FILE))
    except OSError:
        return None
    for _, _, record in lines:
        if isinstance(record, dict) and isinstance(record.get("soup"), dict):
            return record["soup"]
    return None


def existing_soup(path):
    """None when nothing is at `path`; the `soup` entry of a finished soup of ours there;
    a SoupError for anything else (never touched)."""
    if not os.path.lexists(path):
        return None
    soup = None
    if os.path.isdir(path) and not os.path.islink(path) and safe_write.is_claimed(path, OWNER) \
            and jobdir.is_done(path):
        soup = read_soup_record(path)
    if soup is None:
        raise SoupError(f"{path} is in the way and is no finished soup (no 'done', or not "
                        "written by soup); move it away or choose another --output_dir")
    return soup


def check_partial(path):
    """A `.partial-` soup in the way must be ours (an interrupted run's): else a SoupError.
    Returns whether there is one."""
    if not os.path.lexists(path):
        return False
    if os.path.islink(path) or not os.path.isdir(path) or not safe_write.is_claimed(path, OWNER):
        raise SoupError(f"{path} is in the way and was not written by soup; move it away or "
                        "choose another --output_dir")
    return True


def remove_partial(path):
    """Remove the `.partial-` soup an interrupted run left (checked ours first)."""
    if check_partial(path):
        shutil.rmtree(path)


def plan(groups, kinds, output_dir):
    """[(key, members, [kinds to make])], notes: a soup already made from the same
    candidates is skipped; one made from other candidates is a note (the sweep changed)."""
    todo, notes, done = [], [], 0
    for key, members in groups.items():
        wanted = []
        for kind in kinds:
            path = os.path.join(output_dir, soup_name(key, kind))
            soup = existing_soup(path)
            if soup is None:
                check_partial(os.path.join(output_dir, PARTIAL_PREFIX + soup_name(key, kind)))
                wanted.append(kind)
            elif sorted(soup.get("candidates", [])) != sorted(m.name for m in members):
                notes.append(f"{path} was made from other runs than the sweep's finished ones "
                             "now; it is kept as it is (soup into a new --output_dir to redo it)")
            else:
                done += 1
        if wanted:
            todo.append((key, members, wanted))
    return todo, notes, done


def group_label(key):
    dataset, algorithm, test_env, trial_seed = key
    return f"{dataset} {algorithm} test env {test_env} trial {trial_seed}"


def make_group_soups(key, members, kinds, output_dir, model, data_dir, bn_batches, say):
    """The soups of one group, each written as a run directory. Every member's weights are
    held in memory while the group is souped. Raises SkipGroup."""
    from domainbed.training import JobError

    check_group(members)
    members = ranked(members)
    try:
        dumps = [model_files.read_model_file(member.model_path) for member in members]
        why = incompatibility(dumps, [member.name for member in members])
        if why:
            raise SkipGroup(why)
        model_dicts = {member.name: dump["model_dict"] for member, dump in zip(members, dumps)}
        with Evaluator(members[0], data_dir, bn_batches) as evaluator:
            scorer = SoupScorer(evaluator, model_dicts)
            for kind in kinds:
                info = cook(kind, members, scorer)
                info.update(model_file=MODELS[model], selected_run=selected_run(members),
                            input_dir=os.path.abspath(os.path.dirname(members[0].path)))
                accs = evaluator.accuracies()
                path = write_soup(output_dir, soup_name(key, kind), members[0], dumps[0],
                                  evaluator, accs, info)
                say(progress_line(key, kind, info, accs, path))
    except (JobError, model_files.ModelFileError) as error:
        raise SkipGroup(str(error)) from None


def cook(kind, members, scorer):
    """Load the soup of this kind into the scorer's evaluator; its `soup` entry."""
    if kind == "uniform":
        chosen, trace = members, None
        val_acc = scorer(members)
    else:
        chosen, val_acc, trace = greedy_select(members, scorer)
        scorer.load(chosen)
    evaluator = scorer.evaluator
    return {
        "kind": kind,
        "members": [m.name for m in chosen],
        "member_hparams_seeds": [m.hparams_seed for m in chosen],
        "member_seeds": [m.args["seed"] for m in chosen],   # their initialisations
        "candidates": [m.name for m in members],
        "candidate_val_accs": [m.val_acc for m in members],
        "val_acc": val_acc,
        "greedy_trace": None if trace is None else
        [[m.name, value, kept] for m, value, kept in trace],
        "batchnorm_layers_recomputed": evaluator.bn_layers,
        "bn_batches": evaluator.bn_batches if evaluator.bn_layers else 0,
    }


def selected_run(members):
    """The run training-domain validation selects among the members (best checkpoint),
    as collect_results reports it: its hparams_seed, val_acc and test_acc."""
    scores, records = IIDAccuracySelectionMethod.hparams_accs(
        [record for member in members for record in member.records])[0]
    return {"hparams_seed": records[0]["args"]["hparams_seed"], "val_acc": scores["val_acc"],
            "test_acc": scores["test_acc"]}


def progress_line(key, kind, info, accs, path):
    dataset, algorithm, test_env, trial_seed = key
    return (f"soup: {algorithm}+{KINDS[kind]} {dataset} test env {test_env} trial "
            f"{trial_seed}: {len(info['members'])} of {len(info['candidates'])} runs, test "
            f"{accs[f'env{test_env}_in_acc']:.4f} (selected run "
            f"{info['selected_run']['test_acc']:.4f}), training-domain val "
            f"{info['val_acc']:.4f} -> {path}")


def write_soup(output_dir, name, best, best_dump, evaluator, accs, info):
    """The soup's run directory, written whole in `.partial-<name>` and renamed."""
    from domainbed.lib import model_state
    from domainbed.training import checkpoint

    final = os.path.join(output_dir, name)
    staging = os.path.join(output_dir, PARTIAL_PREFIX + name)
    remove_partial(staging)
    safe_write.claim_directory(staging, OWNER)
    model_args = dict(best_dump["args"], output_dir=final)
    dump = {
        "args": model_args,
        "model_input_shape": best_dump["model_input_shape"],
        "model_num_classes": best_dump["model_num_classes"],
        "model_num_domains": best_dump["model_num_domains"],
        "model_hparams": best_dump["model_hparams"],
        "model_dict": {key: value.detach().cpu().clone() for key, value in
                       model_state.model_state_dict(evaluator.model).items()},
        "soup": info,
    }
    checkpoint.save_atomic(dump, os.path.join(staging, model_files.MODEL_FILE))
    args = dict(best.args, algorithm=f"{best.args['algorithm']}+{KINDS[info['kind']]}",
                hparams_seed=0, output_dir=final)
    record = {"step": best.last["step"], "epoch": best.last.get("epoch"), **accs,
              "hparams": best.last["hparams"], "args": args, "soup": info}
    misc.append_json_line(os.path.join(staging, jobdir.RESULTS_FILE), record)
    jobdir.write_done(staging)
    if os.path.lexists(final):
        raise SoupError(f"{final} appeared while the soup was made; the soup is left in "
                        f"{staging}")
    os.rename(staging, final)
    return final


def make_soups(input_dir, output_dir, kinds=tuple(KINDS), model="final", data_dir=None,
               bn_batches=DEFAULT_BN_BATCHES, say=print, note=None):
    """Make the soups of every group of the sweep in `input_dir` under `output_dir`.
    Returns {"made", "already_done", "skipped"}; bad input is a SoupError before anything
    is written; a group that cannot be souped is a note and counts as skipped."""
    if note is None:
        def note(line):
            print(f"soup: {squeeze(line, None)}", file=sys.stderr, flush=True)
    check_output_dir(output_dir, input_dir)
    groups, notes = find_groups(input_dir, model)
    todo, stale, done = plan(groups, kinds, output_dir)
    for line in notes + stale:
        note(line)
    made, skipped = 0, len(stale)
    if todo:
        safe_write.claim_directory(output_dir, OWNER)
    for key, members, wanted in todo:
        try:
            make_group_soups(key, members, wanted, output_dir, model, data_dir, bn_batches,
                             say)
            made += len(wanted)
        except SkipGroup as error:
            note(f"skipped {group_label(key)}: {error}")
            skipped += len(wanted)
    if done:
        say(f"soup: {done} soups already made in {output_dir} (skipped)")
    return {"made": made, "already_done": done, "skipped": skipped}
