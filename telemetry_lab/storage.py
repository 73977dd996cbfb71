"""One interface over local folders and ``s3://`` buckets (pyarrow.fs).

URIs are plain strings: a local path (relative or absolute), ``file:///abs/path`` or
``s3://bucket/key``. Writes are atomic: a reader sees the old object or the whole new one,
never part of it. Locally that is a temporary file renamed into place; on S3 a single PUT
(or a multipart upload) only becomes visible once complete.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import re
import uuid
from datetime import datetime
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
    if is_s3(uri):
        return StorageError(f"cannot {action}: {_s3_reason(exc, uri, action)}", file=uri)
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"cannot {action}: no such file or object", file=uri)
    if isinstance(exc, PermissionError):
        return StorageError(f"cannot {action}: permission denied", file=uri)
    return StorageError(f"cannot {action}: {_first_line(exc)}", file=uri)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: pyarrow's text for a failed S3 call: "... AWS Error ACCESS_DENIED during HeadObject
#: operation: No response body." (the code is the AWS SDK's, upper snake case).
_AWS_ERROR_RE = re.compile(r"AWS Error (?P<code>[A-Z0-9_]+)(?: \(HTTP status (?P<status>\d+)\))?"
                           r" during (?P<op>\w+) operation: ?(?P<detail>.*)")

_CREDENTIAL_ERRORS = {
    "INVALID_ACCESS_KEY_ID": "credentials rejected: the access key id is not known (InvalidAccessKeyId)",
    "SIGNATURE_DOES_NOT_MATCH": "credentials rejected: the secret key does not match the access key "
                                "(SignatureDoesNotMatch)",
    "INVALID_CLIENT_TOKEN_ID": "credentials rejected: the security token is not valid",
    "EXPIRED_TOKEN": "credentials expired (ExpiredToken); refresh them or the role session",
    "MISSING_AUTHENTICATION_TOKEN": "no credentials were sent (MissingAuthenticationToken)",
}
_CREDENTIAL_HINT = ("; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, "
                    "AWS_PROFILE or the job role")


def _s3_reason(exc: Exception, uri: str, action: str) -> str:
    """A one-line, actionable reason for a failed S3 call on ``uri``."""
    bucket, key = split_bucket_key(uri)
    missing = "no objects under this prefix" if action == "list" else "no such object"
    if isinstance(exc, FileNotFoundError):
        return f"bucket {bucket!r} does not exist" if _bucket_missing(bucket) else missing
    m = _AWS_ERROR_RE.search(str(exc))
    if not m:
        return _first_line(exc)
    code, op, detail = m["code"], m["op"], m["detail"].split(" (Request ID")[0].strip()
    if code == "NO_SUCH_BUCKET":
        return f"bucket {bucket!r} does not exist"
    if code in ("NO_SUCH_KEY", "RESOURCE_NOT_FOUND"):
        return missing
    if code in _CREDENTIAL_ERRORS:
        return _CREDENTIAL_ERRORS[code] + _CREDENTIAL_HINT
    if code == "ACCESS_DENIED":
        # A HEAD answer has no body, so S3 cannot say whether the credentials were refused
        # or the identity lacks permission; a listing (a GET) carries the error code.
        if op.startswith("Head"):
            creds = _credential_error(bucket, key)
            if creds:
                return creds + _CREDENTIAL_HINT
        if op == "HeadBucket":
            return ("access denied (AccessDenied on HeadBucket): the credentials in use may not "
                    "access this bucket")
        return (f"access denied (AccessDenied on {op}): the credentials in use may not read this "
                "object, or it does not exist and they may not list the bucket")
    if code == "NETWORK_CONNECTION":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return f"cannot reach S3{f' at {endpoint}' if endpoint else ''} ({detail or code})"
    if code == "UNKNOWN" and m["status"]:
        code = f"HTTP {m['status']}"
    return f"{code} during {op}" + (f": {detail}" if detail and detail != "No response body." else "")


def _bucket_missing(bucket: str) -> bool:
    fs, _ = resolve(f"s3://{bucket}")
    try:
        return fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except (OSError, pa.ArrowException):
        return False


def _credential_error(bucket: str, key: str) -> str | None:
    """The credential problem behind an AccessDenied HEAD, if a listing reveals one."""
    fs, _ = resolve(f"s3://{bucket}")
    try:
        # Listing below the key itself: one small request whatever the bucket holds.
        fs.get_file_info(pafs.FileSelector(f"{bucket}/{key}".rstrip("/"), allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        m = _AWS_ERROR_RE.search(str(exc))
        if m and m["code"] in _CREDENTIAL_ERRORS:
            return _CREDENTIAL_ERRORS[m["code"]]
    return None


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
        if isinstance(fs, pafs.LocalFileSystem) and not os.path.isfile(path):
            # a FIFO or device would block or never end
            raise StorageError("is not a regular file", file=uri)
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


def list_folder(folder: str) -> list[tuple[str, datetime | None]]:
    """``(name, modified)`` of the files directly in ``folder`` (one listing call, so one
    request on S3), sorted by name; a folder that does not exist lists nothing."""
    fs, path = resolve(folder)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path.rstrip("/"), recursive=False,
                                                   allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        raise _wrap(exc, folder, "list") from None
    return sorted((i.base_name, i.mtime) for i in infos if i.type == pafs.FileType.File)


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
            try:
                os.replace(local_path, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise _wrap(exc, uri, "move") from None
                # Scratch on another filesystem (a tmpfs): copy beside the destination
                # first so that the final step is still an atomic rename.
                tmp = local_temp_path(uri)
                try:
                    shutil.copyfile(local_path, tmp)
                    os.replace(tmp, dest)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
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
