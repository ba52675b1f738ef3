"""Full precision inside autocast, for the computations whose precision a method needs.

Under `train --precision bf16` an algorithm's `update` runs in bfloat16 autocast
(training/precision.py): matmuls round their inputs to bf16 (8 significant bits). That is
fine for forward passes, but not for closed-form statistics a method compares: covariances,
Gram matrices and cosines of per-sample gradients, kernel distances. Functions that compute
those are decorated with `fp32_under_autocast`. Outside autocast (every default run) the
decorator calls the function as it is, so default runs are unchanged bit for bit.
"""
import functools


def _low_precision(value):
    import torch

    return isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16)


def _upcast(value):
    return value.float() if _low_precision(value) else value


def fp32_under_autocast(function):
    """Decorator: when autocast is on for the device of the first tensor argument, run
    `function` with autocast off there and its bf16/fp16 tensor arguments as float32
    (other arguments as they are); otherwise call it unchanged. Gradients flow through the
    casts."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        import torch

        device = next((value.device for value in (*args, *kwargs.values())
                       if isinstance(value, torch.Tensor)), None)
        if device is None or not torch.is_autocast_enabled(device.type):
            return function(*args, **kwargs)
        with torch.autocast(device_type=device.type, enabled=False):
            return function(*map(_upcast, args),
                            **{name: _upcast(value) for name, value in kwargs.items()})
    return wrapper
