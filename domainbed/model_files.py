"""Model files users can reuse: `load_model`, and the model a selection method picks.

* `model.pkl` (train.py, at the end) is upstream's dict: `args`, `model_input_shape`,
  `model_num_classes`, `model_num_domains`, `model_hparams`, `model_dict`, the last being
  the module's weights and buffers under upstream's keys (`lib/model_state.py`). For
  `X+SWAD` / `X+MA` it is the averaged model, in X's layout.
* `model_iid.pkl`, with `DOMAINBED_SAVE_SELECTED=1` in train.py's environment: the same
  dict (plus `step` and `val_acc`) for the record that training-domain validation selects
  within the run (best mean accuracy on the training domains' out-splits, the first of
  equals), rewritten whenever a later record beats it. The oracle (test-domain
  validation) selects a run's last record, whose model is `model.pkl`.
* `load_model(path)`: a ready-to-predict algorithm (eval mode, on `lib.device`'s device)
  from a job directory or a model file, ours or upstream's.

Importing this module does not import torch.
"""
import os

from domainbed import settings
from domainbed.errors import BadInput

MODEL_FILE = "model.pkl"
SELECTED_MODEL_FILE = "model_iid.pkl"
SAVE_SELECTED_ENV = settings.SAVE_SELECTED.name
MODEL_KEYS = ("args", "model_input_shape", "model_num_classes", "model_num_domains",
              "model_hparams", "model_dict")
# Keys upstream's files carry that are no weights of the class: upstream's Fish keeps the
# clone it trained in its last update as `network_inner`.
TRANSIENT_PREFIXES = ("network_inner.",)
# Architecture hparams upstream added later: a file without them predates them, and was
# built as upstream then did (torchvision's ResNet, no ViT).
LATER_ARCHITECTURE_HPARAMS = ("resnet50_augmix", "vit", "dinov2")


class ModelFileError(BadInput, ValueError):
    """A path that is not a usable model file; the message (one line) says why (exit 2)."""


# ---------------------------------------------------------------------------------------
# The model selection picks (train.py)

def save_selected_enabled():
    return settings.save_selected()


def training_domain_val_acc(record, test_envs):
    """The mean accuracy on the training domains' out-splits, in environment order
    (training-domain validation's `val_acc` of a record with one test environment)."""
    import numpy as np

    accs, env = [], 0
    while f"env{env}_out_acc" in record:
        if env not in test_envs:
            accs.append(record[f"env{env}_out_acc"])
        env += 1
    return float(np.mean(accs))


def best_val_acc_of_records(results_path, test_envs):
    """The best training-domain validation accuracy of the records in a results.jsonl
    (None without any)."""
    from domainbed.lib import jobdir

    best = None
    try:
        lines = jobdir.read_records_file(results_path)
    except jobdir.NotRegularFileError:
        return None
    for _, _, record in lines:
        if record is None or not isinstance(record.get("step"), int):
            continue
        try:
            acc = training_domain_val_acc(record, test_envs)
        except (TypeError, ValueError):
            continue
        if best is None or acc > best:
            best = acc
    return best


# ---------------------------------------------------------------------------------------
# Loading

def _one_line(error):
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def model_file_path(path):
    """The model file a path names: itself, or `model.pkl` of a job directory."""
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, MODEL_FILE)
        if os.path.isfile(candidate):
            return candidate
        if os.path.exists(os.path.join(path, "checkpoint.pt")):
            raise ModelFileError(
                f"{path} has no {MODEL_FILE}: the job has not finished (rerun its train.py "
                f"command to finish it; its training state is in checkpoint.pt)")
        raise ModelFileError(f"{path} has no {MODEL_FILE}: give a job directory of "
                             f"train.py or a model file")
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such file or directory")
    if not os.path.isfile(path):
        raise ModelFileError(f"{path} is not a regular file: give a job directory or a "
                             f"model file")
    return path


def _numpy_safe_globals():
    """What upstream's hparams may pickle: NumPy scalars (r.choice draws) and dtypes."""
    import numpy as np

    allowed = [np.dtype]
    for module_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["scalar"])
            allowed.append(module.scalar)
        except (ImportError, AttributeError):
            pass
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


def read_model_file(path):
    """The dict of a model file (tensors on the CPU), checked for upstream's keys. Loaded
    with torch's weights_only unpickler: a model file cannot run code."""
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            dump = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(f"{path} is not a model file that torch can read safely "
                             f"({_one_line(e)})") from None
    if not isinstance(dump, dict):
        raise ModelFileError(f"{path} holds a {type(dump).__name__}, not a DomainBed model "
                             f"dict")
    missing = [key for key in MODEL_KEYS if key not in dump]
    if missing:
        hint = (" (a checkpoint.pt? load the job directory once it is done)"
                if {"version", "next_step"} <= set(dump) else "")
        raise ModelFileError(f"{path} is not a DomainBed model file: it lacks "
                             f"{', '.join(missing)}{hint}")
    if not isinstance(dump["args"], dict) or not isinstance(dump["args"].get("algorithm"), str):
        raise ModelFileError(f"{path}: its args name no algorithm")
    if not isinstance(dump["model_dict"], dict) or not isinstance(dump["model_hparams"], dict):
        raise ModelFileError(f"{path}: model_dict and model_hparams must be dicts")
    return dump


def _native(value):
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "shape", None) == () else value


def build_hparams(dump):
    """The file's hparams, completed with our defaults for names it lacks (upstream's
    older files), and with `pretrained` off: the weights come from the file."""
    from domainbed import hparams_registry

    name, dataset = dump["args"]["algorithm"], dump["args"].get("dataset")
    try:
        hparams = hparams_registry.default_hparams(name, dataset)
    except Exception:
        hparams = {}
    given = {key: _native(value) for key, value in dump["model_hparams"].items()}
    for key in LATER_ARCHITECTURE_HPARAMS:
        if key not in given:
            hparams[key] = False
    hparams.update(given)
    hparams["pretrained"] = False
    return hparams


def _fitted_state(algorithm, model_dict, path, name):
    """model_dict reduced to what the algorithm's model_state_dict() holds, or an error
    that names what does not fit."""
    from domainbed.lib import model_state

    expected = model_state.model_state_dict(algorithm)
    built = model_state.weights_and_buffers(algorithm)
    state = {}
    for key, value in model_dict.items():
        if model_state.is_extra_state_key(key):
            continue   # our files of before: training state, not weights
        if key not in expected and key.startswith(TRANSIENT_PREFIXES):
            continue
        target = built.get(key)
        if target is not None and hasattr(value, "shape") and value.shape != target.shape \
                and (value.numel() == 0 or target.numel() == 0):
            value = target.detach().clone()   # GroupDRO's q: empty until its first update
        state[key] = value
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}"
                         f"{' ...' if len(unexpected) > 3 else ''}")
        raise ModelFileError(f"{path}: model_dict does not fit {name} ({'; '.join(parts)}); "
                             f"is it a file of another algorithm or of an older layout?")
    return state


def load_model_dict(algorithm, model_dict, source, name):
    """Load a model file's `model_dict` (upstream's layout) into `algorithm`, a built
    instance of the class `name` names; a ModelFileError naming `source` when it does not
    fit. (The weight soups load their averages this way.)"""
    state = _fitted_state(algorithm, model_dict, source, name)
    try:
        algorithm.load_state_dict(state, strict=False)
    except Exception as e:
        raise ModelFileError(f"{source}: model_dict does not fit {name} "
                             f"({_one_line(e)})") from None


def load_model(path, device=None):
    """A ready-to-predict model from a job directory (its model.pkl) or a model file
    (ours: model.pkl, model_step{N}.pkl, model_iid.pkl; or upstream DomainBed's).

    Returns the algorithm (`predict(x)` gives logits), in eval mode, on `device` (default:
    `domainbed.lib.device.get_device()`). For `X+SWAD` / `X+MA` files it is X holding the
    averaged weights. Raises ModelFileError, with a one-line reason, for anything else.
    The caller's random generators are left as they were.
    """
    import torch

    from domainbed.algorithms.registry import (check_algorithm_name, get_algorithm_class,
                                               split_algorithm_name)
    from domainbed.lib.device import get_device

    path = model_file_path(path)
    dump = read_model_file(path)
    full_name = dump["args"]["algorithm"]
    name = split_algorithm_name(full_name)[0]
    try:
        check_algorithm_name(full_name)
        algorithm_class = get_algorithm_class(name)   # X+SWAD / X+MA: X holds the average
    except NotImplementedError as e:
        raise ModelFileError(f"{path}: {e}") from None
    hparams = build_hparams(dump)
    try:
        with torch.random.fork_rng(devices=[]):
            algorithm = algorithm_class(tuple(dump["model_input_shape"]),
                                        int(dump["model_num_classes"]),
                                        int(dump["model_num_domains"]), hparams)
    except Exception as e:
        raise ModelFileError(f"{path}: cannot build {name} from its hparams "
                             f"({_one_line(e)})") from None
    load_model_dict(algorithm, dump["model_dict"], path, full_name)
    algorithm.to(device if device is not None else get_device())
    algorithm.eval()
    return algorithm
