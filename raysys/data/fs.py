"""Filesystem access for archives: local paths, file:// and s3:// URIs through `pyarrow.fs`.

Canonical form of a location ("URI" below): an absolute local path (`/data/a.wav`) or
`s3://bucket/key`. `file:///data/a.wav` is accepted and normalised to `/data/a.wav`.

S3 uses `AWS_ENDPOINT_URL` when set (moto, MinIO, ...): `pyarrow.fs.S3FileSystem()` built with
no arguments ignores that variable, so it is passed as `endpoint_override` explicitly. Without
an endpoint, `FileSystem.from_uri` resolves the bucket's region. Filesystem objects are cached
per process (the cache key holds the pid, so forked Ray workers build their own).

Reads retry with exponential backoff on transient errors (connection resets, throttling, 5xx:
any `OSError` that is not "not found" / "permission denied" / "is a directory" / a timeout).
Only regular files are read: a local FIFO, socket or device is `NotARegularFile` (a FIFO would
block the reader forever); `read_bytes(timeout_s=...)` bounds each attempt.
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

T = TypeVar("T")

SUPPORTED_SCHEMES = ("file", "s3")


class NotARegularFile(OSError):
    """A local path that is a FIFO, socket, device or directory: never opened for reading (a
    FIFO would block forever, /dev/zero never ends)."""


class ReadTimeout(TimeoutError):
    """A read that gave no result within its timeout (a stuck mount, a hung endpoint)."""


_PERMANENT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                     NotARegularFile, ReadTimeout)


def scheme_of(uri: str) -> str:
    """'s3' for s3://..., 'file' for file://..., '' for a plain path."""
    head, sep, _ = uri.partition("://")
    return head.lower() if sep and head.isalnum() else ""


def is_remote(uri: str) -> bool:
    return scheme_of(uri) == "s3"


def normalize(uri: str) -> str:
    """Canonical form: absolute local path, or s3://bucket/key with '.' and '..' folded."""
    scheme = scheme_of(uri)
    if scheme == "":
        return os.path.abspath(os.path.expanduser(uri))
    if scheme == "file":
        path = uri[len("file://") :]
        if not path.startswith("/"):
            raise ValueError(f"file URI {uri!r} must be absolute (file:///path)")
        return os.path.normpath(path)
    if scheme == "s3":
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"S3 URI {uri!r} has no bucket")
        key = posixpath.normpath(key) if key else ""
        if key.startswith(".."):
            raise ValueError(f"S3 URI {uri!r} points above its bucket")
        return f"s3://{bucket}/{key}" if key not in ("", ".") else f"s3://{bucket}"
    raise ValueError(
        f"unsupported URI scheme {scheme!r} in {uri!r} (use a local path, file:// or s3://)"
    )


def join(root: str, path: str) -> str:
    """Resolve `path` against an archive root: URIs and absolute paths are kept (normalised),
    relative paths are joined to the root (local folder or s3:// prefix)."""
    if scheme_of(path) or path.startswith("/"):
        return normalize(path)
    root = normalize(root)
    if is_remote(root):
        return normalize(f"{root.rstrip('/')}/{path}")
    return os.path.normpath(os.path.join(root, path))


@functools.lru_cache(maxsize=32)
def _s3_filesystem(
    bucket: str, endpoint: str | None, region: str | None, pid: int
) -> pafs.FileSystem:
    del pid  # only part of the cache key
    if endpoint:
        return pafs.S3FileSystem(endpoint_override=endpoint, region=region or "us-east-1")
    return pafs.FileSystem.from_uri(f"s3://{bucket}")[0]


@functools.lru_cache(maxsize=1)
def _local_filesystem(pid: int) -> pafs.FileSystem:
    del pid
    return pafs.LocalFileSystem()


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path, file:// or s3:// URI."""
    uri = normalize(uri)
    if not is_remote(uri):
        return _local_filesystem(os.getpid()), uri
    path = uri[len("s3://") :]
    bucket = path.split("/", 1)[0]
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    return _s3_filesystem(bucket, endpoint, region, os.getpid()), path


def is_transient(exc: BaseException) -> bool:
    """True for I/O errors worth retrying; never for not-found or permission errors."""
    return isinstance(exc, OSError) and not isinstance(exc, _PERMANENT_ERRORS)


def retry_io(
    fn: Callable[[], T],
    *,
    retries: int = 3,
    backoff_s: float = 0.2,
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Call `fn`, retrying up to `retries` times on transient errors.

    The wait before retry k (1-based) is `backoff_s * 2**(k-1)`. Permanent errors and the last
    transient error propagate unchanged.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0 (got {retries})")
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == retries or not transient(exc):
                raise
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _read_local(uri: str, path: str) -> bytes:
    """A local regular file's bytes. Opened non-blocking (opening a FIFO would wait for a
    writer), then fstat-checked on the open descriptor, so a swap after a check cannot slip
    a FIFO or device through."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{uri}: no such file") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{uri}: is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"{uri}: is {_file_kind(mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read()


def call_with_timeout(fn: Callable[[], T], timeout_s: float | None, what: str) -> T:
    """`fn()` in a daemon thread, or ReadTimeout after `timeout_s` seconds (None: no limit).

    A stuck call cannot be interrupted; its thread is abandoned (it holds no lock) and the
    caller goes on."""
    if timeout_s is None:
        return fn()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"read {what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise ReadTimeout(f"{what}: no result after {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _read_all(uri: str) -> bytes:
    filesystem, path = resolve(uri)
    if isinstance(filesystem, pafs.LocalFileSystem):
        return _read_local(uri, path)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{uri}: no such file") from exc
    except OSError as exc:
        if "is a directory" in str(exc):  # pyarrow raises a plain OSError for this
            raise IsADirectoryError(f"{uri}: is a directory, not a file") from exc
        raise


def read_bytes(
    uri: str, *, retries: int = 3, backoff_s: float = 0.2, timeout_s: float | None = None
) -> bytes:
    """The whole content of a regular file; FileNotFoundError, NotARegularFile and (after
    `timeout_s` per attempt) ReadTimeout are not retried."""
    return retry_io(lambda: call_with_timeout(lambda: _read_all(uri), timeout_s, uri),
                    retries=retries, backoff_s=backoff_s)


def exists(uri: str) -> bool:
    """True when a file or folder exists at the location."""
    filesystem, path = resolve(uri)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def _parent_dir(filesystem: pafs.FileSystem, path: str) -> None:
    parent = posixpath.dirname(path)
    if parent and isinstance(filesystem, pafs.LocalFileSystem):
        filesystem.create_dir(parent, recursive=True)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file, creating local parent folders (S3 has no folders to create).

    Local files are written under a temporary name and renamed, so a reader never sees a
    partial file under the final name; an S3 PUT is atomic by itself.
    """
    filesystem, path = resolve(uri)
    _parent_dir(filesystem, path)
    if not isinstance(filesystem, pafs.LocalFileSystem):
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_parquet(uri: str, table: pa.Table) -> None:
    """Write a table as one parquet file (deterministic bytes for identical tables)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes(uri, buffer.getvalue())


def read_parquet(uri: str, *, retries: int = 3) -> pa.Table:
    """Read one parquet file into a table."""
    return pq.read_table(pa.BufferReader(read_bytes(uri, retries=retries)))
