"""One interface over local folders and ``s3://`` buckets (pyarrow.fs).

URIs are plain strings: a local path (relative or absolute), ``file:///abs/path`` or
``s3://bucket/key``. Writes are atomic: a reader sees the old object or the whole new one,
never part of it. Locally that is a temporary file renamed into place; on S3 a single PUT
(or a multipart upload) only becomes visible once complete.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from functools import lru_cache

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import StorageError


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(base: str, *parts: str) -> str:
    """Join URI parts with ``/`` (also for local paths; pyarrow accepts them)."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def split_bucket_key(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``("bucket", "key")``; a local path -> ``("", abspath)``."""
    if is_s3(uri):
        rest = uri[len("s3://"):]
        bucket, _, key = rest.partition("/")
        return bucket, key
    return "", _local_path(uri)


def _local_path(uri: str) -> str:
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return os.path.abspath(uri)


@lru_cache(maxsize=None)
def _s3_filesystem(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    kwargs = {}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and in-filesystem path of a URI.

    S3 honours ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (an S3-compatible server)
    and ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.
    """
    if is_s3(uri):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return _s3_filesystem(endpoint, region), uri[len("s3://"):]
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"unsupported URI scheme in {uri!r}; use a path or s3://", file=uri)
    return pafs.LocalFileSystem(), _local_path(uri)


def _wrap(exc: Exception, uri: str, action: str) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"cannot {action}: no such file or object", file=uri)
    if isinstance(exc, PermissionError):
        return StorageError(f"cannot {action}: permission denied", file=uri)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageError(f"cannot {action}: {text}", file=uri)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(exc, uri, "read") from None


def open_input(uri: str) -> pa.NativeFile:
    """A random-access file (ranged reads on S3), for parquet."""
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(path)
        if info.type == pafs.FileType.Directory:
            raise StorageError("is a directory, not a file", file=uri)
        return fs.open_input_file(path)
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(exc, uri, "open") from None


def size(uri: str) -> int:
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(exc, uri, "stat") from None
    if info.type != pafs.FileType.File:
        raise StorageError("cannot stat: no such file or object", file=uri)
    return info.size


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    try:
        return fs.get_file_info(path).type == pafs.FileType.File
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(exc, uri, "stat") from None


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically, creating parent folders as needed."""
    fs, path = resolve(uri)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            parent = posixpath.dirname(path)
            os.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            with fs.open_output_stream(path) as f:
                f.write(data)
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(exc, uri, "write") from None


def delete(uri: str) -> None:
    fs, path = resolve(uri)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(exc, uri, "delete") from None


def list_files(prefix: str, *, suffix: str = "") -> list[str]:
    """Every file under ``prefix`` (recursively) whose name ends with ``suffix``, sorted.

    Returns URIs in the same style as ``prefix`` (local paths stay paths).
    """
    fs, path = resolve(prefix)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path.rstrip("/"), recursive=True))
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(exc, prefix, "list") from None
    out = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.endswith(suffix):
            continue
        if posixpath.basename(info.path).startswith("."):
            continue  # temporary files of an atomic write in progress
        out.append(("s3://" + info.path) if is_s3(prefix) else info.path)
    return sorted(out)


def local_temp_path(uri: str) -> str:
    """A temporary path beside a local destination, for writers that need a real file."""
    fs, path = resolve(uri)
    if not isinstance(fs, pafs.LocalFileSystem):
        raise StorageError("not a local path", file=uri)
    parent = posixpath.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")


def put_file(local_path: str, uri: str) -> None:
    """Move a finished local file to ``uri`` atomically (rename locally, upload to S3).

    The local file is removed either way.
    """
    try:
        if storage_is_local(uri):
            dest = resolve(uri)[1]
            os.makedirs(posixpath.dirname(dest), exist_ok=True)
            os.replace(local_path, dest)
            return
        fs, path = resolve(uri)
        try:
            pafs.copy_files(local_path, path, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
        except (OSError, pa.ArrowException) as exc:
            raise _wrap(exc, uri, "upload") from None
    finally:
        if os.path.exists(local_path):
            os.unlink(local_path)


def storage_is_local(uri: str) -> bool:
    return not is_s3(uri)
