"""Shared test set-up: small thread pools, the repository root and ../shared, and the
opt-in `slow` tests (run with DOMAINBED_SLOW_TESTS=1)."""
import os
import pathlib
import subprocess
import sys

import pytest

from support import REPO_ROOT, SHARED

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
