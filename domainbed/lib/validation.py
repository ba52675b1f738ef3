"""The value checks that the commands share (torch-free), each a `ValidationError` whose
message is one line that says what is wrong and what to do. Every command calls them before
anything is written.

* `check_seed`, `check_fraction`: the numbers of a run's configuration (`domainbed/config.py`
  checks its fields with these);
* `check_test_envs(...)`: test environments in range, not repeated, leaving at least one
  training environment;
* `parse_hparams(text)`: the `--hparams` JSON object;
* `check_hparam_value(name, value)`: the value ranges of known hparams (used by
  `hparams_registry.apply_overrides`, which also refuses unknown names and wrong types);
* `check_count`, `check_number`, `check_distinct`: the numeric flags of the other commands
  (`sweep`'s counts, `download --timeout`, `reproduce`'s sizes), with
  `check_sweep_numbers(args)` for `sweep` (every command, before any job is listed).
"""
import math
import numbers

from domainbed.errors import BadInput

SEED_LIMIT = 2**32          # NumPy's seeds are in [0, 2**32)


class ValidationError(BadInput, ValueError):
    """Bad input; the message (one line) says what to do (exit 2)."""


# ---------------------------------------------------------------------------------------
# Numbers

def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_seed(flag, value):
    if not is_int(value) or not 0 <= value < SEED_LIMIT:
        raise ValidationError(f"{flag} must be an integer in [0, 2**32), got {value!r}; "
                              f"e.g. {flag} 0")


def check_fraction(flag, value):
    if not is_real(value) or not (math.isfinite(value) and 0 <= value < 1):
        raise ValidationError(f"{flag} must be in [0, 1), got {value!r}; e.g. {flag} 0.2")


# Step counts beyond this are a typo, not a run (and overflow C integers downstream).
MAX_STEPS = 2**31 - 1
# A sweep's trials and hparam draws: more than this is a typo (a million jobs per dataset
# and algorithm would take minutes only to list).
MAX_DRAWS = 10000


def check_count(flag, value, low=1, high=None, zero_means=None):
    """An integer in [low, high]; `zero_means`: what 0 stands for (said in the message)."""
    if is_int(value) and value >= low and (high is None or value <= high):
        return
    bounds = f">= {low}" + ("" if high is None else f" and <= {high}")
    meaning = f"; 0 means {zero_means}" if zero_means else ""
    raise ValidationError(f"{flag} must be {bounds} (an integer{meaning}), got {value!r}; "
                          f"e.g. {flag} {max(low, 1)}")


def check_number(flag, value, low, high, low_inclusive=True, high_inclusive=True, example=None):
    """A finite real number in the interval (low, high with their inclusivity)."""
    try:
        ok = is_real(value) and math.isfinite(value)
    except OverflowError:
        ok = False
    if ok:
        too_low = value < low if low_inclusive else value <= low
        too_high = value > high if high_inclusive else value >= high
        ok = not (too_low or too_high)
    if not ok:
        raise ValidationError(f"{flag} must be a number in "
                              f"{_interval(low, high, low_inclusive, high_inclusive)}, got "
                              f"{value!r}" + (f"; e.g. {flag} {example}" if example else ""))


def check_distinct(flag, values):
    repeated = sorted({v for v in values if list(values).count(v) > 1})
    if repeated:
        raise ValidationError(f"{flag}: {repeated[0]} is given more than once; give each once")


def check_sweep_numbers(args):
    """`sweep`'s numeric flags (an argparse namespace; None: not given)."""
    check_seed("--seed", args.seed)
    check_count("--n_trials", args.n_trials, 1, MAX_DRAWS)
    if args.n_hparams_from is not None:
        check_count("--n_hparams_from", args.n_hparams_from, 0, SEED_LIMIT - 1)
    if args.n_hparams is not None:
        start = args.n_hparams_from or 0
        check_count("--n_hparams", args.n_hparams, 1, SEED_LIMIT)
        if args.n_hparams <= start:
            raise ValidationError(f"--n_hparams {args.n_hparams} leaves no hparam draw: draws "
                                  f"are --n_hparams_from <= seed < --n_hparams; give --n_hparams "
                                  f"above {start}")
        if args.n_hparams - start > MAX_DRAWS:
            raise ValidationError(f"--n_hparams - --n_hparams_from is {args.n_hparams - start} "
                                  f"draws; at most {MAX_DRAWS} per sweep")
    if args.steps is not None:
        check_count("--steps", args.steps, 0, MAX_STEPS, zero_means="the dataset's default")
    check_fraction("--holdout_fraction", args.holdout_fraction)
    if args.holdout_fraction == 0:
        raise ValidationError("--holdout_fraction 0 leaves every validation split empty; "
                              "give a fraction in (0, 1), e.g. --holdout_fraction 0.2")


def check_test_envs(test_envs, n_envs, env_names, dataset_name):
    """In range, not repeated, and at least one environment left to train on."""
    names = ", ".join(f"{i}={name}" for i, name in enumerate(env_names)) if env_names else ""
    for env in test_envs:
        if not 0 <= env < n_envs:
            raise ValidationError(
                f"test env {env} is out of range for {dataset_name}: valid test envs are "
                f"0..{n_envs - 1}" + (f" ({names})" if names else ""))
    repeated = sorted({env for env in test_envs if list(test_envs).count(env) > 1})
    if repeated:
        raise ValidationError(f"test env {repeated[0]} is given more than once in --test_envs")
    if len(set(test_envs)) >= n_envs:
        raise ValidationError(
            f"--test_envs {' '.join(map(str, test_envs))} holds out every environment of "
            f"{dataset_name} ({n_envs}); leave at least one to train on, e.g. --test_envs 0")


# ---------------------------------------------------------------------------------------
# Hparams

def parse_hparams(text):
    """The --hparams JSON object as a dict (None or '' -> {})."""
    import json

    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        reason = e if isinstance(e, ValueError) else "nested too deeply"
        raise ValidationError(f"--hparams is not valid JSON ({reason}); write it like "
                              f"--hparams '{{\"lr\": 0.001}}'") from None
    if not isinstance(value, dict):
        raise ValidationError(f"--hparams must be a JSON object, e.g. '{{\"lr\": 0.001}}', "
                              f"not {text!r}")
    return value


# name -> (kind, low, high, low inclusive, high inclusive). kind "int": an integer count.
_COUNT_LIMIT = 2**20
_RULES = {
    "batch_size": ("int", 1, 65536, True, True),
    "mlp_width": ("int", 1, _COUNT_LIMIT, True, True),
    "mlp_depth": ("int", 2, 64, True, True),
    "mnist_cnn_width": ("int", 1, 4096, True, True),
    "d_steps_per_g_step": ("int", 1, _COUNT_LIMIT, True, True),
    "n_meta_test": ("int", 1, _COUNT_LIMIT, True, True),
    "linear_steps": ("int", 0, None, True, True),
    "irm_penalty_anneal_iters": ("real", 0, None, True, True),
    "penalty_anneal_iters": ("real", 0, None, True, True),
    "vrex_penalty_anneal_iters": ("real", 0, None, True, True),
    "resnet_dropout": ("real", 0, 1, True, False),
    "vit_dropout": ("real", 0, 1, True, False),
    "mlp_dropout": ("real", 0, 1, True, False),
    "rsc_f_drop_factor": ("real", 0, 1, True, False),
    "rsc_b_drop_factor": ("real", 0, 1, True, False),
    "beta1": ("real", 0, 1, True, False),
    "ema": ("real", 0, 1, True, True),
    "mtl_ema": ("real", 0, 1, True, True),
    "mixup_alpha": ("real", 0, None, False, True),     # Beta(α, α): α > 0
    "fgmix_alpha": ("real", 0, None, False, True),     # Dirichlet(α): α > 0
    "fgmix_tau": ("real", 0, None, False, True),       # a softmax temperature
    "fgmix_kappa": ("real", 0, 100, True, True),       # larger pushes leave any data range
    "fgmix_rho": ("real", 0, None, True, True),
    "fgmix_gamma": ("real", 0, 100, True, True),       # the mixed loss's weight: >= 0
    "fgmix_amount_tau": ("real", 0, None, False, True),  # a sigmoid's temperature
    "sam_rho": ("real", 0, None, True, True),
}


# name -> the values a string hparam may take.
_CHOICES = {
    "fgmix_space": ("features", "inputs"),   # where the FGMix family mixes (versions 2, 3)
    "fgmix_direction": ("random", "compatibility"),   # version 3's direction scores
}


def declare_hparam_range(name, low, high=None, low_inclusive=True, high_inclusive=True,
                         integer=False):
    """The generic hook for per-hparam bounds: the values `name` may take, checked with
    every other hparam (train, sweep launch, benchmark; one line, exit 2, nothing written).
    Call it where the hparam is declared (its algorithm's module, at import), e.g.
    `declare_hparam_range("fgmix_gamma", 0, 100)`; high None: unbounded. Declaring the
    same name again with other bounds is a programming error (ValueError)."""
    rule = ("int" if integer else "real", low, high, low_inclusive, high_inclusive)
    if _RULES.get(name, rule) != rule:
        raise ValueError(f"hparam {name!r} already has the range {_RULES[name]}")
    _RULES[name] = rule


def declare_hparam_choices(name, choices):
    """The values a string hparam may take (the hook beside declare_hparam_range)."""
    choices = tuple(choices)
    if _CHOICES.get(name, choices) != choices:
        raise ValueError(f"hparam {name!r} already has the choices {_CHOICES[name]}")
    _CHOICES[name] = choices


def _rule(name):
    if name in _RULES:
        return _RULES[name]
    if name == "lr" or name.startswith("lr_") or name.endswith("_lr"):
        return ("real", 0, None, False, True)          # learning rates: > 0
    if name.startswith("weight_decay"):
        return ("real", 0, None, True, True)           # >= 0
    return None


def _interval(low, high, low_inclusive, high_inclusive):
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive and high is not None else ")"
    return f"{left}{low}, {'inf' if high is None else high}{right}"


def check_hparam_value(name, value):
    """Refuse a non-finite number, a value outside the known range of `name`, and a string
    hparam outside its choices."""
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ValidationError(f"hparam {name!r} must be one of "
                              f"{', '.join(map(repr, _CHOICES[name]))}, got {value!r}")
    if not is_real(value):
        return
    try:
        finite = math.isfinite(value)
    except OverflowError:   # a JSON integer too large for a float
        finite = False
    if not finite:
        raise ValidationError(f"hparam {name!r} must be a finite number, got {value!r}")
    rule = _rule(name)
    if rule is None:
        return
    kind, low, high, low_inclusive, high_inclusive = rule
    if kind == "int" and not is_int(value):
        raise ValidationError(f"hparam {name!r} must be an integer, got {value!r}; "
                              f"e.g. --hparams '{{\"{name}\": {max(low, 8)}}}'")
    too_low = value < low if low_inclusive else value <= low
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        kind_text = "an integer" if kind == "int" else "a number"
        raise ValidationError(f"hparam {name!r} must be {kind_text} in "
                              f"{_interval(low, high, low_inclusive, high_inclusive)}, "
                              f"got {value!r}")
