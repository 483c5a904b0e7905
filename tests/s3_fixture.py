"""A real S3 endpoint for tests: moto's HTTP server, in-process, on a free local port.

`conftest.py` can import `s3_endpoint` to make the fixture available to every test:

    from s3_fixture import s3_endpoint  # noqa: F401

Tests using it should be marked `@pytest.mark.s3`. The fixture sets the AWS_* variables that
boto3, s3fs, pyarrow (through `raysys.data.fs`) and Ray Data read, and restores them afterwards.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

import pytest

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto():
    """Start moto's S3 server in a thread; returns (server, endpoint URL). Call `server.stop()`."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def make_bucket(endpoint: str, name: str) -> None:
    """Create a bucket on the endpoint (no region argument: moto's us-east-1 default)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    )
    client.create_bucket(Bucket=name)


_shared: dict = {"server": None, "endpoint": None, "users": 0, "saved": {}}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Session-wide moto S3 server; yields its endpoint URL with the AWS_* env vars set.

    Reference-counted, so importing the fixture into both conftest.py and a test module still
    gives one server and one set of env vars."""
    if _shared["users"] == 0:
        server, endpoint = start_moto()
        env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
        _shared.update(server=server, endpoint=endpoint,
                       saved={name: os.environ.get(name) for name in env})
        os.environ.update(env)
    _shared["users"] += 1
    try:
        yield _shared["endpoint"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["server"].stop()
            for name, value in _shared["saved"].items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
