"""S3 end to end against a moto server on 127.0.0.1: generation, manifests, streaming
reads, the local array job writing to a bucket, and the errors of bad S3 input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from telemetry_lab import AnalysisParams, analyse_file, storage
from telemetry_lab import manifest as manifest_mod
from telemetry_lab.errors import ManifestError, StorageError
from telemetry_lab.generate import Anomaly, SiteSpec, fleet_specs, generate
from telemetry_lab.io import TelemetryFile

from aws_server import CountingProxy, aws_env, boto, moto_server, unique  # noqa: F401
from conftest import fleet_channels, write_telemetry

PARAMS = AnalysisParams().replace(window=100, min_reference=50, welch_nperseg=256)


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "telemetry_lab", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture
def bucket(aws_env):
    name = unique("tl")
    boto("s3").create_bucket(Bucket=name)
    return name


def keys(bucket: str, prefix: str = "") -> list[str]:
    pages = boto("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def get_json(bucket: str, key: str) -> dict:
    return json.loads(boto("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def test_array_job_on_s3_end_to_end(bucket, tmp_path):
    specs = fleet_specs(3, 12_000, seed=5, anomaly_rate=0.0)
    specs[1] = SiteSpec(**{**specs[1].__dict__, "anomalies": (
        Anomaly("spike", "sensor_13", 5.0, 0.002, 30.0),)})
    generated = generate(specs, f"s3://{bucket}/raw", workers=1)
    assert keys(bucket, "raw/") == sorted(
        [f"raw/{s.stem}.parquet" for s in specs] + [f"raw/{s.stem}.truth.json" for s in specs]
        + ["raw/manifest.json"])

    # The manifest from a listing of the prefix (truth sidecars are not inputs).
    manifest_mod.save(manifest_mod.build(f"s3://{bucket}/raw"), f"s3://{bucket}/manifests/all.json")
    manifest = get_json(bucket, "manifests/all.json")
    assert manifest["files"] == generated["files"] and manifest["total_files"] == 3

    params = AnalysisParams().replace(welch_nperseg=1024)
    params.save(f"s3://{bucket}/params.json")
    p = cli("run", "--manifest", f"s3://{bucket}/manifests/all.json", "--results",
            f"s3://{bucket}/out", "--files-per-job", "2", "--workers", "2", "--run-id", "s3e2e",
            "--params", f"s3://{bucket}/params.json", "--quiet")
    assert p.returncode == 0, p.stdout + p.stderr

    stems = [s.stem for s in specs]
    assert keys(bucket, "out/results/") == sorted(
        [f"out/results/s3e2e/{s}.json" for s in stems]
        + [f"out/results/latest/{s}.json" for s in stems]
        + ["out/results/s3e2e/_slices/00000.json", "out/results/s3e2e/_slices/00001.json",
           "out/results/s3e2e/_run.json"])
    index = get_json(bucket, "out/results/s3e2e/_run.json")
    assert index["array_size"] == 2 and index["exit_code"] == 0
    assert index["counts"] == {"OK": 3, "FAIL": 0, "SKIP": 0, "NOT_RUN": 0}
    assert sorted(f["stem"] for f in index["files"]) == stems
    assert [s["counts"]["OK"] for s in index["slices"]] == [2, 1]

    # Each result read over S3 equals the analysis of a local copy of the same object.
    volatile = ("timings", "source", "run_id")
    for spec in specs:
        doc = get_json(bucket, f"out/results/s3e2e/{spec.stem}.json")
        assert doc == get_json(bucket, f"out/results/latest/{spec.stem}.json")
        assert doc["source"] == f"s3://{bucket}/raw/{spec.stem}.parquet"
        assert doc["run_id"] == "s3e2e" and doc["rows"] == 12_000
        local = tmp_path / f"{spec.stem}.parquet"
        local.write_bytes(storage.read_bytes(doc["source"]))
        expected = analyse_file(str(local), params)
        assert {k: v for k, v in doc.items() if k not in volatile} == \
               {k: v for k, v in expected.items() if k not in volatile}
    spiked = get_json(bucket, f"out/results/s3e2e/{specs[1].stem}.json")
    assert any(e["channel"] == "sensor_13" for e in spiked["events"])


def test_parquet_read_streams_projected_columns_with_ranged_gets(bucket, tmp_path, monkeypatch):
    n = 60_000
    path = write_telemetry(tmp_path / "wide.parquet", fleet_channels(n, seed=1), row_group_rows=6000)
    size = os.path.getsize(path)
    boto("s3").upload_file(path, bucket, "wide.parquet")
    proxy = CountingProxy(os.environ["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # a new endpoint: a new S3 client
    try:
        with TelemetryFile(f"s3://{bucket}/wide.parquet") as tf:
            chunks = list(tf.iter_chunks(["sensor_03"], batch_rows=8192))
    finally:
        proxy.close()

    values = np.concatenate([c.columns["sensor_03"] for c in chunks])
    assert np.array_equal(values, pq.read_table(path, columns=["sensor_03"]).column(0).to_numpy())
    assert len(chunks) >= 10 and max(len(c) for c in chunks) <= 8192

    gets = [(path_, rng) for method, path_, rng in proxy.requests() if method == "GET"]
    assert gets and all(p_ == f"/{bucket}/wide.parquet" for p_, _ in gets)
    assert all(rng and rng.startswith("bytes=") for _, rng in gets), gets  # no whole-object GET
    # 3 of 27 columns (timestamps, one sensor, flags) plus metadata and HTTP overhead.
    assert proxy.bytes_to_client < 0.25 * size, (proxy.bytes_to_client, size)


def test_manifest_listing_errors_on_s3(bucket):
    with pytest.raises(StorageError, match="cannot list: no objects under this prefix"):
        manifest_mod.build(f"s3://{bucket}/empty-prefix")
    storage.write_bytes(f"s3://{bucket}/notes/readme.txt", b"not telemetry")
    with pytest.raises(ManifestError, match="no .parquet files"):
        manifest_mod.build(f"s3://{bucket}/notes")
    with pytest.raises(StorageError, match="bucket 'tl-no-such-bucket' does not exist"):
        manifest_mod.build("s3://tl-no-such-bucket/raw")


@pytest.fixture
def reader_keys(aws_env, bucket):
    """An IAM user that may do anything in S3 except read objects under ``secret/``."""
    iam = boto("iam")
    user = unique("reader")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read-not-secret", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{bucket}/secret/*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture
def iam_enforced(aws_env):
    aws_env.enforce_iam(True)
    try:
        yield
    finally:
        aws_env.enforce_iam(False)


def _upload_good(bucket, tmp_path, key):
    path = write_telemetry(tmp_path / "good.parquet", fleet_channels(3000))
    boto("s3").upload_file(path, bucket, key)


def test_bad_s3_inputs_fail_one_by_one_and_the_slice_completes(aws_env, bucket, reader_keys, tmp_path):
    _upload_good(bucket, tmp_path, "data/good.parquet")
    _upload_good(bucket, tmp_path, "secret/denied.parquet")
    entries = [{"bucket": bucket, "key": "data/good.parquet"},
               {"bucket": bucket, "key": "secret/denied.parquet"},
               {"bucket": "tl-no-such-bucket", "key": "data/nobucket.parquet"},
               {"bucket": bucket, "key": "data/missing.parquet"}]
    manifest = {"version": 1, "bucket": bucket, "prefix": "", "files": entries, "total_files": 4}
    manifest_mod.save(manifest, f"s3://{bucket}/bad-manifest.json")
    PARAMS.save(f"s3://{bucket}/params.json")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=reader_keys[0], AWS_SECRET_ACCESS_KEY=reader_keys[1])

    aws_env.enforce_iam(True)
    try:
        p = cli("slice", "--manifest", f"s3://{bucket}/bad-manifest.json", "--results",
                f"s3://{bucket}/out", "--run-id", "bad", "--params", f"s3://{bucket}/params.json",
                env=env)
    finally:
        aws_env.enforce_iam(False)

    assert p.returncode == 6, p.stdout + p.stderr  # the storage exit code
    assert "Traceback" not in p.stdout + p.stderr
    lines = {line.split()[1]: line for line in p.stdout.splitlines()
             if line.startswith(("OK ", "FAIL "))}
    assert lines["good"].startswith("OK ")
    expected = {"denied": "access denied (AccessDenied on HeadObject)",
                "nobucket": "bucket 'tl-no-such-bucket' does not exist",
                "missing": "no such object"}
    for stem, fragment in expected.items():
        uri = manifest_mod.file_uri(entries[["good", "denied", "nobucket", "missing"].index(stem)])
        assert lines[stem].startswith(f"FAIL {stem} StorageError: ") and fragment in lines[stem]
        record = get_json(bucket, f"out/results/bad/errors/{stem}.json")
        assert record["kind"] == "storage" and record["exit_code"] == 6
        assert record["file"] == uri and fragment in record["message"]
    summary = get_json(bucket, "out/results/bad/_slices/00000.json")
    assert summary["counts"] == {"OK": 1, "FAIL": 3, "SKIP": 0}
    assert get_json(bucket, "out/results/latest/good.json")["rows"] == 3000


@pytest.mark.parametrize("key_id,secret,fragment", [
    ("AKIAWRONGWRONGWRONG0", "whatever", "the access key id is not known (InvalidAccessKeyId)"),
    (None, "not-the-secret", "the secret key does not match the access key (SignatureDoesNotMatch)"),
])
def test_wrong_credentials_are_named_per_file(bucket, reader_keys, iam_enforced, tmp_path,
                                              key_id, secret, fragment):
    # The manifest and results are local, the inputs on S3: every file fails on its own.
    aws_env_keys = dict(os.environ, AWS_ACCESS_KEY_ID=key_id or reader_keys[0],
                        AWS_SECRET_ACCESS_KEY=secret)
    uris = [f"s3://{bucket}/data/a.parquet", f"s3://{bucket}/data/b.parquet"]
    manifest_mod.save(manifest_mod.from_uris(f"s3://{bucket}/data", uris), str(tmp_path / "m.json"))
    p = cli("slice", "--manifest", str(tmp_path / "m.json"), "--results", str(tmp_path / "out"),
            "--run-id", "creds", env=aws_env_keys)
    assert p.returncode == 6, p.stdout + p.stderr
    fails = [line for line in p.stdout.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 2 and all("credentials rejected: " + fragment in f for f in fails), fails
    for stem in ("a", "b"):
        record = json.loads((tmp_path / "out" / "results" / "creds" / "errors" / f"{stem}.json").read_text())
        assert fragment in record["message"] and record["file"] == f"s3://{bucket}/data/{stem}.parquet"
    assert json.loads((tmp_path / "out" / "results" / "creds" / "_slices" / "00000.json")
                      .read_text())["counts"]["FAIL"] == 2


def test_write_to_a_missing_bucket_names_the_bucket(aws_env):
    with pytest.raises(StorageError) as info:
        storage.write_bytes("s3://tl-no-such-bucket/out/x.json", b"{}")
    assert "bucket 'tl-no-such-bucket' does not exist" in str(info.value)
    assert "s3://tl-no-such-bucket/out/x.json" in str(info.value)


def test_io_reads_a_parquet_object_written_through_storage(bucket):
    table = pa.table({"timestamp_ns": pa.array(np.arange(5000, dtype=np.int64) * 1_000_000),
                      **{f"sensor_{i:02d}": pa.array(np.full(5000, float(i))) for i in range(24)},
                      "status_flags": pa.array(np.zeros(5000, np.uint32)),
                      "site_id": pa.array(["s"] * 5000), "region": pa.array(["r"] * 5000)})
    from telemetry_lab.io import write_table

    write_table(f"s3://{bucket}/t.parquet", table, row_group_rows=1000)
    with TelemetryFile(f"s3://{bucket}/t.parquet") as tf:
        assert tf.rows == 5000 and tf.row_group_rows == [1000] * 5
        assert tf.site_id == "s" and tf.region == "r"
