"""boto3 plumbing shared by the S3 item loaders and the S3 dataset store.

The endpoint comes from boto3's own configuration (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, profiles),
so one code path serves AWS and any S3-compatible server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, SSLError
from botocore.exceptions import ConnectionError as BotoConnectionError

# Enough connections for the loaders' thread pools (botocore's default pool is 10).
_POOL = Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 5})


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an S3 URL (expected s3://bucket/prefix): {uri!r}")
        bucket, _, key = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"S3 URL without a bucket: {uri!r}")
        return cls(bucket, key.strip("/"))

    def join(self, *parts: str) -> str:
        return "/".join(p for p in (self.key, *parts) if p)


def s3_client(role_arn: str | None = None, aws_access_key_id: str | None = None,
              aws_secret_access_key: str | None = None, anonymous: bool = False) -> Any:
    """An S3 client: by assuming `role_arn` (with the keys, if given, as the caller), with the keys, or
    with boto3's default credential chain; `anonymous` sends unsigned requests (public buckets)."""
    if bool(aws_access_key_id) != bool(aws_secret_access_key):
        raise ValueError("aws_access_key_id and aws_secret_access_key must be given together")
    session = boto3.session.Session(aws_access_key_id=aws_access_key_id or None,
                                    aws_secret_access_key=aws_secret_access_key or None)
    if role_arn:
        credentials = session.client("sts").assume_role(
            RoleArn=role_arn, RoleSessionName="embedding-studio")["Credentials"]
        session = boto3.session.Session(aws_access_key_id=credentials["AccessKeyId"],
                                        aws_secret_access_key=credentials["SecretAccessKey"],
                                        aws_session_token=credentials["SessionToken"])
        return session.client("s3", config=_POOL)
    if anonymous:
        return session.client("s3", config=_POOL.merge(Config(signature_version=UNSIGNED)))
    return session.client("s3", config=_POOL)


def is_missing(error: ClientError) -> bool:
    """True for "no such key/bucket" answers (404), as opposed to access or server errors."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


# S3's answers that mean "not now" (asking again later may succeed), besides any 5xx.
_RETRY_LATER_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout",
                      "ServiceUnavailable", "InternalError"}


def is_out_of_reach(error: BaseException) -> bool:
    """True when S3 could not be reached or asked for now: a connection refused or cut, a timeout, a 5xx or
    a throttle. False for answers that asking again will not change (no credentials, access denied, no
    such bucket) and for a TLS failure (a certificate is configuration, not an outage)."""
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return status >= 500 or status == 429 or error.response.get("Error", {}).get("Code") in _RETRY_LATER_CODES
    return isinstance(error, BotoConnectionError | HTTPClientError) and not isinstance(error, SSLError)
