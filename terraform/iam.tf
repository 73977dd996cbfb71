# Five roles, each with only what its holder does:
#   instance   - the ECS agent on each Batch instance (joins the cluster, pulls, logs)
#   execution  - pulls the job image and writes the job's log stream
#   job        - the code in the container: S3 data and Bedrock, nothing else
#   spot_fleet - lets the Spot compute environment tag the instances it requests
#   flow_logs  - lets VPC flow logs write to their log group
# Batch itself uses its service-linked role (AWSServiceRoleForBatch), created on first use.

# -- instance role --------------------------------------------------------------------------

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  name               = "${var.name}-batch-instance"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

# The ECS agent's own calls (register, poll, submit state) are what this AWS-maintained
# policy covers and follows as the agent changes. The role reads no data: S3 and Bedrock
# are granted to the job role only, and the launch template's IMDS hop limit of 1 keeps
# containers from borrowing these instance credentials.
resource "aws_iam_role_policy_attachment" "instance" {
  role       = aws_iam_role.instance.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "instance" {
  name = "${var.name}-batch-instance"
  role = aws_iam_role.instance.name
}

# -- roles assumed by ECS tasks (the job containers) -------------------------------------------

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-batch-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid = "PullTheJobImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [aws_ecr_repository.job.arn]
  }

  # GetAuthorizationToken has no resource-level permissions: "*" is the only valid resource.
  statement {
    sid       = "LogInToECR"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "WriteTheJobLogStream"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.jobs.arn}:log-stream:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-image-and-log"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "job" {
  name               = "${var.name}-batch-job"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

# What a slice does: read its manifest, params and telemetry; read earlier results (a retried
# attempt reuses them), write results and reports, delete a stale error record; ask
# Bedrock for an incident report.
data "aws_iam_policy_document" "job" {
  statement {
    sid       = "ListInputAndManifestPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [local.input_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.input_prefix}*", "${var.manifest_prefix}*"]
    }
  }

  statement {
    sid     = "ReadInputAndManifests"
    actions = ["s3:GetObject"]
    resources = [
      "${local.input_bucket_arn}/${var.input_prefix}*",
      "${local.input_bucket_arn}/${var.manifest_prefix}*",
    ]
  }

  statement {
    sid       = "ListResultsPrefix"
    actions   = ["s3:ListBucket"]
    resources = [local.results_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.results_prefix}*"]
    }
  }

  statement {
    sid = "ReadAndWriteResults"
    actions = [
      "s3:AbortMultipartUpload",
      "s3:DeleteObject",
      "s3:GetObject",
      "s3:PutObject",
    ]
    resources = ["${local.results_bucket_arn}/${var.results_prefix}*"]
  }

  # The buckets encrypt with the stack key; S3 asks KMS on the job's behalf.
  statement {
    sid       = "UseTheDataKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.data.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }

  statement {
    sid     = "InvokeTheModelAndItsInferenceProfiles"
    actions = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
    resources = [
      "arn:${local.partition}:bedrock:${var.region}::foundation-model/${var.bedrock_model_id}",
      "arn:${local.partition}:bedrock:${var.region}:${local.account_id}:inference-profile/*.${var.bedrock_model_id}",
    ]
  }

  # A cross-region inference profile runs the model in another region of its geography
  # (or, for a global profile, in any); that call is allowed only through the profile.
  statement {
    sid       = "InvokeTheModelElsewhereOnlyThroughItsProfiles"
    actions   = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
    resources = ["arn:${local.partition}:bedrock:*::foundation-model/${var.bedrock_model_id}"]
    condition {
      test     = "StringLike"
      variable = "bedrock:InferenceProfileArn"
      values   = ["arn:${local.partition}:bedrock:${var.region}:${local.account_id}:inference-profile/*.${var.bedrock_model_id}"]
    }
  }
}

resource "aws_iam_role_policy" "job" {
  name   = "telemetry-data-and-bedrock"
  role   = aws_iam_role.job.id
  policy = data.aws_iam_policy_document.job.json
}

# -- spot fleet role ------------------------------------------------------------------------

data "aws_iam_policy_document" "spot_fleet_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["spotfleet.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "spot_fleet" {
  name               = "${var.name}-spot-fleet"
  assume_role_policy = data.aws_iam_policy_document.spot_fleet_assume.json
}

# AWS-maintained: request, tag and terminate the fleet's own Spot instances.
resource "aws_iam_role_policy_attachment" "spot_fleet" {
  role       = aws_iam_role.spot_fleet.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEC2SpotFleetTaggingRole"
}

# -- flow logs role -------------------------------------------------------------------------

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ec2:${var.region}:${local.account_id}:vpc-flow-log/*"]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.name}-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    sid       = "WriteFlowLogStreams"
    actions   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }

  statement {
    sid       = "FindTheLogGroup"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}
