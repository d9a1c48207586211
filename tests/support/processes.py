"""Stopping the processes the tests started, by their PID and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM `process`, then SIGKILL it if it has not exited within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def kill_process_group(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """kill -9 `process` and everything it started, at once, and wait until all are dead.

    `process` must have been started as the leader of its own process group
    (`process_group=0`): one SIGKILL to that group stops the parent and its workers in
    the same instant, so no worker outlives the parent and keeps writing. The workers
    count as dead once they are zombies (their parent is gone, so whoever adopts them
    reaps them, in its own time).
    """
    if process.poll() is not None:
        return
    members = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while alive := [member for member in members if _running(member)]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {[p.pid for p in alive]} survived SIGKILL")
        time.sleep(0.01)


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
