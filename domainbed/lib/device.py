"""The one place where the compute device is chosen: CUDA when present, else CPU.

Set DOMAINBED_DEVICE (e.g. `cpu`, `cuda:1`, `mps`) to override. Nothing else in the
package hard-codes CUDA tensor moves or inspects devices on its own.
"""
from domainbed import settings


def get_device():
    import torch

    requested = settings.device()
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_memory_gb(device):
    """Peak allocated accelerator memory since process start, 0.0 on CPU (upstream `mem_gb`)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024.0**3
    return 0.0
