"""AWS Batch submit and watch against a moto server on 127.0.0.1 (moto's Docker-free Batch:
jobs are marked done at once), plus Stubber for what moto cannot show (children still
running, status reasons and exit codes of failed children)."""

from __future__ import annotations

import argparse
import json
import signal
from types import SimpleNamespace

import boto3
import pytest
from botocore.stub import Stubber

from telemetry_lab import AnalysisParams, aws, cli, jobs
from telemetry_lab import manifest as manifest_mod
from telemetry_lab.errors import EXIT_UNEXPECTED, ParamsError

from aws_server import aws_env, boto, moto_server, unique  # noqa: F401
from conftest import fleet_channels, read_json, write_telemetry

PARAMS = AnalysisParams().replace(window=100, min_reference=50, welch_nperseg=256)


def run(*argv) -> int:
    """``telemetry-lab submit|watch ...`` through the parsers aws.py registers."""
    parser = argparse.ArgumentParser(prog="telemetry-lab")
    aws.add_aws_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def batch(aws_env):
    """A compute environment, queue and job definition of their own for each test."""
    role = boto("iam").create_role(RoleName=unique("batch-service"), AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "batch.amazonaws.com"}}]}))
    client = boto("batch")
    ce = client.create_compute_environment(
        computeEnvironmentName=unique("ce"), type="UNMANAGED", state="ENABLED",
        serviceRole=role["Role"]["Arn"])["computeEnvironmentArn"]
    queue = client.create_job_queue(jobQueueName=unique("queue"), state="ENABLED", priority=1,
                                    computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])
    definition = client.register_job_definition(
        jobDefinitionName=unique("slice"), type="container",
        containerProperties={"image": "telemetry-lab-job:test", "vcpus": 1, "memory": 2048,
                             "command": ["--help"]})
    return SimpleNamespace(client=client, queue=queue["jobQueueName"],
                           definition=definition["jobDefinitionName"])


@pytest.fixture
def s3_inputs(aws_env, tmp_path):
    """Three small telemetry files, their manifest and a params file in a fresh bucket."""
    bucket = unique("tl-batch")
    s3 = boto("s3")
    s3.create_bucket(Bucket=bucket)
    for i in range(3):
        path = write_telemetry(tmp_path / f"site-{i}.parquet", fleet_channels(3000, seed=i),
                               site_id=f"site-{i}")
        s3.upload_file(path, bucket, f"raw/site-{i}.parquet")
    manifest_mod.save(manifest_mod.build(f"s3://{bucket}/raw"), f"s3://{bucket}/manifest.json")
    PARAMS.save(f"s3://{bucket}/params.json")
    return SimpleNamespace(bucket=bucket, manifest=f"s3://{bucket}/manifest.json",
                           params=f"s3://{bucket}/params.json", results=f"s3://{bucket}/out")


def submit(batch, inputs, k: int, *extra) -> int:
    return run("submit", "--backend", "batch", "--manifest", inputs.manifest, "--files-per-job",
               str(k), "--job-queue", batch.queue, "--job-definition", batch.definition,
               "--results", inputs.results, *extra)


def describe(client, job_id: str) -> dict:
    return client.describe_jobs(jobs=[job_id])["jobs"][0]


def env_of(job: dict) -> dict:
    return {e["name"]: e["value"] for e in job["container"]["environment"]}


def test_array_job_children_get_what_they_need(batch, s3_inputs, capsys, monkeypatch):
    assert submit(batch, s3_inputs, 2, "--params", s3_inputs.params, "--run-id", "batch-1") == 0
    job_id = capsys.readouterr().out.strip()
    parent = describe(batch.client, job_id)
    assert parent["jobName"] == "telemetry-lab-batch-1"
    assert parent["parameters"] == {"manifest": s3_inputs.manifest, "results": s3_inputs.results}
    assert parent["arrayProperties"]["size"] == 2  # ceil(3 / 2)

    children = batch.client.list_jobs(arrayJobId=job_id)["jobSummaryList"]
    assert sorted(c["jobId"] for c in children) == [f"{job_id}:0", f"{job_id}:1"]
    # Run each child as Batch would: the image's entry point with the overridden command,
    # the overridden environment and the index Batch sets.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in sorted(children, key=lambda c: c["jobId"]):
            job = describe(batch.client, child["jobId"])
            env = env_of(job)
            assert env[jobs.ARRAY_SIZE_ENV] == "2" and env[jobs.RUN_ID_ENV] == "batch-1"
            assert env[jobs.PARAMS_ENV] == s3_inputs.params
            assert job["container"]["command"] == ["slice", "--manifest", s3_inputs.manifest,
                                                   "--results", s3_inputs.results]
            with monkeypatch.context() as m:
                for name, value in env.items():
                    m.setenv(name, value)
                # Batch names children <parent>:<index> (moto leaves out arrayProperties.index).
                m.setenv(jobs.ARRAY_INDEX_ENV, job["jobId"].rsplit(":", 1)[1])
                assert cli.main(job["container"]["command"]) == 0
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)

    s3 = boto("s3")
    listed = s3.list_objects_v2(Bucket=s3_inputs.bucket, Prefix="out/results/batch-1/")
    keys = sorted(o["Key"] for o in listed["Contents"])
    assert keys == ["out/results/batch-1/_slices/00000.json", "out/results/batch-1/_slices/00001.json",
                    "out/results/batch-1/site-0.json", "out/results/batch-1/site-1.json",
                    "out/results/batch-1/site-2.json"]
    doc = json.loads(s3.get_object(Bucket=s3_inputs.bucket, Key=keys[-1])["Body"].read())
    assert doc["params"] == PARAMS.to_dict() and doc["run_id"] == "batch-1"


def test_one_child_is_submitted_as_a_plain_job(batch, s3_inputs, capsys, monkeypatch):
    # Queue, definition and results from the environment `make env` exports.
    monkeypatch.setenv("TELEMETRY_LAB_JOB_QUEUE", batch.queue)
    monkeypatch.setenv("TELEMETRY_LAB_JOB_DEFINITION", batch.definition)
    monkeypatch.setenv("TELEMETRY_LAB_RESULTS", s3_inputs.results)
    assert run("submit", "--manifest", s3_inputs.manifest, "--files-per-job", "5") == 0
    job = describe(batch.client, capsys.readouterr().out.strip())
    assert job["jobQueue"].endswith(f"/{batch.queue}")
    assert job["container"]["command"][-2:] == ["--results", s3_inputs.results]
    assert "arrayProperties" not in job or "size" not in job["arrayProperties"]
    env = env_of(job)
    assert env[jobs.ARRAY_SIZE_ENV] == "1" and jobs.PARAMS_ENV not in env
    jobs.check_run_id(env[jobs.RUN_ID_ENV])  # a generated id


def test_watch_succeeded_array(batch, s3_inputs, capsys):
    assert submit(batch, s3_inputs, 1) == 0
    job_id = capsys.readouterr().out.strip()
    lines = []
    assert aws.watch(job_id, interval=0.01, progress=False, log=lines.append) == 0
    assert len(lines) == 1 and lines[0].endswith(f"{job_id}: SUCCEEDED: 3 succeeded, 0 failed of 3")


def test_watch_failed_array_lists_children_with_log_streams(batch, s3_inputs, capsys, monkeypatch):
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")  # read by the in-process server
    assert submit(batch, s3_inputs, 1) == 0
    job_id = capsys.readouterr().out.strip()
    assert run("watch", job_id, "--interval", "0.01", "--quiet") == EXIT_UNEXPECTED
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("FAILED: 0 succeeded, 3 failed of 3")
    assert out[1:] == [f"FAILED child {i} {job_id}:{i}: no status reason given; log stream "
                       f"{batch.definition}/default/{job_id}:{i}" for i in range(3)]


def test_watch_shows_progress_then_reasons_of_failed_children():
    # moto finishes children at once and records no status reason or exit code.
    client = boto3.client("batch", region_name="us-east-1")
    summary = lambda **n: {s: n.get(s, 0) for s in aws.CHILD_STATES}
    parent = {"jobId": "p-1", "jobName": "telemetry-lab-r1", "jobQueue": "q", "jobDefinition": "d",
              "startedAt": 1, "createdAt": 1}
    stub = Stubber(client)
    stub.add_response("describe_jobs", {"jobs": [dict(parent, status="RUNNING", arrayProperties={
        "size": 3, "statusSummary": summary(RUNNING=2, SUCCEEDED=1)})]}, {"jobs": ["p-1"]})
    stub.add_response("describe_jobs", {"jobs": [dict(parent, status="FAILED", arrayProperties={
        "size": 3, "statusSummary": summary(SUCCEEDED=2, FAILED=1)})]}, {"jobs": ["p-1"]})
    stub.add_response("list_jobs", {"jobSummaryList": [{"jobId": "p-1:2", "jobName": "telemetry-lab-r1"}]},
                      {"arrayJobId": "p-1", "jobStatus": "FAILED"})
    stub.add_response("describe_jobs", {"jobs": [{
        "jobId": "p-1:2", "jobName": "telemetry-lab-r1", "jobQueue": "q", "jobDefinition": "d",
        "status": "FAILED", "startedAt": 1, "createdAt": 1,
        "statusReason": "Essential container in task exited", "arrayProperties": {"index": 2},
        "container": {"exitCode": 6, "logStreamName": "slice/default/abc123"}}]}, {"jobs": ["p-1:2"]})
    lines = []
    with stub:
        code = aws.watch("p-1", client=client, interval=0.01, progress=False, log=lines.append)
    stub.assert_no_pending_responses()
    assert code == 6  # the failed child's exit code (6: storage)
    assert lines == ["job telemetry-lab-r1 p-1: FAILED: 2 succeeded, 1 failed of 3",
                     "FAILED child 2 p-1:2: Essential container in task exited (exit code 6); "
                     "log stream slice/default/abc123"]


def test_watch_progress_bar_counts_children(capsys):
    client = boto3.client("batch", region_name="us-east-1")
    job = {"jobId": "p-2", "jobName": "n", "jobQueue": "q", "jobDefinition": "d", "startedAt": 1,
           "createdAt": 1, "status": "SUCCEEDED",
           "arrayProperties": {"size": 4, "statusSummary": {"SUCCEEDED": 4}}}
    stub = Stubber(client)
    stub.add_response("describe_jobs", {"jobs": [job]})
    with stub:
        assert aws.watch("p-2", client=client, interval=0.01, progress=True) == 0
    err = capsys.readouterr().err
    assert "4/4" in err and "succeeded=4" in err and "failed=0" in err


def test_watch_unknown_job(aws_env):
    with pytest.raises(aws.BatchError, match="no job 'nope'"):
        aws.watch("nope", interval=0.01, progress=False)


def test_submit_rejects_bad_requests(batch, s3_inputs, tmp_path):
    with pytest.raises(ParamsError, match=r"--backend batch needs --job-queue \(or "
                                          r"\$TELEMETRY_LAB_JOB_QUEUE\), --job-definition"):
        run("submit", "--manifest", s3_inputs.manifest, "--files-per-job", "1", "--results",
            s3_inputs.results)
    with pytest.raises(ParamsError, match="--manifest .* must be an s3:// URI"):
        run("submit", "--manifest", str(tmp_path / "m.json"), "--files-per-job", "1", "--results",
            s3_inputs.results, "--job-queue", batch.queue, "--job-definition", batch.definition)
    with pytest.raises(ParamsError, match="files per job must be a positive integer, got 0"):
        submit(batch, s3_inputs, 0)
    with pytest.raises(aws.BatchError, match="Job queue no-such-queue does not exist"):
        run("submit", "--manifest", s3_inputs.manifest, "--files-per-job", "1", "--results",
            s3_inputs.results, "--job-queue", "no-such-queue", "--job-definition", batch.definition)
    assert batch.client.list_jobs(jobQueue=batch.queue)["jobSummaryList"] == []


@pytest.mark.parametrize("files,k,size", [(1, 1, 1), (3, 2, 2), (10, 3, 4), (10_000, 1, 10_000),
                                          (10_001, 2, 5001)])
def test_array_size(files, k, size):
    assert aws.array_size(files, k) == size


def test_array_size_over_the_batch_limit():
    with pytest.raises(ParamsError, match="use --files-per-job 2 or more"):
        aws.array_size(10_001, 1)


def test_local_backend_runs_the_same_array_here(tmp_path):
    uris = [write_telemetry(tmp_path / f"s{i}.parquet", fleet_channels(3000, seed=i)) for i in range(2)]
    manifest_mod.save(manifest_mod.from_uris(str(tmp_path), uris), str(tmp_path / "m.json"))
    PARAMS.save(str(tmp_path / "params.json"))
    code = run("submit", "--backend", "local", "--manifest", str(tmp_path / "m.json"),
               "--files-per-job", "2", "--results", str(tmp_path / "out"), "--params",
               str(tmp_path / "params.json"), "--run-id", "loc", "--quiet")
    assert code == 0
    summary = read_json(tmp_path / "out" / "results" / "loc" / "_run.json")
    assert summary["array_size"] == 1 and summary["counts"]["OK"] == 2
    assert summary["params"] == str(tmp_path / "params.json")


def test_batch_submission_for_the_notebook_panel(batch, s3_inputs, monkeypatch):
    cfg = jobs.LocalRun(manifest=s3_inputs.manifest, results=s3_inputs.results, run_id="ui-1",
                        files_per_job=2, workers=1, params_uri=s3_inputs.params)
    with pytest.raises(ParamsError, match="TELEMETRY_LAB_JOB_QUEUE"):
        aws.BatchSubmission(cfg)
    monkeypatch.setenv("TELEMETRY_LAB_JOB_QUEUE", batch.queue)
    monkeypatch.setenv("TELEMETRY_LAB_JOB_DEFINITION", batch.definition)
    submission = aws.BatchSubmission(cfg)
    job = describe(batch.client, submission.job["jobId"])
    assert job["arrayProperties"]["size"] == 2 and env_of(job)[jobs.RUN_ID_ENV] == "ui-1"
    assert submission.wait(timeout=30, interval=0.01) == 0 and submission.poll() == 0
    assert submission.output().splitlines()[-1].endswith("SUCCEEDED: 2 succeeded, 0 failed of 2")
