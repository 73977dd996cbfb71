variable "name" {
  description = "Prefix of every resource name; also the ECR repository and job queue name."
  type        = string
  default     = "telemetry-lab"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}[a-z0-9]$", var.name))
    error_message = "name must be 3-22 of a-z 0-9 and -, starting with a letter (it is part of bucket names)."
  }
}

variable "region" {
  description = "AWS region of the whole stack."
  type        = string
  default     = "eu-west-1"
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}

# -- network ------------------------------------------------------------------------------

variable "availability_zones" {
  description = "The two availability zones of the private subnets; they must belong to region."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b"]

  validation {
    condition     = length(var.availability_zones) == 2 && length(distinct(var.availability_zones)) == 2
    error_message = "availability_zones must name exactly two different zones."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC: two private /20 subnets and one public /24 are cut from it."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 16
    error_message = "vpc_cidr must be a valid CIDR block of /16 or larger."
  }
}

# -- data ---------------------------------------------------------------------------------

variable "input_prefix" {
  description = "Key prefix of the telemetry files in the input bucket (`make generate-data` writes here)."
  type        = string
  default     = "data/"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/$", var.input_prefix))
    error_message = "input_prefix must be a relative key prefix ending in '/', e.g. \"data/\"."
  }
}

variable "manifest_prefix" {
  description = "Key prefix of manifests and params files in the input bucket."
  type        = string
  default     = "manifests/"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/$", var.manifest_prefix))
    error_message = "manifest_prefix must be a relative key prefix ending in '/', e.g. \"manifests/\"."
  }
}

variable "results_prefix" {
  description = "Key prefix of the results root in the results bucket (jobs write results/ and reports/ below it)."
  type        = string
  default     = "runs/"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/$", var.results_prefix))
    error_message = "results_prefix must be a relative key prefix ending in '/', e.g. \"runs/\"."
  }
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept in the versioned buckets."
  type        = number
  default     = 90
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete buckets and the ECR repository that still hold data."
  type        = bool
  default     = false
}

# -- compute ------------------------------------------------------------------------------

variable "instance_types" {
  description = "Instance types or families of both compute environments; \"optimal\" lets Batch choose (x86_64). Graviton families (e.g. c7g) need an arm64 image."
  type        = list(string)
  default     = ["optimal"]
}

variable "max_vcpus" {
  description = "vCPU ceiling of the Spot compute environment (it scales to 0 when idle)."
  type        = number
  default     = 64

  validation {
    condition     = var.max_vcpus >= 1
    error_message = "max_vcpus must be at least 1."
  }
}

variable "ondemand_max_vcpus" {
  description = "vCPU ceiling of the on-demand compute environment, used once the Spot one is at its ceiling."
  type        = number
  default     = 16

  validation {
    condition     = var.ondemand_max_vcpus >= 1
    error_message = "ondemand_max_vcpus must be at least 1."
  }
}

variable "root_volume_gib" {
  description = "Root EBS volume of each instance, GiB (holds the pulled images)."
  type        = number
  default     = 30
}

# -- the job ------------------------------------------------------------------------------

variable "image_tag" {
  description = "Tag of the job image in ECR. Tags are immutable; the Makefile passes the git commit."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid image tag other than \"latest\" (tags are immutable)."
  }
}

variable "engine" {
  description = "Engine of `telemetry-lab slice` in the container: papermill or python."
  type        = string
  default     = "papermill"

  validation {
    condition     = contains(["papermill", "python"], var.engine)
    error_message = "engine must be \"papermill\" or \"python\"."
  }
}

variable "job_vcpus" {
  description = "vCPUs of one array child."
  type        = number
  default     = 1
}

variable "job_memory_mib" {
  description = "Memory of one array child, MiB (the /tmp tmpfs counts against it)."
  type        = number
  default     = 4096
}

variable "job_tmpfs_mib" {
  description = "Size of the /tmp tmpfs, MiB: scratch, kernel runtime files, notebook outputs."
  type        = number
  default     = 1024

  validation {
    condition     = var.job_tmpfs_mib >= 64 && var.job_tmpfs_mib < var.job_memory_mib
    error_message = "job_tmpfs_mib must be at least 64 and less than job_memory_mib."
  }
}

variable "job_timeout_seconds" {
  description = "Timeout of one attempt of one array child, seconds."
  type        = number
  default     = 3600

  validation {
    condition     = var.job_timeout_seconds >= 60
    error_message = "job_timeout_seconds must be at least 60 (the Batch minimum)."
  }
}

variable "job_attempts" {
  description = "Attempts per array child; only Spot reclaims and image-pull failures are retried."
  type        = number
  default     = 3

  validation {
    condition     = var.job_attempts >= 1 && var.job_attempts <= 10
    error_message = "job_attempts must be between 1 and 10."
  }
}

variable "bedrock_model_id" {
  description = "Foundation model of the bedrock report backend (e.g. amazon.nova-pro-v1:0); the job role may invoke this model only."
  type        = string
  default     = "amazon.nova-pro-v1:0"

  validation {
    condition     = can(regex("^[a-z0-9-]+\\.[A-Za-z0-9.:-]+$", var.bedrock_model_id)) && !can(regex("^(us|us-gov|eu|apac|jp|au|ca|global)\\.", var.bedrock_model_id))
    error_message = "bedrock_model_id must be a foundation-model id such as amazon.nova-pro-v1:0 (no inference-profile prefix)."
  }
}

variable "bedrock_inference_profile_geo" {
  description = "Geography prefix of the cross-region inference profile the jobs call (us, eu, apac, global, ...; must cover region), or \"\" to call the model in region directly."
  type        = string
  default     = "eu"

  validation {
    condition     = can(regex("^[a-z-]*$", var.bedrock_inference_profile_geo))
    error_message = "bedrock_inference_profile_geo must be a lower-case prefix such as \"eu\", or \"\"."
  }
}

# -- operations ---------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the job and VPC flow log groups, days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ..., 365, ..., 3653)."
  }
}

variable "access_log_retention_days" {
  description = "Days S3 server access logs are kept."
  type        = number
  default     = 365
}

variable "alert_email" {
  description = "E-mail address subscribed to the failed-job topic (empty: no subscription). The address must confirm the subscription."
  type        = string
  default     = ""
}

variable "ecr_keep_images" {
  description = "Number of images the ECR repository keeps; older ones expire."
  type        = number
  default     = 20
}
