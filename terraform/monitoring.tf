# Job logs, and word of failures: every FAILED job of the queue goes to an SNS topic
# (one message per job, not per array child), and an alarm counts them.

resource "aws_cloudwatch_log_group" "jobs" {
  name              = local.job_log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.data.arn
}

resource "aws_sns_topic" "alerts" {
  name              = "${var.name}-alerts"
  kms_master_key_id = aws_kms_key.data.arn
}

resource "aws_sns_topic_subscription" "email" {
  count     = var.alert_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = var.alert_email
}

resource "aws_sns_topic_policy" "alerts" {
  arn    = aws_sns_topic.alerts.arn
  policy = data.aws_iam_policy_document.alerts_topic.json
}

data "aws_iam_policy_document" "alerts_topic" {
  statement {
    sid       = "EventBridgePublishesFailedJobs"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.job_failed.arn]
    }
  }

  statement {
    sid       = "CloudWatchPublishesTheAlarm"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_metric_alarm.failed_jobs.arn]
    }
  }
}

locals {
  # An array job fails when any child does; its children's events carry an index and are
  # left out so that one bad run sends one message.
  job_failed_pattern = {
    source        = ["aws.batch"]
    "detail-type" = ["Batch Job State Change"]
    detail = {
      status          = ["FAILED"]
      jobQueue        = [aws_batch_job_queue.main.arn]
      arrayProperties = { index = [{ exists = false }] }
    }
  }
}

resource "aws_cloudwatch_event_rule" "job_failed" {
  name          = "${var.name}-job-failed"
  description   = "A Batch job of the ${var.name} queue reached FAILED"
  event_pattern = jsonencode(local.job_failed_pattern)
}

resource "aws_cloudwatch_event_target" "job_failed" {
  rule = aws_cloudwatch_event_rule.job_failed.name
  arn  = aws_sns_topic.alerts.arn

  input_transformer {
    input_paths = {
      name   = "$.detail.jobName"
      id     = "$.detail.jobId"
      reason = "$.detail.statusReason"
    }
    input_template = "\"Batch job <name> (<id>) FAILED: <reason>. Logs: make logs JOB_ID=<id>\""
  }
}

resource "aws_cloudwatch_metric_alarm" "failed_jobs" {
  alarm_name          = "${var.name}-failed-jobs"
  alarm_description   = "At least one job of the ${var.name} queue failed in the last 5 minutes"
  namespace           = "AWS/Events"
  metric_name         = "TriggeredRules"
  dimensions          = { RuleName = aws_cloudwatch_event_rule.job_failed.name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}
