"""Weight averaging around any registered algorithm: `<algorithm>+SWAD` and `<algorithm>+MA`.

The wrapped algorithm trains exactly as it trains alone: the wrapper calls its `update`,
returns its logged values, and draws nothing from the global random generators (it builds
no generator of its own, and its extra passes over data run under `torch.random.fork_rng`),
so `ERM+SWAD` with a seed follows the same weights as `ERM` with that seed. What changes is
the model that is evaluated, returned by `predict` and written to `model.pkl`: an average
of the iterates, kept in `self.average`, a copy of the wrapped algorithm (so its own
`predict` is used: ARM's context, MTL's embeddings...).

Averaged: every parameter and floating-point buffer (each shared tensor once); integer
buffers (counters, `num_batches_tracked`) are the live model's.

* **MA** (Arpit et al., "Ensemble of Averages", NeurIPS 2022): after update `u`, for
  `u < ma_start` the average is the live weights; from `u = ma_start` on,
  θ_MA ← (θ_MA·k + θ_u)/(k + 1), k the number of iterates averaged so far, i.e. θ_MA is
  the mean of θ_{ma_start-1}, ..., θ_u (their code's rule, ERM++'s SMA).
* **SWAD** (Cha et al., NeurIPS 2021): dense averaging. Every iterate is added to the
  current *segment*; at each record step of train.py the segment is closed and the
  training-domain validation loss of its average is measured (`env{i}_out` of the
  training environments); `LossValley` chooses from those losses which segments the final
  average takes. The model of each record is the one SWAD would return if training stopped
  there (BatchNorm statistics recomputed), so the last record is SWAD's final model.

Both keep their averages in the training state (`get_extra_state`), so a job resumes
exactly after SIGKILL. `model_state_dict()` (what `model.pkl` holds) is the averaged
model's, in the wrapped algorithm's layout: it loads into the class of the base name.
"""
import copy

import torch
import torch.nn.functional as F

from domainbed.algorithms.base import Algorithm
from domainbed.algorithms.registry import register_wrapper
from domainbed.lib import model_state


def averaged_tensors(module):
    """name -> tensor for everything averaged: parameters and floating-point buffers, each
    shared tensor once (ERM's `featurizer.*` are `network.0.*`)."""
    tensors = dict(module.named_parameters())
    tensors.update((name, buffer) for name, buffer in module.named_buffers()
                   if buffer.is_floating_point())
    return tensors


def copied_tensors(module):
    """name -> tensor of the buffers that are not averaged (integer counters)."""
    return {name: buffer for name, buffer in module.named_buffers()
            if not buffer.is_floating_point()}


def _rng_devices(device):
    device = torch.device(device)
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


@torch.no_grad()
def validation_loss(model, loaders, device):
    """Mean over `loaders` of the mean cross-entropy of `model.predict` (eval mode)."""
    was_training = model.training
    model.eval()
    losses = []
    with torch.random.fork_rng(devices=_rng_devices(device)):
        for loader in loaders:
            total, count = 0.0, 0
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                total += F.cross_entropy(model.predict(x), y, reduction="sum").item()
                count += len(y)
            losses.append(total / max(count, 1))
    model.train(was_training)
    return sum(losses) / len(losses)


@torch.no_grad()
def recompute_batchnorm(model, loaders, device):
    """Recompute the running statistics of the BatchNorm layers `model.predict` uses, as
    one cumulative pass over `loaders` in train mode (what torch.optim.swa_utils.update_bn
    does); layers the pass does not reach keep theirs. Returns the number of layers
    recomputed. The global generators are left as they were (dropout draws are forked)."""
    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    saved = {m: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(),
                 m.momentum) for m in layers}
    reached = set()
    hooks = [m.register_forward_pre_hook(lambda module, inputs: reached.add(module))
             for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None   # cumulative average over the pass
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=_rng_devices(device)):
            for loader in loaders:
                for x, _ in loader:
                    model.predict(x.to(device))
    finally:
        for hook in hooks:
            hook.remove()
        for m, (mean, var, tracked, momentum) in saved.items():
            m.momentum = momentum
            if m not in reached:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
        model.train(was_training)
    return len(reached)


def _check_names(kind, saved, expected):
    if set(saved) != set(expected):
        raise ValueError(f"{kind}: saved tensors {sorted(set(saved) ^ set(expected))[:3]} do "
                         f"not match the model")
    for name, tensor in expected.items():
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{kind}: {name} has shape {tuple(saved[name].shape)}, the model "
                             f"{tuple(tensor.shape)}")


class AveragingWrapper(Algorithm):
    """Trains `BASE` unchanged; evaluates, predicts and exports `self.average`.

    Not registered itself: `compose(base_class, name)` makes the class of `<base>+<wrapper>`
    (the registry calls it once per name).
    """

    BASE = None

    @classmethod
    def compose(cls, base_class, name):
        if issubclass(base_class, AveragingWrapper):
            raise ValueError(f"{name}: averaging wrappers do not nest")
        own = cls.declare_wrapper_hparams

        def declare_hparams(hparam, dataset):
            base_class.declare_hparams(hparam, dataset)
            own(hparam, dataset)

        return type(name, (cls,), {
            "BASE": base_class, "__module__": cls.__module__, "__qualname__": name,
            "__doc__": f"{base_class.__name__} trained as always; {cls.__name__} of its weights.",
            "declare_hparams": staticmethod(declare_hparams)})

    @staticmethod
    def declare_wrapper_hparams(hparam, dataset):
        """The wrapper's own hparams (their names are its own, so per-name seeding leaves
        the wrapped algorithm's draws unchanged)."""

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        if self.BASE is None:
            raise TypeError(f"{type(self).__name__} wraps an algorithm: use a name such as "
                            f"'ERM+{type(self).__name__}'")
        # No Algorithm.__init__: it would draw a seed from the global generator, and the
        # wrapped algorithm must be built from the same generator state as when it runs alone.
        torch.nn.Module.__init__(self)
        self.hparams = hparams
        self.num_classes = num_classes
        self.num_domains = num_domains
        self.algorithm = self.BASE(input_shape, num_classes, num_domains, hparams)
        self.average = copy.deepcopy(self.algorithm)
        self.average.requires_grad_(False)
        self.average.eval()
        self.updates = 0

    def update(self, minibatches, unlabeled=None):
        values = self.algorithm.update(minibatches, unlabeled)
        self.updates += 1
        self.after_update()
        return values

    def after_update(self):
        raise NotImplementedError

    def predict(self, x):
        return self.average.predict(x)

    def model_state_dict(self):
        return model_state.model_state_dict(self.average)

    # -- helpers ----------------------------------------------------------------------
    def _live(self):
        return averaged_tensors(self.algorithm)

    @torch.no_grad()
    def _set_average(self, sums, count):
        """average ← sums / count (averaged tensors), integer buffers from the live model."""
        for name, tensor in averaged_tensors(self.average).items():
            tensor.copy_(sums[name] / count)
        live = copied_tensors(self.algorithm)
        for name, tensor in copied_tensors(self.average).items():
            tensor.copy_(live[name])

    def _to_live_device(self, tensors):
        live = self._live()
        _check_names(type(self).__name__, tensors, live)
        return {name: tensor.to(live[name].device, live[name].dtype)
                for name, tensor in tensors.items()}

    def get_extra_state(self):
        return {"updates": self.updates}

    def set_extra_state(self, state):
        self.updates = int(state["updates"])


# ---------------------------------------------------------------------------------------
# MA

@register_wrapper
class MA(AveragingWrapper):
    """The moving average of the weights from update `ma_start` on (Arpit et al.)."""

    @staticmethod
    def declare_wrapper_hparams(hparam, dataset):
        hparam("ma_start", 100, lambda r: 100)   # Arpit et al.'s (and ERM++'s SMA) default

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        start = hparams["ma_start"]
        if not isinstance(start, int) or isinstance(start, bool) or start < 1:
            raise ValueError(f"hparam ma_start must be an integer >= 1, got {start!r}")
        self.averaged = 1   # iterates in the average (the live weights before ma_start)

    @torch.no_grad()
    def after_update(self):
        live = self._live()
        average = averaged_tensors(self.average)
        if self.updates < self.hparams["ma_start"]:
            for name, tensor in average.items():
                tensor.copy_(live[name])
            self.averaged = 1
        else:
            k = self.averaged
            for name, tensor in average.items():
                tensor.mul_(k).add_(live[name]).div_(k + 1)
            self.averaged = k + 1
        counters = copied_tensors(self.algorithm)
        for name, tensor in copied_tensors(self.average).items():
            tensor.copy_(counters[name])

    def get_extra_state(self):
        state = super().get_extra_state()
        state["averaged"] = self.averaged
        return state

    def set_extra_state(self, state):
        super().set_extra_state(state)
        self.averaged = int(state["averaged"])


# ---------------------------------------------------------------------------------------
# SWAD

class LossValley:
    """SWAD's choice of the segments to average, from their validation losses alone.

    Segments are numbered 0, 1, ... in the order they close; `add(loss)` takes the next
    one's loss and returns the segments newly accepted into the final average. With
    N_c = n_converge, N_t = n_tolerance, r = tolerance_ratio:

    * start: when segment j closes and the first of the last N_c segments (c = j - N_c + 1)
      has the lowest loss among them (ties count as lowest), the valley starts at c:
      c is accepted, the threshold is fixed at mean(those N_c losses)·(1 + r), and the
      segments just before c, back to the last N_t segments' oldest, are accepted while
      their loss is <= threshold (going backwards, stopping at the first above it);
    * continue: segment k > c is decided once the N_t segments k .. k + N_t - 1 are
      known: accepted if their minimum loss is <= threshold, else the valley is dead:
      k and every later segment are rejected, for good;
    * `at_end()`: when training stops with the valley alive, the undecided segments are
      accepted in order while the minimum loss from them to the last is <= threshold.

    Accepted segments are always one contiguous range `first .. last`. Before the start,
    the caller falls back on the average of the whole run (`converged` is False).
    """

    def __init__(self, n_converge=3, n_tolerance=6, tolerance_ratio=0.3):
        for name, value in (("n_converge", n_converge), ("n_tolerance", n_tolerance)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"hparam swad_{name} must be an integer >= 1, got {value!r}")
        if not isinstance(tolerance_ratio, (int, float)) or isinstance(tolerance_ratio, bool) \
                or not tolerance_ratio >= 0:
            raise ValueError(f"hparam swad_tolerance_ratio must be a number >= 0, "
                             f"got {tolerance_ratio!r}")
        self.n_converge = n_converge
        self.n_tolerance = n_tolerance
        self.tolerance_ratio = float(tolerance_ratio)
        self.losses = []
        self.start = None         # segment where the valley started
        self.threshold = None
        self.first = self.last = None
        self.next = None          # first segment after `last` not yet decided
        self.dead = False

    @property
    def converged(self):
        return self.start is not None

    def add(self, loss):
        j = len(self.losses)
        self.losses.append(float(loss))
        if self.dead:
            return []
        accepted = []
        if self.start is None:
            if j + 1 < self.n_converge:
                return []
            window = self.losses[j - self.n_converge + 1:]
            if window[0] > min(window):
                return []
            c = j - self.n_converge + 1
            self.start = self.first = self.last = c
            self.threshold = sum(window) / len(window) * (1.0 + self.tolerance_ratio)
            accepted = [c]
            i = c - 1
            while i >= max(0, j - self.n_tolerance + 1) and self.losses[i] <= self.threshold:
                accepted.insert(0, i)
                self.first = i
                i -= 1
            self.next = c + 1
        while self.next + self.n_tolerance - 1 <= j:
            k = self.next
            if min(self.losses[k:k + self.n_tolerance]) > self.threshold:
                self.dead = True
                break
            accepted.append(k)
            self.last = k
            self.next = k + 1
        return accepted

    def at_end(self):
        """The undecided segments the final average takes if training stops now."""
        if not self.converged or self.dead:
            return []
        last = len(self.losses) - 1
        taken, k = [], self.next
        while k <= last and min(self.losses[k:]) <= self.threshold:
            taken.append(k)
            k += 1
        return taken

    def needed(self):
        """The closed segments that may still be accepted (the caller keeps their sums)."""
        j = len(self.losses) - 1
        if self.dead:
            return set()
        if self.converged:
            return set(range(self.next, j + 1))
        oldest = j - max(self.n_converge, self.n_tolerance) + 2
        return set(range(max(0, oldest), j + 1))

    _FIELDS = ("losses", "start", "threshold", "first", "last", "next", "dead")

    def state_dict(self):
        return {name: copy.copy(getattr(self, name)) for name in self._FIELDS}

    def load_state_dict(self, state):
        for name in self._FIELDS:
            setattr(self, name, copy.copy(state[name]))


class _Sum:
    """A running sum of iterates: tensors, how many, their first and last step."""

    def __init__(self, tensors=None, count=0, first=None, last=None):
        self.tensors = tensors
        self.count = count
        self.first = first
        self.last = last

    @torch.no_grad()
    def add(self, tensors, count, first, last):
        if self.tensors is None:
            self.tensors = {name: t.detach().clone() for name, t in tensors.items()}
        else:
            for name, t in self.tensors.items():
                t.add_(tensors[name])
        self.first = first if self.first is None else self.first
        self.last = last
        self.count += count

    def add_sum(self, other):
        if other.count:
            self.add(other.tensors, other.count, other.first, other.last)

    def state(self):
        return {"tensors": self.tensors, "count": self.count, "first": self.first,
                "last": self.last}


@register_wrapper
class SWAD(AveragingWrapper):
    """Dense averaging inside the loss valley chosen from training-domain validation."""

    @staticmethod
    def declare_wrapper_hparams(hparam, dataset):
        # The paper's defaults; the random search keeps them (the paper did not tune them).
        hparam("swad_n_converge", 3, lambda r: 3)
        hparam("swad_n_tolerance", 6, lambda r: 6)
        hparam("swad_tolerance_ratio", 0.3, lambda r: 0.3)

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.valley = LossValley(hparams["swad_n_converge"], hparams["swad_n_tolerance"],
                                 hparams["swad_tolerance_ratio"])
        self.segment = _Sum()      # the iterates since the last record step
        self.run = _Sum()          # every closed segment (the fallback before convergence)
        self.pending = {}          # closed segments that may still be accepted
        self.final = _Sum()        # the accepted segments

    @torch.no_grad()
    def after_update(self):
        if self.valley.dead:
            return   # the final average is fixed for good
        step = self.updates - 1   # train.py's step of this iterate
        self.segment.add(self._live(), 1, step, step)

    def before_record(self, evals, test_envs, device):
        """Called by train.py at each record step, before the accuracies are measured:
        close the segment, choose the window, and make `self.average` the model SWAD would
        return now. Returns the values added to the record."""
        evals = dict(evals)
        n_envs = sum(1 for name in evals if name.endswith("_out"))
        train_envs = [i for i in range(n_envs) if i not in test_envs]
        loss = None
        if self.segment.count:
            self._set_average(self.segment.tensors, self.segment.count)
            loss = validation_loss(self.average, [evals[f"env{i}_out"] for i in train_envs],
                                   device)
            index = len(self.valley.losses)
            self.pending[index] = self.segment
            if not self.valley.converged:
                self.run.add_sum(self.segment)
            for k in self.valley.add(loss):
                self.final.add_sum(self.pending[k])
            if self.valley.converged:
                self.run = _Sum()   # never needed again
            needed = self.valley.needed()
            self.pending = {k: s for k, s in self.pending.items() if k in needed}
            self.segment = _Sum()
        chosen = self._current_choice()
        if chosen.count:
            self._set_average(chosen.tensors, chosen.count)
            if not self.hparams.get("freeze_bn", False):
                recompute_batchnorm(self.average, [evals[f"env{i}_in"] for i in train_envs],
                                    device)
        return {"swad_val_loss": -1.0 if loss is None else loss,
                "swad_first_step": -1 if chosen.first is None else chosen.first,
                "swad_last_step": -1 if chosen.last is None else chosen.last}

    def _current_choice(self):
        """The sum SWAD would average if training stopped now."""
        if not self.valley.converged:
            return self.run
        extra = self.valley.at_end()
        if not extra:
            return self.final
        chosen = _Sum()
        chosen.add_sum(self.final)
        for k in extra:
            chosen.add_sum(self.pending[k])
        return chosen

    # -- full state -------------------------------------------------------------------
    def get_extra_state(self):
        state = super().get_extra_state()
        state["swad"] = {
            "valley": self.valley.state_dict(),
            "segment": self.segment.state(),
            "run": self.run.state(),
            "final": self.final.state(),
            "pending": {k: s.state() for k, s in self.pending.items()},
        }
        return state

    def set_extra_state(self, state):
        own = state["swad"]
        restored = {}
        for key in ("segment", "run", "final"):
            restored[key] = self._restored_sum(own[key])
        pending = {int(k): self._restored_sum(s) for k, s in own["pending"].items()}
        valley = LossValley(self.valley.n_converge, self.valley.n_tolerance,
                            self.valley.tolerance_ratio)
        valley.load_state_dict(own["valley"])
        super().set_extra_state(state)
        self.valley = valley
        self.segment, self.run, self.final = restored["segment"], restored["run"], restored["final"]
        self.pending = pending

    def _restored_sum(self, saved):
        tensors = saved["tensors"]
        if tensors is not None:
            tensors = self._to_live_device(tensors)
        return _Sum(tensors, int(saved["count"]), saved["first"], saved["last"])
