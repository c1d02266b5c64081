from __future__ import annotations

import uuid

import fsspec
import pytest


@pytest.fixture(params=["local", "memory"])
def store_url(request, tmp_path):
    """A fresh cache location: a local folder, or an fsspec memory:// URL (a second store type)."""
    if request.param == "local":
        yield str(tmp_path / "cache.zarr")
    else:
        url = f"memory://cache-tests/{uuid.uuid4().hex}"
        yield url
        fs = fsspec.filesystem("memory")
        if fs.exists(url):
            fs.rm(url, recursive=True)
