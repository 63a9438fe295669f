#!/usr/bin/env bash
# TPU VM life cycle for a mixjax run (a thin wrapper of `python -m mixjax.launch.tpu_vm`).
#
#   scripts/tpu_vm/tpu_vm.sh create --name=mj --zone=us-west4-a --tpu=v5e-64 --spot --dry-run
#   scripts/tpu_vm/tpu_vm.sh launch --name=mj --zone=us-west4-a -- --gin_file=gin/quickstart.gin \
#       --gin.MODEL_DIR="'/mnt/runs/run'"  # a share every worker mounts
#
# Actions: create setup launch kill-stale status logs delete retry. Every one prints its gcloud
# command; --dry-run prints without running.
set -euo pipefail
exec python3 -m mixjax.launch.tpu_vm "$@"
