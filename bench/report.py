"""Medians, ratios and targets; the RESULTS.md table and the closing summary line."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

import psutil

from bench.client import RegistryClient
from bench.figures import FIGURES, RSS_PER_WORKER_TARGET_MB, Figure, Sizes, target
from bench.servers import PeakMemory, Server, version_of

MB = 1e6


def check_listings(servers: dict[str, Server], authorization: str | None) -> list[str]:
    """How many entries each server returns for the listing figures (they must agree)."""
    counts = {}
    for label, server in servers.items():
        client = RegistryClient(server.host, authorization)
        tags = json.loads(client.request("GET", "/v2/bench/tags/tags/list", keep=True).body)
        names = json.loads(client.request("GET", "/v2/_catalog?n=1000", keep=True).body)
        counts[label] = (len(tags["tags"]), len(names["repositories"]))
        client.close()
    notes = [
        f"{label} lists {t} tags and {r} repositories per page" for label, (t, r) in counts.items()
    ]
    if len(set(counts.values())) != 1:
        notes.append("WARNING: the servers list different numbers of entries")
    return notes


def _sha256_rate() -> float:
    data = os.urandom(256 << 20)
    start = time.perf_counter()
    hashlib.sha256(data).digest()
    return len(data) / (time.perf_counter() - start)


def _disk_write_rate(directory: Path, size: int = 512 << 20) -> float:
    """Sequential write with fsync, in 4 MiB writes, as an upload lands on disk."""
    path = directory / "disk-probe"
    block = os.urandom(4 << 20)
    start = time.perf_counter()
    with open(path, "wb") as file:
        for _ in range(size // len(block)):
            file.write(block)
        file.flush()
        os.fsync(file.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return size / elapsed


def git_version() -> str:
    result = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "unknown"


def upload_bound(workdir: Path) -> tuple[float, float]:
    """One core's SHA-256 rate and the disk's write rate, bytes/s: taken before the servers
    start, so neither server's writes are still in flight."""
    return _sha256_rate(), _disk_write_rate(workdir)


def machine(load_before: tuple[float, float, float]) -> dict[str, str]:
    """Date, machine and load average: the first lines of every table."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    memory = psutil.virtual_memory().total / 2**30
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs ({cpu}), {memory:.0f} GiB, "
        f"{platform.system()} {platform.release()}",
        "load average (1 min) before / after": f"{load_before[0]:.1f} / {os.getloadavg()[0]:.1f}",
    }


def environment(
    load_before: tuple[float, float, float], bound: tuple[float, float]
) -> dict[str, str]:
    sha, disk = bound
    return {
        **machine(load_before),
        "Dockyard": f"{git_version()} (Python {platform.python_version()}, "
        f"{os.cpu_count()} workers, default settings)",
        "reference": version_of(["docker-registry", "--version"]) + " (upload purging off)",
        "docker": version_of(["/usr/bin/docker", "--version"]),
        "wrk": version_of(["wrk", "--version"]),
        "SHA-256, one core": f"{sha / MB:.0f} MB/s",
        "disk, sequential write + fsync": f"{disk / MB:.0f} MB/s",
        "upload bound": f"{min(sha, disk) / MB:.0f} MB/s",
        "_bound": str(min(sha, disk) / MB),
    }


SECTION = re.compile(r"<!-- bench: ([\w-]+) -->\n.*?<!-- /bench: \1 -->\n", re.DOTALL)


def merge_section(document: str, name: str, text: str) -> str:
    """`document` with its section `name` replaced by `text`, or `text` appended as that
    section: a run rewrites the sections it measured and keeps the others. A document
    without sections is an older whole-file table and goes."""
    section = f"<!-- bench: {name} -->\n{text.rstrip()}\n<!-- /bench: {name} -->\n"
    parts = {match[1]: match[0] for match in SECTION.finditer(document)}
    parts[name] = section
    return "\n".join(parts.values())


def write_section(path: Path, name: str, text: str) -> None:
    document = path.read_text() if path.exists() else ""
    path.write_text(merge_section(document, name, text))
    print(f"bench: wrote the {name} section of {path}")


def medians(
    results: dict[str, dict[str, list[float]]], figure: Figure
) -> tuple[float, float] | None:
    values = results.get(figure.key, {})
    if not values.get("dockyard") or not values.get("reference"):
        return None
    return statistics.median(values["dockyard"]), statistics.median(values["reference"])


def verdict(figure: Figure, ratio: float, variant: str) -> str:
    goal = target(figure, variant)
    if goal is None:
        return ""
    met = ratio >= goal if figure.higher_is_better else ratio <= goal
    sign = ">=" if figure.higher_is_better else "<="
    return f"{sign} {goal:g}x: {'met' if met else 'MISSED'}"


def render(
    results: dict[str, dict[str, list[float]]],
    memory: PeakMemory,
    env: dict[str, str],
    notes: list[str],
    sizes: Sizes,
    elapsed: float,
    variant: str,
) -> str:
    lines = ["# Dockyard vs reference registry (CNCF distribution)", ""]
    lines += ["Written by `python -m bench`; do not edit by hand.", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in env.items() if not key.startswith("_")]
    lines += [
        f"| rounds | {sizes.rounds} (A/B order alternating), medians below |",
        f"| runtime | {elapsed / 60:.1f} min |",
        "",
        "| figure | unit | Dockyard | reference | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for figure in FIGURES:
        pair = medians(results, figure)
        if pair is None:
            cells = [
                f"{statistics.median(found):,.1f}"
                if (found := results.get(figure.key, {}).get(label))
                else "-"
                for label in ("dockyard", "reference")
            ]
            lines.append(
                f"| {figure.title} | {figure.unit} | {cells[0]} | {cells[1]} | - | "
                "no ratio: not measured on both (see notes) |"
            )
            continue
        ours, theirs = pair
        ratio = ours / theirs
        lines.append(
            f"| {figure.title} | {figure.unit} | {ours:,.1f} | {theirs:,.1f} | {ratio:.2f}x | "
            f"{verdict(figure, ratio, variant)} |"
        )
    for label in ("dockyard", "reference"):
        per = memory.per_process[label]
        goal = ""
        if label == "dockyard":
            met = per <= RSS_PER_WORKER_TARGET_MB * MB
            goal = f"<= {RSS_PER_WORKER_TARGET_MB} MB per worker: {'met' if met else 'MISSED'}"
        lines.append(
            f"| peak RSS {label}, all {memory.processes[label]} processes (largest one) | MB | "
            f"{memory.total[label] / MB:,.0f} ({per / MB:,.0f}) | | | {goal} |"
        )
    bound = float(env["_bound"])
    pair = medians(results, FIGURES[0])
    if pair:
        share = pair[0] / bound
        verdict_80 = "met" if share >= 0.8 else "MISSED"
        lines += [
            "",
            f"Monolithic upload reaches {share:.0%} of the upload bound, the lower of one core's "
            "SHA-256 rate and the disk's write+fsync rate measured just before the servers "
            f"started (target >= 80%: {verdict_80}; the disk rate moves with the other loads "
            "on this disk).",
        ]
    if notes:
        lines += ["", "Notes:", *(f"- {note}" for note in notes)]
    lines += ["", "Raw values per round:", "", "```"]
    for figure in FIGURES:
        for label, values in results.get(figure.key, {}).items():
            lines.append(f"{figure.key:13} {label:9} " + " ".join(f"{v:.1f}" for v in values))
    lines += ["```", ""]
    return "\n".join(lines)


def summary_line(results: dict[str, dict[str, list[float]]], memory: PeakMemory) -> str:
    parts = []
    for figure in FIGURES:
        pair = medians(results, figure)
        if pair:
            parts.append(f"{figure.key}={pair[0] / pair[1]:.2f}x")
    rss = memory.total["dockyard"] / max(memory.total["reference"], 1)
    parts.append(f"rss={rss:.2f}x")
    return "ratios Dockyard/reference: " + " ".join(parts)
