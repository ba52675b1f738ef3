"""Dictionaries of tensors: arithmetic, exponential moving averages and distances.

Used by the gradient-matching algorithms: Fish interpolates whole state dicts
(`ParamDict`), Fishr smooths per-domain gradient variances (`MovingAverage`) and compares
them (`l2_between_dicts`).
"""
import operator
from collections import OrderedDict

import torch


class ParamDict(OrderedDict):
    """name -> tensor, with element-wise +, -, *, / against a number or another ParamDict.

    Lets a meta update read like its formula: `meta + lr * (inner - meta)`.
    """

    def _combine(self, other, op):
        if isinstance(other, dict):
            return ParamDict((name, op(value, other[name])) for name, value in self.items())
        return ParamDict((name, op(value, other)) for name, value in self.items())

    def __add__(self, other):
        return self._combine(other, operator.add)

    def __radd__(self, other):
        return self._combine(other, lambda value, o: o + value)

    def __sub__(self, other):
        return self._combine(other, operator.sub)

    def __rsub__(self, other):
        return self._combine(other, lambda value, o: o - value)

    def __mul__(self, other):
        return self._combine(other, operator.mul)

    def __rmul__(self, other):
        return self._combine(other, lambda value, o: o * value)

    def __truediv__(self, other):
        return self._combine(other, operator.truediv)

    def __neg__(self):
        return ParamDict((name, -value) for name, value in self.items())


class MovingAverage:
    """Exponential moving average of dicts of tensors (Fishr's smoothed gradient variances).

    state <- ema * state + (1 - ema) * x, with state = 0 before the first update. `update`
    returns the new state divided by (1 - ema) when `oneminusema_correction` is on, so the
    gradient that flows back into x does not shrink with ema; the stored state is detached.
    """

    def __init__(self, ema, oneminusema_correction=True):
        self.ema = ema
        self.oneminusema_correction = oneminusema_correction
        self.ema_data = {}
        self.updates = 0

    def update(self, dict_data):
        smoothed = {}
        for name, data in dict_data.items():
            data = data.view(1, -1)
            if self.updates == 0:
                previous = torch.zeros_like(data)
            else:
                # A restored state may sit on another device than the model.
                previous = self.ema_data[name].to(device=data.device, dtype=data.dtype)
            new = self.ema * previous + (1 - self.ema) * data
            smoothed[name] = new / (1 - self.ema) if self.oneminusema_correction else new
            self.ema_data[name] = new.clone().detach()
        self.updates += 1
        return smoothed

    def state_dict(self):
        return {"updates": self.updates,
                "ema_data": {name: value.clone() for name, value in self.ema_data.items()}}

    def load_state_dict(self, state):
        self.updates = int(state["updates"])
        self.ema_data = {name: value.clone() for name, value in state["ema_data"].items()}


def l2_between_dicts(dict_1, dict_2):
    """Mean squared difference between two dicts of tensors with the same keys and shapes."""
    if set(dict_1) != set(dict_2):
        raise ValueError(f"dicts with different keys: {sorted(dict_1)} vs {sorted(dict_2)}")
    names = sorted(dict_1)
    flat_1 = torch.cat([dict_1[name].reshape(-1) for name in names])
    flat_2 = torch.cat([dict_2[name].reshape(-1) for name in names])
    return (flat_1 - flat_2).pow(2).mean()
