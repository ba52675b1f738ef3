"""The opt-in speed options `--precision` and `--memory_format` (training layer).

`--precision bf16` runs the algorithm's `update` and the evaluation under bfloat16
autocast on the job's device: matmuls and convolutions compute in bf16, while weights,
gradients and optimizer state stay fp32 (autocast, not `.half()`; bf16 has fp32's exponent
range, so no GradScaler). `--memory_format channels_last` stores the network's 4-D weights
and the 4-D input batches NHWC (the same numbers in a layout that convolution kernels on
recent GPUs prefer). With the defaults (fp32, contiguous) every function here is the
identity or a null context, so a default job computes exactly what it did without them.
Inside `update`, the statistics a method needs in float32 leave autocast through
`algorithms/autocast.py` and `algorithms/per_sample.py`.
"""
import contextlib

from domainbed.config import speed_option


def uses_bf16(options):
    return speed_option(options, "precision") == "bf16"


def uses_channels_last(options):
    return speed_option(options, "memory_format") == "channels_last"


def autocast(options, device):
    """The context for forward passes: bf16 autocast on `device` (the job's, from
    lib/device.py) for `--precision bf16`, a null context otherwise."""
    if not uses_bf16(options):
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def prepare_algorithm(algorithm, options):
    """The built algorithm in the job's memory format (its 4-D weights NHWC for
    channels_last; buffers and dtypes unchanged); the same module otherwise."""
    if uses_channels_last(options):
        import torch

        algorithm = algorithm.to(memory_format=torch.channels_last)
    return algorithm


def input_converter(options):
    """x -> x in the job's memory format: 4-D batches NHWC for channels_last (the same
    values), everything else as it is."""
    if not uses_channels_last(options):
        return _unchanged
    import torch

    def to_channels_last(x):
        if x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    return to_channels_last


def _unchanged(x):
    return x


class ConvertedLoader:
    """An evaluation loader whose batches come on `device` in the job's memory format
    (`misc.accuracy` moves them to the device again: a no-op)."""

    def __init__(self, loader, device, convert):
        self.loader = loader
        self.device = device
        self.convert = convert

    def __iter__(self):
        for x, y in self.loader:
            yield self.convert(x.to(self.device)), y

    def __len__(self):
        return len(self.loader)


def eval_loaders(evals, options, device):
    """The job's (name, loader) evaluation pairs, each loader converting its batches to
    the job's memory format; `evals` itself for the default format."""
    if not uses_channels_last(options):
        return evals
    convert = input_converter(options)
    return [(name, ConvertedLoader(loader, device, convert)) for name, loader in evals]


def describe(options):
    """The out.txt header line's value, e.g. 'bf16 autocast, channels_last'."""
    precision = "bf16 autocast" if uses_bf16(options) else "fp32"
    return f"{precision}, {speed_option(options, 'memory_format')}"
