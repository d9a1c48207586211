"""Install what a benchmark run needs on a fresh machine (Debian packages, Python deps).

Python packages go into the project's `.venv`, never into the system's interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"

# command that must exist -> Debian package that provides it
DEBIAN_PACKAGES = {
    "docker-registry": "docker-registry",
    "wrk": "wrk",
    "hey": "hey",
    "dockerd": "docker.io",
    "busybox": "busybox-static",
    "time": "time",  # GNU time: the gc figure's peak RSS of a collector
}
PYTHON_MODULES = ("starlette", "uvicorn", "httpx", "psutil", "yaml")


def _missing_packages() -> list[str]:
    missing = [pkg for cmd, pkg in DEBIAN_PACKAGES.items() if shutil.which(cmd) is None]
    if not Path("/bin/busybox").exists() and "busybox-static" not in missing:
        missing.append("busybox-static")
    return missing


def _install_debian_packages() -> None:
    missing = _missing_packages()
    if missing:
        print(f"bench: installing {' '.join(missing)} from Debian", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )


def _install_python_modules() -> None:
    """Into the project's .venv only: from any other interpreter, go on in that venv."""
    if all(importlib.util.find_spec(module) is not None for module in PYTHON_MODULES):
        return
    if Path(sys.prefix).resolve() == VENV.resolve():
        print(f"bench: installing Dockyard with its test dependencies into {VENV}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"], check=True
        )
        return
    if not VENV_PYTHON.exists():
        print(f"bench: creating {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print(f"bench: going on in {VENV}", flush=True)
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), "-m", "bench", *sys.argv[1:]])


def ensure_installed() -> None:
    _install_debian_packages()
    _install_python_modules()
