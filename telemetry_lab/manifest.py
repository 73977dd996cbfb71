"""Manifests: the list of files an array job processes.

Format (version 1)::

    {"version": 1, "bucket": "...", "prefix": "...",
     "files": [{"bucket": "...", "key": "..."}, ...], "total_files": N}

For local storage ``bucket`` is ``""`` and ``key`` is an absolute path. Each file's
*stem* (its key relative to the manifest prefix, without ``.parquet``, ``/`` replaced by
``__``) names its results; stems must be unique within a manifest.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter

from . import storage
from .errors import ManifestError, StorageError

VERSION = 1


def file_uri(entry: dict) -> str:
    bucket, key = entry["bucket"], entry["key"]
    return f"s3://{bucket}/{key}" if bucket else key


def from_uris(prefix: str, uris: list[str]) -> dict:
    bucket, key_prefix = storage.split_bucket_key(prefix)
    files = []
    for uri in sorted(uris):
        b, k = storage.split_bucket_key(uri)
        files.append({"bucket": b, "key": k})
    return {"version": VERSION, "bucket": bucket, "prefix": key_prefix.rstrip("/"),
            "files": files, "total_files": len(files)}


def build(prefix: str) -> dict:
    """A manifest of every ``.parquet`` file under ``prefix`` (a folder or ``s3://`` prefix)."""
    uris = storage.list_files(prefix, suffix=".parquet")
    if not uris:
        raise ManifestError("no .parquet files found", file=prefix)
    return from_uris(prefix, uris)


def save(manifest: dict, uri: str) -> None:
    storage.write_bytes(uri, (json.dumps(manifest, indent=2) + "\n").encode())


def validate(manifest, *, source: str | None = None) -> dict:
    """Check the structure of a parsed manifest; raise :class:`ManifestError` quoting the fault."""
    def fail(msg):
        raise ManifestError(msg, file=source)

    if not isinstance(manifest, dict):
        fail(f"manifest must be a JSON object, got {type(manifest).__name__}")
    if manifest.get("version") != VERSION:
        fail(f"unsupported manifest version {manifest.get('version')!r} (expected {VERSION})")
    files = manifest.get("files")
    if not isinstance(files, list):
        fail(f"'files' must be a list, got {files!r:.60}")
    for i, f in enumerate(files):
        if not (isinstance(f, dict) and isinstance(f.get("bucket"), str)
                and isinstance(f.get("key"), str) and f["key"]):
            fail(f"files[{i}] must be {{'bucket': str, 'key': non-empty str}}, got {f!r:.80}")
        if "\0" in f["key"] or "\0" in f["bucket"]:
            fail(f"files[{i}] has a NUL character in its name: {f!r:.80}")
        s = stem(manifest, f)
        if not s or s.startswith("."):
            fail(f"files[{i}] {f['key']!r} gives the result name {s!r}; names must not be "
                 "empty or start with '.'")
    total = manifest.get("total_files")
    if total != len(files):
        fail(f"total_files is {total!r} but the manifest lists {len(files)} files")
    counts = Counter(stem(manifest, f) for f in files)
    dupes = sorted(s for s, n in counts.items() if n > 1)
    if dupes:
        fail(f"files share result names (stems) {dupes[:5]}")
    return manifest


def load(uri: str) -> dict:
    """Read and validate a manifest from a path or URI."""
    try:
        raw = storage.read_bytes(uri)
    except StorageError as exc:
        raise ManifestError(f"cannot read manifest: {exc.message}", file=uri) from None
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest is not valid JSON ({exc})", file=uri) from None
    return validate(manifest, source=uri)


def stem(manifest: dict, entry: dict) -> str:
    """The result name of a manifest entry (see module docstring)."""
    key = entry["key"]
    prefix = manifest.get("prefix") or ""
    same_bucket = entry["bucket"] == manifest.get("bucket", "")
    if prefix and same_bucket and key.startswith(prefix.rstrip("/") + "/"):
        rel = key[len(prefix.rstrip("/")) + 1:]
    else:
        rel = posixpath.basename(key)
    if rel.endswith(".parquet"):
        rel = rel[: -len(".parquet")]
    return rel.replace("/", "__")


def entries(manifest: dict) -> list[tuple[str, str]]:
    """``(stem, uri)`` of every file, in manifest order."""
    return [(stem(manifest, f), file_uri(f)) for f in manifest["files"]]
