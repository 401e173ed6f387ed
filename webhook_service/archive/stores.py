"""Where archive files go: a folder, or an S3 bucket and prefix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

# Archive files are readable by their owner only, like the database itself.
FILE_MODE = 0o600


class ArchiveFailed(Exception):
    """A file could not be written, or did not read back as written; the message says which
    and why, in one line."""


class ArchiveStore(Protocol):
    """A place that holds archive files by key (a relative path with / between parts)."""

    def put(self, key: str, data: bytes) -> None:
        """Store `data` at `key`, replacing what was there at once (readers see the old file or
        the new one, never part of one). Raises OSError or the client's error."""

    def get(self, key: str) -> bytes:
        """What is stored at `key`. Raises OSError or the client's error."""

    def keys(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix`, in order."""

    def delete(self, key: str) -> None:
        """Remove what is stored at `key`."""

    def describe(self) -> str:
        """Where this store is, without credentials (for logs and errors)."""


class FolderStore:
    """A folder on this host (a mounted volume, a network file system)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=".parquet")
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def keys(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            return []
        found = (path.relative_to(self.root).as_posix() for path in self.root.rglob("*") if path.is_file())
        return sorted(key for key in found if key.startswith(prefix) and not key.rsplit("/", 1)[-1].startswith("."))

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def describe(self) -> str:
        return str(self.root)


class S3Store:
    """A bucket and key prefix on S3, or on a store that speaks its API (AWS_ENDPOINT_URL);
    credentials and region come from the standard AWS variables and files."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket, self.prefix = bucket, prefix
        self._client = None

    def put(self, key: str, data: bytes) -> None:
        self._s3().put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def get(self, key: str) -> bytes:
        return self._s3().get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()

    def keys(self, prefix: str) -> list[str]:
        pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        return sorted(item["Key"][len(self.prefix) :] for page in pages for item in page.get("Contents", ()))

    def delete(self, key: str) -> None:
        self._s3().delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def _s3(self):
        # Made on first use, in the process that uses it: boto3 is loaded only where
        # archives go to S3, and a client is not carried across a fork.
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_archive_url(url: str) -> tuple[str, str, str]:
    """("s3", bucket, prefix ending in / or empty) or ("folder", absolute path, ""), from
    ARCHIVE_URL: s3://bucket[/prefix], file:///path, or a path. Raises ValueError for
    anything else; connects to nothing."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc or parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError("expected s3://bucket or s3://bucket/prefix (credentials go in the AWS variables)")
        prefix = parts.path.strip("/")
        return "s3", parts.netloc, f"{prefix}/" if prefix else ""
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError("expected file:///absolute/path")
        return "folder", unquote(parts.path), ""
    if parts.scheme == "" and url.strip():
        return "folder", str(Path(url).expanduser().absolute()), ""
    raise ValueError("expected a folder (a path or file:///path) or s3://bucket/prefix")


def archive_store(url: str) -> ArchiveStore:
    """The store ARCHIVE_URL names (see parse_archive_url); raises ValueError."""
    kind, where, prefix = parse_archive_url(url)
    if kind == "s3":
        return S3Store(where, prefix)
    return FolderStore(Path(where))
