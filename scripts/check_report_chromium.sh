#!/usr/bin/env bash
# Check spinenav's HTML plan report in headless Chromium (it renders; every image loads).
#
#   scripts/check_report_chromium.sh              # the pytest check on the phantom report
#   scripts/check_report_chromium.sh REPORT.html  # check one report; screenshot beside it
#
# Installs Debian's chromium (apt-get) when /usr/bin/chromium is missing: about 15 s with a
# package mirror nearby (measured: apt-get update 1 s, install 13 s, 2026-11), needs root or sudo.
# Nothing here downloads a browser of its own; Chromium runs with --no-sandbox (as root in
# containers), no GPU, no network services and a fresh profile folder per run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "chromium not found at $CHROMIUM: installing Debian's chromium" >&2
  t0=$(date +%s)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  echo "installed chromium in $(( $(date +%s) - t0 )) s" >&2
fi
"$CHROMIUM" --version >&2

if [ $# -ge 1 ]; then
  report=$1
  exec "$PY" scripts/check_report_chromium.py "$report" --chromium "$CHROMIUM" \
       --screenshot "${report%.html}.screenshot.png"
else
  exec "$PY" -m pytest -q tests/app/test_report.py -k chromium -rs
fi
