# Compute: a Spot environment first, an on-demand one behind it, both scaling to zero.
# Batch fills the Spot environment up to max_vcpus and only then places jobs on demand;
# a Spot shortage leaves jobs RUNNABLE rather than moving them (see README.md).

resource "aws_launch_template" "batch" {
  name_prefix            = "${var.name}-batch-"
  description            = "Batch instances of ${var.name}: IMDSv2 only, encrypted root volume"
  update_default_version = true

  # IMDSv2 only. A hop limit of 1 keeps the metadata service (and so the instance role's
  # credentials) out of reach of containers on the bridge network; jobs get theirs from
  # the ECS task credentials endpoint.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda" # root device of the ECS-optimised Amazon Linux 2023 AMI
    ebs {
      volume_size           = var.root_volume_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${var.name}-batch" }
  }
}

locals {
  compute_common = {
    subnets            = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.batch.id]
    instance_role      = aws_iam_instance_profile.instance.arn
  }
}

resource "aws_batch_compute_environment" "spot" {
  name_prefix = "${var.name}-spot-"
  type        = "MANAGED"

  compute_resources {
    type                = "SPOT"
    allocation_strategy = "SPOT_PRICE_CAPACITY_OPTIMIZED"
    min_vcpus           = 0
    max_vcpus           = var.max_vcpus
    instance_type       = var.instance_types
    subnets             = local.compute_common.subnets
    security_group_ids  = local.compute_common.security_group_ids
    instance_role       = local.compute_common.instance_role
    spot_iam_fleet_role = aws_iam_role.spot_fleet.arn

    launch_template {
      launch_template_id = aws_launch_template.batch.id
      version            = aws_launch_template.batch.latest_version
    }

    ec2_configuration {
      image_type = "ECS_AL2023"
    }
  }

  # A changed launch template replaces the environment; the queue moves to the new one
  # before the old one is deleted.
  lifecycle {
    create_before_destroy = true
  }

  depends_on = [aws_iam_role_policy_attachment.instance, aws_iam_role_policy_attachment.spot_fleet]
}

resource "aws_batch_compute_environment" "ondemand" {
  name_prefix = "${var.name}-ondemand-"
  type        = "MANAGED"

  compute_resources {
    type                = "EC2"
    allocation_strategy = "BEST_FIT_PROGRESSIVE"
    min_vcpus           = 0
    max_vcpus           = var.ondemand_max_vcpus
    instance_type       = var.instance_types
    subnets             = local.compute_common.subnets
    security_group_ids  = local.compute_common.security_group_ids
    instance_role       = local.compute_common.instance_role

    launch_template {
      launch_template_id = aws_launch_template.batch.id
      version            = aws_launch_template.batch.latest_version
    }

    ec2_configuration {
      image_type = "ECS_AL2023"
    }
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [aws_iam_role_policy_attachment.instance]
}

resource "aws_batch_job_queue" "main" {
  name     = var.name
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.spot.arn
  }

  compute_environment_order {
    order               = 2
    compute_environment = aws_batch_compute_environment.ondemand.arn
  }
}

locals {
  # The container of one array child (the job definition's containerProperties).
  slice_container = {
    image            = "${aws_ecr_repository.job.repository_url}:${var.image_tag}"
    command          = ["slice", "--manifest", "Ref::manifest", "--results", "Ref::results"]
    jobRoleArn       = aws_iam_role.job.arn
    executionRoleArn = aws_iam_role.execution.arn
    resourceRequirements = [
      { type = "VCPU", value = tostring(var.job_vcpus) },
      { type = "MEMORY", value = tostring(var.job_memory_mib) },
    ]

    # Batch has no setting to drop Linux capabilities. The job runs as the image's
    # non-root user, which holds none; the entry point sets no_new_privs and the image has
    # no setuid binaries, so none can be gained (job_image/README.md).
    user                   = local.container_user
    privileged             = false
    readonlyRootFilesystem = true
    linuxParameters = {
      # An init process as PID 1 forwards SIGTERM to Python and reaps kernel processes.
      initProcessEnabled = true
      tmpfs = [{
        containerPath = "/tmp"
        size          = var.job_tmpfs_mib
        mountOptions  = ["rw", "nosuid", "nodev", "noexec"]
      }]
    }

    environment = [
      { name = "TELEMETRY_LAB_ENGINE", value = var.engine },
      { name = "TELEMETRY_LAB_BEDROCK_MODEL", value = local.bedrock_model },
      # The hop limit of 1 hides IMDS from containers, so the region is given explicitly.
      { name = "AWS_REGION", value = var.region },
      { name = "AWS_DEFAULT_REGION", value = var.region },
    ]

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.jobs.name
        "awslogs-region"        = var.region
        "awslogs-stream-prefix" = "slice"
      }
    }
  }
}

# One array child: `telemetry-lab-container slice --manifest M --results R`.
# `telemetry-lab submit` overrides the command with its run's manifest and results and sets
# TELEMETRY_LAB_ARRAY_SIZE, TELEMETRY_LAB_RUN_ID and TELEMETRY_LAB_PARAMS; AWS Batch sets
# AWS_BATCH_JOB_ARRAY_INDEX. The parameters serve a plain `aws batch submit-job`.
resource "aws_batch_job_definition" "slice" {
  name                  = "${var.name}-slice"
  type                  = "container"
  platform_capabilities = ["EC2"]
  propagate_tags        = true

  parameters = {
    manifest = local.default_manifest
    results  = local.results_root
  }

  container_properties = jsonencode(local.slice_container)

  # Retry only what another attempt can fix: the instance went away (Spot reclaim) or the
  # image could not be pulled. Any exit code, including 0, ends the job: a data error or a
  # timeout would fail the same way again. Rules are evaluated in order.
  retry_strategy {
    attempts = var.job_attempts

    evaluate_on_exit {
      action           = "RETRY"
      on_status_reason = "Host EC2*"
    }
    evaluate_on_exit {
      action    = "RETRY"
      on_reason = "CannotPullContainerError:*"
    }
    evaluate_on_exit {
      action       = "EXIT"
      on_exit_code = "0"
    }
    evaluate_on_exit {
      action       = "EXIT"
      on_exit_code = "*"
    }
  }

  timeout {
    attempt_duration_seconds = var.job_timeout_seconds
  }
}
