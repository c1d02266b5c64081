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


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1, started and stopped here.

    Credentials and the endpoint travel in the environment, so spawned writer processes reach
    the same server through the ordinary s3fs/botocore configuration.
    """
    import os

    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="tj-cache")
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_url(s3_endpoint):
    import fsspec

    fsspec.filesystem("s3").invalidate_cache()
    return f"s3://tj-cache/{uuid.uuid4().hex}/cache.zarr"
