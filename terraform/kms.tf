# One customer-managed key for the data at rest of this stack: the input and results
# buckets, the job and flow log groups, the ECR repository and the alert topic.

resource "aws_kms_key" "data" {
  description             = "${var.name}: telemetry, results, logs, images and alerts"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  is_enabled              = true
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.data.key_id
}

# In a key policy "*" as the resource means this key. Administration and use are granted
# to the account (that is, to IAM policies in it: the job role's grants use); services get
# only what they need, each scoped to this account or to its own log groups.
data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:Key policy: the account must be able to administer its own key or the key becomes unmanageable; "*" is this key, and IAM policies decide who in the account may act.
  #checkov:skip=CKV_AWS_111:Key policy: the write actions are on this key only ("*" in a key policy is the key it is attached to), delegated to IAM policies of this account.
  #checkov:skip=CKV_AWS_356:Key policy: "*" as the resource of a key policy statement means this key, not every resource.
  statement {
    sid       = "AccountAdministersTheKey"
    effect    = "Allow"
    resources = ["*"]
    actions = [
      "kms:CancelKeyDeletion", "kms:Create*", "kms:Delete*", "kms:Describe*", "kms:Disable*",
      "kms:Enable*", "kms:Get*", "kms:List*", "kms:Put*", "kms:Revoke*", "kms:RotateKeyOnDemand",
      "kms:ScheduleKeyDeletion", "kms:TagResource", "kms:UntagResource", "kms:Update*",
    ]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "IAMPoliciesMayGrantUse"
    effect    = "Allow"
    resources = ["*"]
    actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncryptsTheStackLogGroups"
    effect    = "Allow"
    resources = ["*"]
    actions   = ["kms:Decrypt*", "kms:Describe*", "kms:Encrypt*", "kms:GenerateDataKey*", "kms:ReEncrypt*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values = [
        "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:${local.job_log_group}",
        "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:${local.flow_log_group}",
      ]
    }
  }

  statement {
    sid       = "AlertPublishersUseTheEncryptedTopic"
    effect    = "Allow"
    resources = ["*"]
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com", "cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}
