#!/usr/bin/env bash
# Install everything the tests need and run the whole suite, lint included.
#
# Run as root on Debian 12: the Debian packages are installed with apt-get and the
# real-client tests start their own dockerd. Python dependencies go into ./.venv.
# Arguments are passed to pytest. Set E2E_REQUIRED=1 to fail (not skip) real-client
# tests that cannot run (.ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y docker.io skopeo busybox-static python3 python3-venv
else
    echo "test.sh: not root on Debian, not installing docker.io, skopeo, busybox-static;" \
        "the tests that need them will skip" >&2
fi

if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest's status is the script's: 5 (nothing collected) fails like any other.
.venv/bin/python -m pytest -ra --durations=10 "$@"
