"""The Terraform stack, checked without Terraform or the AWS provider (neither installs here).

Every ``.tf`` file is parsed with python-hcl2 and the wiring the pipeline depends on is
asserted: network, buckets, compute, queue order, job definition, retries, IAM scoping and
alerts. References to variables and locals are resolved to their defaults where a test
needs concrete ARNs. checkov then scans the directory and must report no failed check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[1]
TF_DIR = REPO / "terraform"
DEPLOY_MK = REPO / "mk" / "deploy.mk"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
ACCOUNT = "123456789012"
OPTIONS = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False,
                                    strip_string_quotes=True)
#: AWS-maintained policies the stack attaches, each for a role whose needs AWS defines.
MANAGED_POLICIES = {
    "aws_iam_role_policy_attachment.instance":
        "service-role/AmazonEC2ContainerServiceforEC2Role",
    "aws_iam_role_policy_attachment.spot_fleet": "service-role/AmazonEC2SpotFleetTaggingRole",
}


@dataclass
class Stack:
    resources: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    variables: dict = field(default_factory=dict)
    locals: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    terraform: list = field(default_factory=list)

    def var(self, name):
        return self.variables[name].get("default")

    def resolve(self, value):
        """``value`` with simple references (``var.x``, ``local.y``, a resource's name or
        bucket, the account, the partition, ``trimsuffix``) replaced by their defaults,
        recursively; other expressions are left as they are."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if not isinstance(value, str):
            return value

        def one(match):
            ref = match.group(1)
            trim = re.fullmatch(r'trimsuffix\(([\w.]+), "([^"]*)"\)', ref)
            if trim:
                inner = self.resolve("${" + trim.group(1) + "}")
                return match.group(0) if "${" in inner else inner.removesuffix(trim.group(2))
            if ref == "data.aws_caller_identity.current.account_id":
                return ACCOUNT
            if ref == "data.aws_partition.current.partition":
                return "aws"
            kind, _, name = ref.partition(".")
            address, _, attribute = ref.rpartition(".")
            if kind == "var" and name in self.variables:
                target = self.var(name)
            elif kind == "local" and name in self.locals:
                target = self.locals[name]
            elif attribute in ("name", "bucket") and attribute in self.resources.get(address, {}):
                target = self.resources[address][attribute]  # the name AWS will report
            else:
                return match.group(0)
            return self.resolve(target) if isinstance(target, str) else match.group(0)

        previous = None
        while previous != value:
            previous, value = value, re.sub(r"\$\{([^{}]+)\}", one, value)
        return value


@pytest.fixture(scope="module")
def stack() -> Stack:
    s = Stack()
    files = sorted(TF_DIR.glob("*.tf"))
    assert files, f"no .tf files in {TF_DIR}"
    for path in files:
        with open(path) as f:
            doc = hcl2.load(f, serialization_options=OPTIONS)
        for kind, target in (("resource", s.resources), ("data", s.data)):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        address = f"{rtype}.{name}"
                        assert address not in target, f"{address} defined twice"
                        target[address] = body
        for block in doc.get("variable", []):
            s.variables.update(block)
        for block in doc.get("locals", []):
            s.locals.update(block)
        for block in doc.get("output", []):
            s.outputs.update(block)
        s.terraform += doc.get("terraform", [])
    return s


def ref(address: str, attribute: str) -> str:
    return "${" + f"{address}.{attribute}" + "}"


def policy_doc(stack: Stack, expression: str) -> dict:
    """The ``aws_iam_policy_document`` a ``policy = data.x.json`` attribute names."""
    m = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", expression)
    assert m, f"policy {expression!r} is not an aws_iam_policy_document"
    return stack.data[f"aws_iam_policy_document.{m.group(1)}"]


def statements(doc: dict) -> list[dict]:
    return doc.get("statement", [])


# -- versions, variables, example settings ------------------------------------------------

def test_terraform_and_provider_versions_are_pinned(stack):
    settings = stack.terraform[0]
    assert settings["required_version"] == ">= 1.14"
    aws = settings["required_providers"][0]["aws"]
    assert aws["source"] == "hashicorp/aws" and aws["version"] == "~> 6.0"


def test_variables_are_described_and_the_example_sets_only_real_ones(stack):
    for name, body in stack.variables.items():
        assert body.get("description"), f"variable {name} has no description"
    with open(TF_DIR / "terraform.tfvars.example") as f:
        example = hcl2.load(f, serialization_options=OPTIONS)
    unknown = set(example) - set(stack.variables)
    assert not unknown, f"terraform.tfvars.example sets undeclared variables {unknown}"
    assert stack.var("instance_types") == ["optimal"]
    for prefix in ("input_prefix", "manifest_prefix", "results_prefix"):
        # A prefix without its slash would also match "data2/" in an IAM resource.
        assert stack.var(prefix).endswith("/") and not stack.var(prefix).startswith("/")
        assert example[prefix] == stack.var(prefix)


# -- network ------------------------------------------------------------------------------

def test_private_subnets_span_two_zones_behind_one_nat(stack):
    private = stack.resources["aws_subnet.private"]
    assert private["count"] == 2
    assert private["availability_zone"] == "${local.azs[count.index]}"
    assert private["map_public_ip_on_launch"] is False
    zones = stack.var("availability_zones")
    assert len(set(zones)) == 2 and all(z.startswith(stack.var("region")) for z in zones)

    nat = stack.resources["aws_nat_gateway.main"]
    assert nat["subnet_id"] == ref("aws_subnet.public", "id")
    route = stack.resources["aws_route_table.private"]["route"][0]
    assert route["cidr_block"] == "0.0.0.0/0"
    assert route["nat_gateway_id"] == ref("aws_nat_gateway.main", "id")
    assoc = stack.resources["aws_route_table_association.private"]
    assert assoc["count"] == 2 and assoc["subnet_id"] == "${aws_subnet.private[count.index].id}"


def test_s3_and_bedrock_are_reached_through_endpoints(stack):
    s3 = stack.resources["aws_vpc_endpoint.s3"]
    assert s3["vpc_endpoint_type"] == "Gateway"
    assert s3["service_name"].endswith(".s3")
    assert ref("aws_route_table.private", "id") in s3["route_table_ids"]

    bedrock = stack.resources["aws_vpc_endpoint.bedrock_runtime"]
    assert bedrock["vpc_endpoint_type"] == "Interface"
    assert stack.resolve(bedrock["service_name"]) == "com.amazonaws.eu-west-1.bedrock-runtime"
    assert bedrock["private_dns_enabled"] is True
    assert bedrock["subnet_ids"] == "${aws_subnet.private[*].id}"


def test_flow_logs_record_all_traffic_of_the_vpc(stack):
    flow = stack.resources["aws_flow_log.vpc"]
    assert flow["traffic_type"] == "ALL"
    assert flow["vpc_id"] == ref("aws_vpc.main", "id")
    assert flow["log_destination"] == ref("aws_cloudwatch_log_group.flow", "arn")
    assert flow["iam_role_arn"] == ref("aws_iam_role.flow_logs", "arn")


def test_batch_instances_accept_nothing_inbound(stack):
    sg = stack.resources["aws_security_group.batch"]
    assert "ingress" not in sg
    egress = [(e["from_port"], e["to_port"], e["protocol"]) for e in sg["egress"]]
    assert egress == [(443, 443, "tcp")]
    assert stack.resources["aws_default_security_group.default"].keys() == {"vpc_id"}


# -- buckets ------------------------------------------------------------------------------

@pytest.mark.parametrize("bucket", ["input", "results", "access_logs"])
def test_bucket_is_private_encrypted_versioned_and_tls_only(stack, bucket):
    r = stack.resources
    bucket_ref = ref(f"aws_s3_bucket.{bucket}", "id")
    block = r[f"aws_s3_bucket_public_access_block.{bucket}"]
    assert block["bucket"] == bucket_ref
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls",
                 "restrict_public_buckets"):
        assert block[flag] is True, flag

    sse = r[f"aws_s3_bucket_server_side_encryption_configuration.{bucket}"]
    assert sse["bucket"] == bucket_ref
    algorithm = sse["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"]
    assert algorithm == ("AES256" if bucket == "access_logs" else "aws:kms")

    versioning = r[f"aws_s3_bucket_versioning.{bucket}"]
    assert versioning["bucket"] == bucket_ref
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"

    bucket_policy = r[f"aws_s3_bucket_policy.{bucket}"]
    assert bucket_policy["bucket"] == bucket_ref
    deny = [st for st in statements(policy_doc(stack, bucket_policy["policy"]))
            if st.get("effect") == "Deny"]
    assert len(deny) == 1
    (cond,) = deny[0]["condition"]
    assert (cond["test"], cond["variable"], cond["values"]) == ("Bool", "aws:SecureTransport",
                                                                ["false"])
    assert deny[0]["actions"] == ["s3:*"]
    resources = stack.resolve(deny[0]["resources"])
    assert len(resources) == 2 and resources[1] == resources[0] + "/*"


def test_data_buckets_log_their_access(stack):
    for bucket in ("input", "results"):
        logging = stack.resources[f"aws_s3_bucket_logging.{bucket}"]
        assert logging["target_bucket"] == ref("aws_s3_bucket.access_logs", "id")


# -- images and instances -----------------------------------------------------------------

def test_ecr_tags_are_immutable_and_scanned(stack):
    repo = stack.resources["aws_ecr_repository.job"]
    assert repo["image_tag_mutability"] == "IMMUTABLE"
    assert repo["image_scanning_configuration"][0]["scan_on_push"] is True


def test_launch_template_requires_imdsv2(stack):
    meta = stack.resources["aws_launch_template.batch"]["metadata_options"][0]
    assert meta["http_tokens"] == "required"
    assert meta["http_endpoint"] == "enabled"
    assert meta["http_put_response_hop_limit"] == 1
    for env in ("spot", "ondemand"):
        template = stack.resources[f"aws_batch_compute_environment.{env}"][
            "compute_resources"][0]["launch_template"][0]
        assert template["launch_template_id"] == ref("aws_launch_template.batch", "id")


# -- Batch ----------------------------------------------------------------------------------

def test_spot_environment_scales_from_zero_with_price_capacity_optimised_spot(stack):
    spot = stack.resources["aws_batch_compute_environment.spot"]
    assert spot["type"] == "MANAGED"
    cr = spot["compute_resources"][0]
    assert cr["type"] == "SPOT"
    assert cr["allocation_strategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert cr["min_vcpus"] == 0
    assert cr["max_vcpus"] == "${var.max_vcpus}"
    assert cr["instance_type"] == "${var.instance_types}"
    assert cr["spot_iam_fleet_role"] == ref("aws_iam_role.spot_fleet", "arn")
    assert cr["subnets"] == "${local.compute_common.subnets}"
    assert stack.locals["compute_common"]["subnets"] == "${aws_subnet.private[*].id}"


def test_on_demand_environment_is_the_best_fit_progressive_fallback(stack):
    cr = stack.resources["aws_batch_compute_environment.ondemand"]["compute_resources"][0]
    assert cr["type"] == "EC2"
    assert cr["allocation_strategy"] == "BEST_FIT_PROGRESSIVE"
    assert cr["min_vcpus"] == 0
    assert cr["instance_type"] == "${var.instance_types}"


def test_queue_tries_spot_then_on_demand(stack):
    queue = stack.resources["aws_batch_job_queue.main"]
    order = sorted(queue["compute_environment_order"], key=lambda o: o["order"])
    assert [o["compute_environment"] for o in order] == [
        ref("aws_batch_compute_environment.spot", "arn"),
        ref("aws_batch_compute_environment.ondemand", "arn"),
    ]
    assert len({o["order"] for o in order}) == 2


def test_job_definition_runs_read_only_unprivileged_with_a_tmpfs(stack):
    jobdef = stack.resources["aws_batch_job_definition.slice"]
    assert jobdef["container_properties"] == "${jsonencode(local.slice_container)}"
    assert jobdef["platform_capabilities"] == ["EC2"]
    assert jobdef["timeout"][0]["attempt_duration_seconds"] == "${var.job_timeout_seconds}"
    c = stack.locals["slice_container"]
    assert c["readonlyRootFilesystem"] is True
    assert c["privileged"] is False
    assert c["linuxParameters"]["initProcessEnabled"] is True
    (tmpfs,) = c["linuxParameters"]["tmpfs"]
    assert tmpfs["containerPath"] == "/tmp" and tmpfs["size"] == "${var.job_tmpfs_mib}"
    assert {r["type"]: r["value"] for r in c["resourceRequirements"]} == {
        "VCPU": "${tostring(var.job_vcpus)}", "MEMORY": "${tostring(var.job_memory_mib)}"}
    assert c["command"][0] == "slice"
    assert c["image"].startswith(ref("aws_ecr_repository.job", "repository_url"))
    assert c["jobRoleArn"] == ref("aws_iam_role.job", "arn")
    assert c["executionRoleArn"] == ref("aws_iam_role.execution", "arn")
    env = {e["name"]: e["value"] for e in c["environment"]}
    assert env["TELEMETRY_LAB_ENGINE"] == "${var.engine}"
    # What telemetry_lab.bedrock calls: the configured model, through its profile if any.
    assert env["TELEMETRY_LAB_BEDROCK_MODEL"] == "${local.bedrock_model}"
    assert "var.bedrock_model_id" in stack.locals["bedrock_model"]
    assert env["AWS_REGION"] == "${var.region}"
    assert stack.var("engine") == "papermill"
    assert stack.var("job_tmpfs_mib") < stack.var("job_memory_mib")


def test_job_runs_as_the_image_user(stack):
    """The job definition's user is the numeric non-root USER of the image."""
    user = stack.resolve(stack.locals["slice_container"]["user"])
    dockerfile = (REPO / "job_image" / "Dockerfile").read_text()
    image_user = re.findall(r"^USER\s+(\S+)\s*$", dockerfile, re.M)[-1]
    assert user == image_user
    assert not user.startswith("0") and user.split(":")[0].isdigit()


def test_retries_only_spot_reclaims_and_image_pulls(stack):
    strategy = stack.resources["aws_batch_job_definition.slice"]["retry_strategy"][0]
    assert strategy["attempts"] == "${var.job_attempts}" and stack.var("job_attempts") > 1
    rules = [{k: v for k, v in rule.items()} for rule in strategy["evaluate_on_exit"]]
    assert rules == [
        {"action": "RETRY", "on_status_reason": "Host EC2*"},
        {"action": "RETRY", "on_reason": "CannotPullContainerError:*"},
        {"action": "EXIT", "on_exit_code": "0"},
        {"action": "EXIT", "on_exit_code": "*"},
    ]


# -- IAM ------------------------------------------------------------------------------------

def all_policy_documents(stack):
    return {k: v for k, v in stack.data.items() if k.startswith("aws_iam_policy_document.")}


def test_every_policy_is_a_policy_document_this_test_reads(stack):
    attributes = {"aws_iam_role_policy": "policy", "aws_s3_bucket_policy": "policy",
                  "aws_sns_topic_policy": "policy", "aws_kms_key": "policy",
                  "aws_iam_role": "assume_role_policy"}
    used = set()
    for address, body in stack.resources.items():
        rtype = address.split(".")[0]
        if rtype in attributes:
            used.add(id(policy_doc(stack, body[attributes[rtype]])))
        assert rtype != "aws_iam_policy", f"{address}: use an inline role policy document"
    # ...and every policy document is one of those, so the checks below see them all.
    assert used == {id(doc) for doc in all_policy_documents(stack).values()}
    attached = {a: b["policy_arn"] for a, b in stack.resources.items()
                if a.startswith("aws_iam_role_policy_attachment.")}
    assert attached.keys() == MANAGED_POLICIES.keys()
    for address, arn in attached.items():
        assert arn.endswith(":iam::aws:policy/" + MANAGED_POLICIES[address])


def test_no_policy_allows_a_wildcard_action(stack):
    for address, doc in all_policy_documents(stack).items():
        for st in statements(doc):
            for action in st.get("actions", []):
                assert action != "*", f"{address}: action '*'"
                service, _, verb = action.partition(":")
                if st.get("effect", "Allow") == "Allow":
                    assert verb != "*", f"{address}: allows every {service} action"
                else:
                    # The only deny-all is the TLS guard on the buckets.
                    assert st["condition"][0]["variable"] == "aws:SecureTransport", address
            assert "not_actions" not in st, f"{address}: NotAction grants by exclusion"


def test_trust_policies_name_one_service_each(stack):
    expected = {"instance": "ec2.amazonaws.com", "execution": "ecs-tasks.amazonaws.com",
                "job": "ecs-tasks.amazonaws.com", "spot_fleet": "spotfleet.amazonaws.com",
                "flow_logs": "vpc-flow-logs.amazonaws.com"}
    for role, service in expected.items():
        doc = policy_doc(stack, stack.resources[f"aws_iam_role.{role}"]["assume_role_policy"])
        (st,) = statements(doc)
        assert st["actions"] == ["sts:AssumeRole"]
        assert st["principals"] == [{"type": "Service", "identifiers": [service]}]


def _job_statements(stack):
    doc = policy_doc(stack, stack.resources["aws_iam_role_policy.job"]["policy"])
    return [stack.resolve(st) for st in statements(doc)]


def test_job_role_reads_input_and_manifests_and_writes_only_results(stack):
    input_arn = "arn:aws:s3:::telemetry-lab-input-123456789012-eu-west-1"
    results_arn = "arn:aws:s3:::telemetry-lab-results-123456789012-eu-west-1"
    readable = {f"{input_arn}/{stack.var('input_prefix')}*",
                f"{input_arn}/{stack.var('manifest_prefix')}*",
                f"{results_arn}/{stack.var('results_prefix')}*"}
    writable = {f"{results_arn}/{stack.var('results_prefix')}*"}
    listable = {input_arn: {f"{stack.var('input_prefix')}*", f"{stack.var('manifest_prefix')}*"},
                results_arn: {f"{stack.var('results_prefix')}*"}}
    reads = writes = lists = 0
    for st in _job_statements(stack):
        s3_actions = [a for a in st["actions"] if a.startswith("s3:")]
        if not s3_actions:
            continue
        assert len(s3_actions) == len(st["actions"]), "mix of S3 and other actions"
        for action in s3_actions:
            if action == "s3:ListBucket":
                (bucket,) = st["resources"]
                (cond,) = st["condition"]
                assert (cond["test"], cond["variable"]) == ("StringLike", "s3:prefix")
                assert set(cond["values"]) == listable[bucket]
                lists += 1
            elif action == "s3:GetObject":
                assert set(st["resources"]) <= readable, st["resources"]
                reads += 1
            elif action in ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
                assert set(st["resources"]) <= writable, st["resources"]
                writes += 1
            else:
                pytest.fail(f"unexpected S3 action {action}")
    assert reads >= 2 and writes == 3 and lists == 2


def test_job_role_invokes_only_the_configured_model(stack):
    model = stack.var("bedrock_model_id")
    bedrock = [st for st in _job_statements(stack)
               if any(a.startswith("bedrock:") for a in st["actions"])]
    assert bedrock
    for st in bedrock:
        assert set(st["actions"]) <= {"bedrock:InvokeModel",
                                      "bedrock:InvokeModelWithResponseStream"}
        for resource in st["resources"]:
            assert resource.endswith(f"foundation-model/{model}") or \
                resource.endswith(f"inference-profile/*.{model}"), resource
            if resource.startswith("arn:aws:bedrock:*:"):
                # Other regions only through one of this model's inference profiles.
                (cond,) = st["condition"]
                assert cond["variable"] == "bedrock:InferenceProfileArn"
                assert all(v.endswith(f"inference-profile/*.{model}") for v in cond["values"])


def test_kms_use_by_the_job_goes_through_s3_only(stack):
    kms = [st for st in _job_statements(stack) if any(a.startswith("kms:") for a in st["actions"])]
    (st,) = kms
    assert st["condition"][0]["variable"] == "kms:ViaService"
    assert st["resources"] == ["${aws_kms_key.data.arn}"]


# -- logs and alerts ------------------------------------------------------------------------

def test_failed_jobs_reach_the_topic_and_raise_an_alarm(stack):
    r = stack.resources
    log_group = r["aws_cloudwatch_log_group.jobs"]
    assert log_group["retention_in_days"] == "${var.log_retention_days}"
    assert stack.locals["slice_container"]["logConfiguration"]["options"]["awslogs-group"] == \
        ref("aws_cloudwatch_log_group.jobs", "name")

    rule = r["aws_cloudwatch_event_rule.job_failed"]
    assert rule["event_pattern"] == "${jsonencode(local.job_failed_pattern)}"
    pattern = stack.locals["job_failed_pattern"]
    assert pattern["source"] == ["aws.batch"]
    assert pattern["detail"]["status"] == ["FAILED"]
    assert pattern["detail"]["jobQueue"] == [ref("aws_batch_job_queue.main", "arn")]
    target = r["aws_cloudwatch_event_target.job_failed"]
    assert target["arn"] == ref("aws_sns_topic.alerts", "arn")
    assert target["rule"] == ref("aws_cloudwatch_event_rule.job_failed", "name")

    alarm = r["aws_cloudwatch_metric_alarm.failed_jobs"]
    assert alarm["alarm_actions"] == [ref("aws_sns_topic.alerts", "arn")]
    assert alarm["dimensions"] == {"RuleName": ref("aws_cloudwatch_event_rule.job_failed", "name")}
    publishers = {st["principals"][0]["identifiers"][0] for st in statements(
        policy_doc(stack, r["aws_sns_topic_policy.alerts"]["policy"]))}
    assert publishers == {"events.amazonaws.com", "cloudwatch.amazonaws.com"}


# -- outputs and the make targets -----------------------------------------------------------

TARGETS = ("init", "plan", "apply", "env", "deploy-container", "generate-data", "submit-jobs",
           "logs", "destroy")


def test_make_targets_use_only_outputs_the_stack_has(stack):
    text = DEPLOY_MK.read_text()
    used = set(re.findall(r"tf_out ([a-z_]+)", text)) | set(re.findall(r"output -json (\w+)", text))
    assert used, "deploy.mk reads no output"
    assert used <= stack.outputs.keys(), used - stack.outputs.keys()
    for target in TARGETS:
        assert re.search(rf"^{re.escape(target)}:", text, re.M), f"no target {target}"


def test_readme_documents_every_target_and_the_hourly_costs():
    readme = (TF_DIR / "README.md").read_text()
    for target in TARGETS:
        assert f"make {target}" in readme, target
    assert "NAT gateway" in readme and "interface endpoint" in readme


@pytest.fixture
def fake_tools(tmp_path, stack):
    """A `terraform` answering `output` from the stack's resolved outputs, and a
    `telemetry-lab` that prints its arguments as JSON."""
    outputs = {name: stack.resolve(body["value"]) for name, body in stack.outputs.items()}
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    terraform = tmp_path / "terraform"
    terraform.write_text(f"""#!{sys.executable}
import json, sys
outputs = json.load(open({str(tmp_path / 'outputs.json')!r}))
args = [a for a in sys.argv[1:] if not a.startswith("-chdir=")]
assert args[0] == "output", args
value = outputs[args[-1]]
print(json.dumps(value) if args[1] == "-json" else value, end="" if args[1] == "-raw" else "\\n")
""")
    cli = tmp_path / "telemetry-lab"
    cli.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                   "print(json.dumps({'argv': sys.argv[1:],\n"
                   "                  'region': os.environ.get('AWS_REGION')}))\n")
    for tool in (terraform, cli):
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return {"TF": str(terraform), "TELEMETRY_LAB": str(cli)}


def make(target, tools, **variables):
    args = ["make", "--no-print-directory", "-f", str(DEPLOY_MK), target,
            *(f"{k}={v}" for k, v in {**tools, **variables}.items())]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.skipif(not shutil.which("make"), reason="GNU make is not installed")
def test_make_env_prints_shell_exports(fake_tools):
    out = make("env", fake_tools, PYTHON=sys.executable)
    exports = dict(line[len("export "):].split("=", 1) for line in out.splitlines())
    assert exports["TELEMETRY_LAB_JOB_QUEUE"] == "telemetry-lab"
    assert exports["TELEMETRY_LAB_RESULTS"] == \
        "s3://telemetry-lab-results-123456789012-eu-west-1/runs"
    assert exports["AWS_REGION"] == "eu-west-1"


@pytest.mark.skipif(not shutil.which("make"), reason="GNU make is not installed")
def test_make_submit_jobs_passes_the_stack_to_the_cli(fake_tools):
    call = json.loads(make("submit-jobs", fake_tools, FILES_PER_JOB=3, RUN_ID="r1",
                           PARAMS="s3://b/manifests/p.json"))
    assert call["region"] == "eu-west-1"
    assert call["argv"] == [
        "submit", "--backend", "batch", "--region", "eu-west-1",
        "--manifest", "s3://telemetry-lab-input-123456789012-eu-west-1/data/manifest.json",
        "--results", "s3://telemetry-lab-results-123456789012-eu-west-1/runs",
        "--files-per-job", "3", "--job-queue", "telemetry-lab",
        "--job-definition", "telemetry-lab-slice",
        "--params", "s3://b/manifests/p.json", "--run-id", "r1",
    ]


@pytest.mark.skipif(not shutil.which("make"), reason="GNU make is not installed")
def test_make_generate_data_writes_to_the_input_prefix(fake_tools):
    out = make("generate-data", fake_tools, SITES=5, ROWS=1000)
    call = json.loads(out.splitlines()[-1])
    assert call["argv"] == ["generate", "--sites", "5", "--rows", "1000", "--seed", "0",
                            "--out", "s3://telemetry-lab-input-123456789012-eu-west-1/data"]


# -- linters --------------------------------------------------------------------------------

def test_checkov_reports_no_failed_check_and_every_skip_is_justified():
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV} missing: `make .venv-checkov/.installed` installs it")
    proc = subprocess.run([str(CHECKOV), "-d", str(TF_DIR), "--framework", "terraform",
                           "--skip-download", "--output", "json"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LOG_LEVEL": "ERROR"})
    report = json.loads(proc.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and not failed, failed
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100
    skipped = report["results"]["skipped_checks"]
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason.split()) >= 6, f"{check['check_id']} on {check['resource']}: {reason!r}"
    # Every skip comment in the files suppresses a check: none is stale or misplaced.
    comments = [line for path in TF_DIR.glob("*.tf") for line in path.read_text().splitlines()
                if "checkov:skip=" in line]
    assert len(comments) == len(skipped)


def test_terraform_files_are_formatted():
    terraform = shutil.which("terraform")
    if not terraform:
        pytest.skip("no terraform binary: formatting is checked where one is installed")
    proc = subprocess.run([terraform, "fmt", "-check", "-diff", str(TF_DIR)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
