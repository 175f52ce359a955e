"""The built kernel module, for the tests that call it directly."""

from __future__ import annotations

import pytest

from tinygpt_mlx import kernels


@pytest.fixture(scope="module")
def ext():
    module = kernels.load()
    if module is None:
        pytest.fail(f"kernels did not build on this machine: {kernels.status()}")
    return module
