#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a CUDA GPU: the CUDA tests (mixed precision
# training, NCCL, the predictor, --batch-size auto), then the training and removal speed
# benches on that GPU. Prints everything; writes bench/results/*-<gpu>.csv.
#   bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m pytest -q -m cuda tests/test_cuda.py
python3 bench/train_speed.py --batch 16 --steps 10
python3 bench/remove_speed.py --photos 50 --passes 3
