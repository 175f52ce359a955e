"""The built kernel module, for the tests about the kernels (the only tests that compile anything)."""

from __future__ import annotations

import pytest

from tinygpt_mlx.cpu import kernels


@pytest.fixture
def ext():
    """The compiled kernels: built by the first test that asks (10-20 s; kernels.build gives up after 600 s),
    then loaded from the cache. Per test, because tests/cpu/kernels/test_build.py reloads the module."""
    module = kernels.load()
    if module is None:
        pytest.fail(f"kernels did not build on this machine: {kernels.status()}")
    return module
