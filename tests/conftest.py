"""Shared test set-up: small thread pools, the repository root and ../shared, and the
opt-in `slow` tests (run with DOMAINBED_SLOW_TESTS=1)."""
import os
import subprocess
import sys

import pytest

from support import REPO_ROOT, SHARED


def default_test_threads():
    """The cores shared out among pytest-xdist's workers (at least 1, at most 2): more torch
    threads than cores slows every worker down (measured: tests/algorithms and the fast
    pipeline's tests took 179 s with 2 threads in each of 2 workers on 2 cores, 100 s with 1)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, (os.cpu_count() or 1) // workers))


# The runs the tests start, in this process (train.py applies DOMAINBED_THREADS) or as
# subprocesses, get the same share, unless the caller chose a count.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("DOMAINBED_THREADS", str(default_test_threads()))

try:  # keep tests light on a small machine; DOMAINBED_TEST_THREADS sets the count
    import torch

    torch.set_num_threads(int(os.environ.get("DOMAINBED_TEST_THREADS", default_test_threads())))
except ImportError:  # the torch-free parts of the suite still run
    pass


@pytest.fixture
def shared_dir():
    """../shared beside the repository root, or skip with the reason."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}: reference data unavailable")
    return SHARED


@pytest.fixture
def fresh_python():
    """run(code): `python -c code` in a new interpreter at the repository root with the
    repository importable (what a user's shell sees, no module of this test process), checked
    to exit 0; returns the CompletedProcess (text stdout/stderr)."""
    def run(code):
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                                text=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
        assert result.returncode == 0, result.stderr
        return result
    return run


def _train_in_this_process(commands):
    """A launcher for tests: each sweep command runs as train.main(argv) in the test's own
    process (torch imported once; dataset classes patched by the test stay patched)."""
    from domainbed.pool_launcher import train_argv
    from domainbed.scripts import train

    for command in commands:
        assert train.main(train_argv(command)) == 0, command


@pytest.fixture(scope="session")
def in_process_launcher():
    """The name of a command launcher that runs a sweep's jobs in this process."""
    from domainbed import command_launchers

    if "in_process_test" not in command_launchers.REGISTRY:
        command_launchers.register_launcher("in_process_test")(_train_in_this_process)
    return "in_process_test"


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules that train tiny models: one thread is fastest for them, and far faster
    on a machine whose cores are busy (no threads waiting for each other)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: minutes of real training; skipped unless DOMAINBED_SLOW_TESTS=1")


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.slow` tests run only with DOMAINBED_SLOW_TESTS=1: each has a cheaper
    test beside it that covers the same path, so CI's suite stays short."""
    if os.environ.get("DOMAINBED_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: opt in with DOMAINBED_SLOW_TESTS=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
