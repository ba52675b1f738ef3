"""Shared test set-up: small thread pools, the repository root and ../shared."""
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

try:  # keep tests light on a 2-core machine; CI can raise it with DOMAINBED_TEST_THREADS
    import torch

    torch.set_num_threads(int(os.environ.get("DOMAINBED_TEST_THREADS", "2")))
except ImportError:  # the torch-free parts of the suite still run
    pass


@pytest.fixture
def shared_dir():
    """../shared beside the repository root, or skip with the reason."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}: reference data unavailable")
    return SHARED
