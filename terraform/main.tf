# Shared lookups and names. The stack: network.tf (VPC), storage.tf (buckets), ecr.tf,
# iam.tf, batch.tf (compute, queue, job definition), monitoring.tf (logs, alerts), kms.tf.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# The two AZs are named, not picked from whatever the region lists, so the subnets never
# move when AWS adds a zone. A name the region does not have fails the plan here.
data "aws_availability_zones" "selected" {
  state = "available"

  filter {
    name   = "zone-name"
    values = var.availability_zones
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == 2
      error_message = "availability_zones must name two available zones of var.region."
    }
  }
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  azs        = sort(data.aws_availability_zones.selected.names)

  # Bucket names are global: the account and region make them unique.
  input_bucket   = "${var.name}-input-${local.account_id}-${var.region}"
  results_bucket = "${var.name}-results-${local.account_id}-${var.region}"
  logs_bucket    = "${var.name}-access-logs-${local.account_id}-${var.region}"

  input_bucket_arn   = "arn:${local.partition}:s3:::${local.input_bucket}"
  results_bucket_arn = "arn:${local.partition}:s3:::${local.results_bucket}"

  # The results root the jobs write below: results/<run>/..., results/latest/..., reports/...
  results_root     = "s3://${local.results_bucket}/${trimsuffix(var.results_prefix, "/")}"
  default_manifest = "s3://${local.input_bucket}/${var.input_prefix}manifest.json"

  job_log_group  = "/aws/batch/${var.name}"
  flow_log_group = "/aws/vpc/${var.name}-flow-logs"

  # What the jobs call (TELEMETRY_LAB_BEDROCK_MODEL): the inference profile, else the model.
  bedrock_model = var.bedrock_inference_profile_geo == "" ? var.bedrock_model_id : "${var.bedrock_inference_profile_geo}.${var.bedrock_model_id}"

  # The numeric user of the job image (job_image/Dockerfile).
  container_user = "10001:10001"
}
