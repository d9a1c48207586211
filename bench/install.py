"""Install what the benchmark needs on a fresh machine (Debian packages, Python deps)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# command that must exist -> Debian package that provides it
DEBIAN_PACKAGES = {
    "docker-registry": "docker-registry",
    "wrk": "wrk",
    "hey": "hey",
    "dockerd": "docker.io",
    "busybox": "busybox-static",
}
PYTHON_MODULES = ("starlette", "uvicorn", "httpx", "psutil", "yaml")


def _missing_packages() -> list[str]:
    missing = [pkg for cmd, pkg in DEBIAN_PACKAGES.items() if shutil.which(cmd) is None]
    if not Path("/bin/busybox").exists() and "busybox-static" not in missing:
        missing.append("busybox-static")
    return missing


def ensure_installed() -> None:
    missing = _missing_packages()
    if missing:
        print(f"bench: installing {' '.join(missing)} from Debian", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if any(importlib.util.find_spec(module) is None for module in PYTHON_MODULES):
        print("bench: installing Dockyard with its test dependencies", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"], check=True
        )
