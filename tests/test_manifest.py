import pytest

from telemetry_lab import manifest
from telemetry_lab.errors import ManifestError


def test_build_lists_parquet_files_only_with_stems(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.parquet", "b.parquet", "b.truth.json", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    m = manifest.build(str(tmp_path))
    assert m["version"] == 1 and m["total_files"] == 2 and m["bucket"] == ""
    assert [s for s, _ in manifest.entries(m)] == ["a__x", "b"]
    out = tmp_path / "m.json"
    manifest.save(m, str(out))
    assert manifest.load(str(out)) == m


def test_build_on_empty_prefix_is_an_error(tmp_path):
    with pytest.raises(ManifestError, match="no .parquet files"):
        manifest.build(str(tmp_path))


def test_s3_entries_become_s3_uris():
    m = {"version": 1, "bucket": "in", "prefix": "site", "total_files": 1,
         "files": [{"bucket": "in", "key": "site/eu/a.parquet"}]}
    assert manifest.entries(manifest.validate(m)) == [("eu__a", "s3://in/site/eu/a.parquet")]
