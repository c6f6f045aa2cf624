from __future__ import annotations



import pytest
import torch

from tests.helpers import FIXTURES



@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> str:
    """One synthetic dataset directory per test session (each task writes its own subfolder)."""
    return str(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def fixtures_dir():
    if not FIXTURES.is_dir():
        pytest.fail(f"genuine data fixtures missing at {FIXTURES}: they are part of the repository")
    return FIXTURES


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
