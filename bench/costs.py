"""The cost of metrics and of events (issue 12): Dockyard against Dockyard with one
feature on and off, request rates at 64 connections, alternately A/B round after round.

Beside each rate, the servers' CPU time per request (all their processes, over the
measurement and, with events, until the outbox is delivered): on a shared machine the
rates move with the other loads, the CPU a request costs much less. An A/A control (two
identical servers) shows how far apart the rates of two equal servers land.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import app_cost, report
from bench.figures import ListingFixture, NoAnswerError, Sizes, request_rate
from bench.servers import report_if_died, start_dockyard, version_of
from registry.config import NotificationsConfig
from registry.events.deliver import Deliverer
from storage.filesystem import FilesystemDriver
from storage.outbox import Outbox
from tests.support.server import RegistryProcess

BENCH_ENDPOINT = "bench"
PUT_TAGS = 64  # manifest PUTs cycle through this many tags of one repository
DRAIN_TIMEOUT = 120.0  # seconds the outbox has to be delivered after a measurement
METRICS_DROP_TARGET = 5.0  # percent (issue 12 §1)
EVENTS_DROP_TARGET = 5.0  # percent (issue 15 §2: no feature costs more)


# Where the CPU of events goes: measured while writing bench/costs.py (issue 15), not by
# this run; kept beside the figures it explains.
EVENTS_PROFILE = """\
Where the events' CPU goes (profiles taken while changing the outbox, on the same
machine under other loads; load average 6 to 24): a server of 2 workers, manifest GET
by tag at 64 connections for 10 s, CPU per request of all its processes (user + system).

| outbox | µs/request | user | system | events a record |
|---|---:|---:|---:|---:|
| no events | 214-217 | 152-160 | 54-65 | |
| a file created, fsynced, renamed a record (before) | 345 | | | ~10 |
| a segment a process, fdatasync a record (`before_answer`) | 277-311 | 191-229 | 63-90 | ~10 |
| the same without fdatasync (an experiment) | 235 | 169 | 67 | |
| a segment a process, fdatasync each 0.1 s (`background`) | 265-287 | 190-206 | 75-81 | 7-11 |

py-spy (`record --gil`, both workers, `background`): of the samples holding the
interpreter, building and encoding the events took 3.0% (`emit`), the group commit 2.3%
(`EventRecorder._write_batches`: futures, one thread hop and one `write` a record) and
the delivery 2.2% (`Deliverer._deliver_pending`: the records' JSON goes out as stored,
never decoded): ~15 µs a request of the 35-55 µs of user time events add. The rest is
outside the interpreter's own work: system time (+15-25 µs: a `write` and a thread
wake-up a record of 7-11 events, the loop's wake-ups as requests finish at different
times, the delivery's reads, HTTP and cursor writes) and the worker threads. So the
events stay over the 5% target: what stands in the way is the thread hop and system
calls a record (at only ~10 events a record, since requests are not kept waiting) and
the Python work of each event. What would remove it: appending on the event loop
without a thread (a non-blocking buffered write, RWF_NOWAIT, which this kernel's ext4
refuses: EOPNOTSUPP), larger records (requests waiting a few ms more each: tried at
10 ms, it cost the rate more than it saved), building and encoding an event in one
native step rather than a dict then JSON. With `before_answer`, the fdatasync before
each answer stands in the way on its own (235 µs a request without it, 289 µs with it,
in the same minute).
"""


@dataclass(frozen=True)
class Comparison:
    key: str
    title: str
    off: str  # the server without the feature
    on: str  # the server with it
    figures: tuple[str, ...]
    target: float | None  # largest drop of the rates allowed, in percent


COMPARISONS = (
    Comparison(
        "metrics", "metrics (`metrics.enabled`, default on)", "metrics_off", "metrics_on",
        ("manifest_rps", "head_rps"), METRICS_DROP_TARGET,
    ),
    Comparison(
        "events", "events: one webhook endpoint (a loopback receiver) and the outbox",
        "events_off", "events_on", ("put_rps", "manifest_rps"), EVENTS_DROP_TARGET,
    ),
    Comparison(
        "pushes", "events: one endpoint taking pushes only (`actions: [push]`)",
        "pushes_off", "pushes_on", ("manifest_rps",), EVENTS_DROP_TARGET,
    ),
    Comparison(
        "synced", "events, `outbox_sync: before_answer` (an fdatasync before each answer)",
        "synced_off", "synced_on", ("put_rps", "manifest_rps"), None,
    ),
    Comparison(
        "control", "none: A/A control, two servers with the same default settings",
        "control_a", "control_b", ("manifest_rps", "head_rps"), None,
    ),
)  # fmt: skip

TITLES = {
    "manifest_rps": "manifest GET by tag",
    "head_rps": "HEAD blob",
    "put_rps": f"manifest PUT, {PUT_TAGS} tags",
}


def server_settings(receiver_url: str) -> dict[str, dict[str, Any]]:
    """Config sections of each server (a pair for each comparison, so that one's load
    leaves nothing behind in another's servers); the rest are Dockyard's defaults."""
    endpoint = {"name": BENCH_ENDPOINT, "url": receiver_url}
    return {
        "metrics_off": {"metrics": {"enabled": False}},
        "metrics_on": {},
        "events_off": {},
        "events_on": {"notifications": {"endpoints": [endpoint]}},
        "pushes_off": {},
        "pushes_on": {"notifications": {"endpoints": [{**endpoint, "actions": ["push"]}]}},
        "synced_off": {},
        "synced_on": {"notifications": {"endpoints": [endpoint], "outbox_sync": "before_answer"}},
        "control_a": {},
        "control_b": {},
    }


class EventSink:
    """A webhook receiver on loopback that takes every delivery and keeps only a count."""

    def __init__(self) -> None:
        self.deliveries = 0
        lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps connections open, as receivers do

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                with lock:
                    sink.deliveries += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cpu_seconds(server: RegistryProcess) -> float:
    """User and system CPU time of the server and all its workers so far."""
    assert server.process is not None
    parent = psutil.Process(server.process.pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def outbox_left(server: RegistryProcess) -> int:
    """Segments of the server's outbox (filesystem storage) with events its endpoint has
    not taken."""
    outbox = Outbox(FilesystemDriver(server.workdir / "data"), 1)
    endpoint = {"name": BENCH_ENDPOINT, "url": "http://127.0.0.1"}
    return asyncio.run(Deliverer(outbox, NotificationsConfig(endpoints=[endpoint])).undelivered())


def put_script(fixture: ListingFixture) -> str:
    """wrk: PUT the fixture's manifest under tags p0..p63 of its repository in turn."""
    manifest = fixture.manifest.decode()
    assert "]==]" not in manifest
    return "\n".join(
        [
            'wrk.method = "PUT"',
            f"wrk.body = [==[{manifest}]==]",
            'wrk.headers["Content-Type"] = "application/vnd.oci.image.manifest.v1+json"',
            "local sent = 0",
            "request = function()",
            "  sent = sent + 1",
            f'  return wrk.format(nil, "/v2/{fixture.SMALL}/manifests/p" .. (sent % {PUT_TAGS}))',
            "end",
        ]
    )


class CostBench:
    def __init__(self, sizes: Sizes, workdir: Path) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.servers: dict[str, RegistryProcess] = {}
        self.targets: dict[str, dict[str, tuple[str, str]]] = {}
        self.rates: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        self.cpu: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        self.notes: list[str] = []
        self.highest_load = 0.0
        self.app_cpu: dict[str, dict[str, tuple[float, float]]] = {}  # comparison, figure

    def start(self, sink: EventSink) -> None:
        for name, settings in server_settings(sink.url).items():
            server = start_dockyard(self.workdir / name, settings=settings)
            self.servers[name] = server
            # the small image only: no tags or repositories for the listing figures
            fixture = ListingFixture(server.host, replace(self.sizes, tags=0, repositories=0))
            targets = fixture.urls(server.url)
            targets["put_rps"] = (server.url, put_script(fixture))
            self.targets[name] = targets

    def measure(self, server_name: str, figure: str, seconds: int) -> tuple[float, float]:
        """Requests per second, and server CPU µs per request until its outbox is empty."""
        server = self.servers[server_name]
        url, script = self.targets[server_name][figure]
        cpu_before = cpu_seconds(server)
        rate = request_rate(url, script, seconds, self.workdir)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while outbox_left(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        if left := outbox_left(server):
            self.notes.append(f"{server_name}: {left} event batches not delivered after {figure}")
        self.highest_load = max(self.highest_load, os.getloadavg()[0])
        return rate, (cpu_seconds(server) - cpu_before) / (rate * seconds) * 1e6

    def warm_up(self) -> None:
        for comparison in COMPARISONS:
            for figure in comparison.figures:
                for name in (comparison.off, comparison.on):
                    self.measure(name, figure, 1)

    def round(self, round_: int) -> None:
        for comparison in COMPARISONS:
            labels = [("off", comparison.off), ("on", comparison.on)]
            for figure in comparison.figures:
                for label, name in labels if round_ % 2 == 0 else labels[::-1]:
                    try:
                        rate, cpu = self.measure(name, figure, self.sizes.wrk_seconds)
                    except NoAnswerError:
                        self.notes.append(f"round {round_ + 1}: {name} answered no {figure}")
                        continue
                    self.rates[comparison.key][figure][label].append(rate)
                    self.cpu[comparison.key][figure][label].append(cpu)
                    print(
                        f"  {comparison.key:8} {figure:13} {label:3} {rate:10.1f} req/s "
                        f"{cpu:7.1f} µs CPU/request",
                        flush=True,
                    )

    def events_notes(self, sink: EventSink) -> None:
        metrics = httpx.get(f"{self.servers['events_on'].url}/metrics", timeout=10).text
        dropped = re.search(r"^registry_events_dropped_total (\S+)$", metrics, re.MULTILINE)
        self.notes.append(
            f"events: the receiver took {sink.deliveries:,} deliveries; events dropped "
            f"(outbox full): {float(dropped[1]) if dropped else 'unknown':.0f}"
        )


def run(sizes: Sizes, workdir: Path) -> str:
    """Measure every comparison; the RESULTS.md section."""
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = time.time()
    bench = CostBench(sizes, workdir)
    sink = EventSink()
    try:
        bench.start(sink)
        print("bench: costs: servers up; warming up", flush=True)
        bench.warm_up()
        bench.rates.clear()
        bench.cpu.clear()
        for round_ in range(sizes.rounds):
            print(f"bench: costs: round {round_ + 1}/{sizes.rounds}", flush=True)
            bench.round(round_)
        bench.events_notes(sink)
        print("bench: costs: metrics and events in the application alone", flush=True)
        bench.app_cpu = app_cost.measure_features(2 * sizes.rounds)
        env = report.machine(load_before)
    finally:
        for name, server in bench.servers.items():
            report_if_died(name, server)
            server.stop()
        sink.stop()
    env["load average (1 min) before / highest / after"] = (
        f"{load_before[0]:.1f} / {bench.highest_load:.1f} / {os.getloadavg()[0]:.1f}"
    )
    del env["load average (1 min) before / after"]
    return render(bench, env, time.time() - started)


def drop(off: float, on: float) -> float:
    """How much lower `on` is than `off`, in percent (negative: higher)."""
    return (off - on) / off * 100


def control_drop(bench: CostBench, figure: str) -> float | None:
    """How far apart the A/A control's two equal servers landed on `figure`, in percent."""
    rates = bench.rates["control"][figure]
    if not rates["off"] or not rates["on"]:
        return None
    return abs(drop(statistics.median(rates["off"]), statistics.median(rates["on"])))


def verdict(measured: float, target: float, noise: float | None) -> str:
    """Met or missed; a miss no larger than the control's difference is not resolved."""
    if measured <= target:
        return f"<= {target:g}%: met"
    if noise is not None and measured <= noise:
        return f"<= {target:g}%: not resolved (two equal servers differ by {noise:.1f}%)"
    return f"<= {target:g}%: MISSED"


def served_share(bench: CostBench, key: str, figure: str, cost: float) -> str:
    """`cost` µs as a share of the CPU a server spends on a request without the feature
    (comparison `key`): what the rate of a server that is short of CPU loses to it."""
    served = bench.cpu[key][figure]["off"] if figure in bench.cpu[key] else []
    return f"{cost / statistics.median(served):.1%}" if served else "-"


def render(bench: CostBench, env: dict[str, str], elapsed: float) -> str:
    sizes = bench.sizes
    workers = os.cpu_count() or 1
    lines = ["## Cost of metrics and events", ""]
    lines += ["Written by `python -m bench` (`--only costs`); do not edit by hand.", ""]
    lines += ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in env.items())]
    lines += [
        f"| Dockyard | {report.git_version()} (Python {platform.python_version()}), "
        f"{2 * len(COMPARISONS)} "
        f"servers of {workers} workers, filesystem storage, default settings but the "
        "feature compared |",
        f"| wrk, hey | {version_of(['wrk', '--version'])}; hey |",
        f"| rounds | {sizes.rounds} (off/on order alternating), {sizes.wrk_seconds} s per "
        "figure and server, 64 connections (wrk; hey for HEAD); medians below |",
        f"| runtime | {elapsed / 60:.1f} min |",
        "",
        "| feature | figure | off, req/s | on, req/s | drop | CPU µs/request off / on | "
        "drop in requests per CPU second | target (drop of the rate) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for comparison in COMPARISONS:
        for figure in comparison.figures:
            rates, cpu = bench.rates[comparison.key][figure], bench.cpu[comparison.key][figure]
            if not rates["off"] or not rates["on"]:
                lines.append(f"| {comparison.title} | {TITLES[figure]} | - | - | - | - | - | |")
                continue
            off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
            cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
            target = ""
            if comparison.target is not None:
                target = verdict(drop(off, on), comparison.target, control_drop(bench, figure))
            lines.append(
                f"| {comparison.title} | {TITLES[figure]} | {off:,.0f} | {on:,.0f} | "
                f"{drop(off, on):.1f}% | {cpu_off:.0f} / {cpu_on:.0f} | "
                f"{drop(cpu_on, cpu_off):.1f}% | {target} |"
            )
    lines += [
        "",
        "The application alone (`bench/app_cost.py`): its ASGI app called in process, no "
        "server or client, memory storage, access log to /dev/null, collector off, "
        f"{2 * sizes.rounds} alternating rounds of {app_cost.REQUESTS:,} requests; CPU "
        "per request:",
        "",
        "| feature | figure | off, µs | on, µs | cost, µs | cost, of the app alone | "
        "cost, of a served request's CPU (feature off, above) |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(
            f"| {app_cost.FEATURES[key][0]} | {TITLES[figure]} | {off:.1f} | {on:.1f} | "
            f"{on - off:.1f} | {(on - off) / off:.1%} | "
            f"{served_share(bench, key, figure, on - off)} |"
            for key, figures in bench.app_cpu.items()
            for figure, (off, on) in figures.items()
        ),
    ]
    lines += [
        "",
        "CPU µs/request: the user and system time of all the server's processes over the "
        "measurement, and with events until its outbox is delivered, per request answered. "
        "Events on: every manifest PUT and GET writes an event to the outbox before it "
        "answers; the events of concurrent requests go as one record (a group commit) "
        "appended to the worker's own segment file, on disk within 0.1 s (the default, "
        "`outbox_sync: background`) or, in the `before_answer` rows, fdatasync'ed before "
        "the requests answer. One endpoint gets them all; in the `actions: [push]` row it "
        "takes only pushes, so a pull's event, wanted by no endpoint, is not stored.",
        "",
        EVENTS_PROFILE,
    ]
    busiest = bench.highest_load
    if busiest > workers / 2:
        bench.notes.append(
            f"taken on a shared, busy machine (load average up to {busiest:.1f} on {workers} "
            "CPUs): the rates move with the other loads (the A/A control shows how much); "
            "the CPU per request moves less"
        )
    if bench.notes:
        lines += ["", "Notes:", *(f"- {note}" for note in bench.notes)]
    lines += ["", "Raw values per round (req/s; CPU µs/request):", "", "```"]
    for comparison in COMPARISONS:
        for figure in comparison.figures:
            for label in ("off", "on"):
                rates = " ".join(f"{v:.0f}" for v in bench.rates[comparison.key][figure][label])
                cpu = " ".join(f"{v:.0f}" for v in bench.cpu[comparison.key][figure][label])
                lines.append(f"{comparison.key:8} {figure:13} {label:3} {rates}; {cpu}")
    lines += ["```", ""]
    return "\n".join(lines)
