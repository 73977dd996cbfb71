# Everything the CLI and the Makefile need. `make env` prints cli_environment as export lines.

output "region" {
  description = "Region of the stack."
  value       = var.region
}

output "input_bucket" {
  description = "Bucket of telemetry files, manifests and params files."
  value       = aws_s3_bucket.input.bucket
}

output "input_uri" {
  description = "Where `make generate-data` writes telemetry (and its manifest.json)."
  value       = "s3://${aws_s3_bucket.input.bucket}/${var.input_prefix}"
}

output "manifest_uri_prefix" {
  description = "Where hand-built manifests and params files go; the jobs may read them."
  value       = "s3://${aws_s3_bucket.input.bucket}/${var.manifest_prefix}"
}

output "default_manifest_uri" {
  description = "The manifest the job definition names when a submission gives none."
  value       = local.default_manifest
}

output "results_bucket" {
  description = "Bucket the jobs write to."
  value       = aws_s3_bucket.results.bucket
}

output "results_uri" {
  description = "Results root of the jobs: results/<run_id>/, results/latest/, reports/."
  value       = local.results_root
}

output "ecr_repository_url" {
  description = "Repository of the job image (`make deploy-container` pushes here)."
  value       = aws_ecr_repository.job.repository_url
}

output "job_image" {
  description = "The image the current job definition revision runs."
  value       = "${aws_ecr_repository.job.repository_url}:${var.image_tag}"
}

output "job_queue" {
  description = "Name of the job queue (Spot, then on-demand)."
  value       = aws_batch_job_queue.main.name
}

output "job_queue_arn" {
  description = "ARN of the job queue."
  value       = aws_batch_job_queue.main.arn
}

output "job_definition" {
  description = "Name of the job definition (submit by name: Batch takes the latest active revision)."
  value       = aws_batch_job_definition.slice.name
}

output "job_definition_arn" {
  description = "ARN of the current job definition revision."
  value       = aws_batch_job_definition.slice.arn
}

output "log_group" {
  description = "CloudWatch log group of the jobs."
  value       = aws_cloudwatch_log_group.jobs.name
}

output "alerts_topic_arn" {
  description = "SNS topic told about every FAILED job."
  value       = aws_sns_topic.alerts.arn
}

output "bedrock_model" {
  description = "Model or inference-profile id the jobs call (TELEMETRY_LAB_BEDROCK_MODEL)."
  value       = local.bedrock_model
}

output "cli_environment" {
  description = "Environment for the CLI and the make targets, printed by `make env`."
  value = {
    AWS_REGION                   = var.region
    TELEMETRY_LAB_INPUT          = "s3://${aws_s3_bucket.input.bucket}/${var.input_prefix}"
    TELEMETRY_LAB_MANIFEST       = local.default_manifest
    TELEMETRY_LAB_RESULTS        = local.results_root
    TELEMETRY_LAB_JOB_QUEUE      = aws_batch_job_queue.main.name
    TELEMETRY_LAB_JOB_DEFINITION = aws_batch_job_definition.slice.name
    TELEMETRY_LAB_ECR_REPOSITORY = aws_ecr_repository.job.repository_url
    TELEMETRY_LAB_LOG_GROUP      = aws_cloudwatch_log_group.jobs.name
    TELEMETRY_LAB_BEDROCK_MODEL  = local.bedrock_model
  }
}
