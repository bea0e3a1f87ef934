"""An S3-compatible server for the tests: moto's server mode (``python -m moto.server``) as a real
subprocess on 127.0.0.1 and a free port, with one bucket, always stopped (its whole process group).

What MinIO is in ``infra/docker-compose.yml``, this is in the tests: DVC (``dvc-s3``: a remote
``s3://BUCKET/...`` with ``endpointurl``), the MLflow server (``--artifacts-destination
s3://BUCKET/...``, ``MLFLOW_S3_ENDPOINT_URL``) and boto3 talk to it over HTTP exactly as they would
to MinIO. The credentials are dummies that exist only in the environment of the test and of the
processes it starts (moto accepts any).
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from headless import free_port, stop_group, wait_http

BUCKET = "defectops"
REGION = "us-east-1"
DUMMY_KEY, DUMMY_SECRET = "testing-key", "testing-secret"    # moto accepts any; never real ones
# a user's or CI's own AWS settings must not leak into the tests (profiles, endpoints, other keys)
AWS_VARS_DROPPED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@dataclass
class S3:
    endpoint: str                  # http://127.0.0.1:<port>
    bucket: str
    env: dict[str, str] = field(default_factory=dict)   # what a client of this server needs in its environment
    log: Path | None = None

    def client(self):
        """A boto3 S3 client on this server (explicit endpoint and credentials: nothing read from
        the process environment)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=DUMMY_KEY,
                            aws_secret_access_key=DUMMY_SECRET)

    def keys(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix`` in the bucket: key -> size."""
        out: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()


def client_env(endpoint: str, home: Path) -> dict[str, str]:
    """The variables an S3 client (DVC, MLflow, boto3) of the test server reads: dummy credentials,
    the region, MLflow's S3 endpoint; no shared AWS config/credentials files (``home`` holds
    none), no instance-metadata lookups, no proxy for the loopback address."""
    no_proxy = ",".join(x for x in (os.environ.get("NO_PROXY") or os.environ.get("no_proxy"), "127.0.0.1,localhost")
                        if x)
    return {"AWS_ACCESS_KEY_ID": DUMMY_KEY, "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET, "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(home / "aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true", "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "NO_PROXY": no_proxy, "no_proxy": no_proxy}


def subprocess_env(s3: S3, **extra: str) -> dict[str, str]:
    """``os.environ`` without the caller's own AWS settings, plus ``s3.env`` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARS_DROPPED}
    return {**env, **s3.env, **extra}


@contextmanager
def moto_s3(tmp: Path, bucket: str = BUCKET, timeout: float = 60) -> Iterator[S3]:
    """moto's S3 server on 127.0.0.1 (a free port) with ``bucket`` created; its process group is
    stopped on exit, whatever happened."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp / "moto.log"
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARS_DROPPED}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_http(f"{endpoint}/moto-api/", proc, timeout=timeout, log=log)
        s3 = S3(endpoint, bucket, client_env(endpoint, tmp), log)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        stop_group(proc)
