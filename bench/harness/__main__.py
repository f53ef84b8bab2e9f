"""``./scripts/bench``: every peer and the hardware ceiling side by side, one report.

    ./scripts/bench                          # everything, 3 runs (1.5-2 hours)
    ./scripts/bench --quick                  # a smoke check, under 3 minutes
    ./scripts/bench --only feeds,noop --systems celeriac-gevent,dramatiq-gevent --repeat 5

Runs in ``bench/.venv-compare`` (``scripts/bench`` creates it and starts this module
there); starts its own loopback ``redis-server``, the feed hub and, for the broker
workload, a private RabbitMQ node; writes ``docs/benchmarks.md`` (``--out``) and its
charts in ``docs/benchmarks/`` beside it. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console

from . import charts, report
from .context import Context, Sizes
from .machine import facts
from .procs import REPO, exit_on_signal
from .run import measure_all
from .servers import feed_hub, redis_server
from .systems import SYSTEMS, parse
from .workloads import WORKLOADS

#: Workloads of ``--quick`` (the broker workload's RabbitMQ node alone takes 10 s to start).
QUICK_WORKLOADS = ["feeds", "noop", "startup", "enqueue", "latency", "memory", "depth", "events"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"workloads: {', '.join(WORKLOADS)}\nsystems: {', '.join(SYSTEMS)}")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: small sizes, one run, a subset of systems")
    parser.add_argument("--only", help="comma-separated workloads [default: all; --quick: "
                                       "all but brokers]")
    parser.add_argument("--systems", help="comma-separated systems [default: all; --quick: "
                                          "celeriac-gevent, -p2, celery-gevent, dramatiq-gevent]")
    parser.add_argument("--repeat", type=int, help="runs; medians are reported [3; --quick: 1]")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="the report; charts go to a directory of its name beside it")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every task count by this (the test uses a tiny one)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds any one step may take")
    parser.add_argument("--workdir", type=Path,
                        help="keep task modules, worker logs and server files here")
    parser.add_argument("--no-charts", action="store_true", help="tables only")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    options = parser.parse_args(argv)
    chosen = options.only or ",".join(QUICK_WORKLOADS if options.quick else WORKLOADS)
    options.workloads = [w.strip() for w in chosen.split(",") if w.strip()]
    unknown = [w for w in options.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    options.workloads = [w for w in WORKLOADS if w in options.workloads]
    options.repeat = options.repeat or (1 if options.quick else 3)
    if options.repeat < 1 or options.scale <= 0:
        parser.error("--repeat must be at least 1 and --scale above 0")
    return options


def scaled(sizes: Sizes, scale: float) -> Sizes:
    """Every task count times ``scale`` (at least 20 each); concurrency and latency kept."""
    if scale == 1.0:
        return sizes
    counts = {name: max(20, int(getattr(sizes, name) * scale)) for name in
              ("feeds", "noop", "startup", "enqueue", "bulk", "latency_samples", "memory_feeds",
               "depth_small", "depth_large", "depth_measured", "events", "brokers")}
    return replace(sizes, **counts)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGHUP, exit_on_signal)
    options = parse_args(argv)
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    python = Path(sys.executable)
    sizes = scaled(Sizes.quick() if options.quick else Sizes(), options.scale)
    systems = parse(options.systems, options.quick)
    command = "./scripts/bench" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    found = facts(python)
    console.print("[bold]versions[/bold] " + ", ".join(f"{k} {v}" for k, v in found.items()))
    outcome = report.Outcome(command=command, quick=options.quick, repeat=options.repeat,
                             sizes=sizes, workloads=options.workloads, systems=systems,
                             facts=found, load=(os.getloadavg()[0], 0.0),
                             started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                             seconds=0.0)
    began = time.monotonic()
    with ExitStack() as stack:
        if options.workdir:
            options.workdir.mkdir(parents=True, exist_ok=True)
            root = options.workdir.resolve()
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celeriac-bench-")))
        redis_url = stack.enter_context(redis_server(root))
        hub = stack.enter_context(feed_hub(python, root, sizes.feed_latency))
        ctx = Context(python=python, root=root, redis_url=redis_url, hub_port=hub, sizes=sizes,
                      timeout=options.timeout, stack=stack)
        measure_all(ctx, outcome, console)
        if ctx._rabbit is not None:
            found["rabbitmq-server"] = ctx.rabbit().ctl("version").stdout.strip()
        outcome.trouble = ctx.trouble
    outcome.load = (outcome.load[0], os.getloadavg()[0])
    outcome.seconds = time.monotonic() - began
    out: Path = options.out.resolve()
    made = {} if options.no_charts else charts.draw(outcome, out.parent / out.stem, out.parent)
    report.write(outcome, out, made)
    if options.json:
        options.json.write_text(json.dumps({
            "command": command, "facts": found, "sizes": asdict(sizes), "load": outcome.load,
            "repeat": options.repeat, "runs": outcome.runs, "medians": outcome.medians(),
            "skipped": outcome.skipped, "errors": outcome.errors, "log_trouble": outcome.trouble},
            indent=2))
    console.print(f"[bold]wrote[/bold] {out}" + (f" and {len(made)} charts" if made else ""))
    return 1 if outcome.errors else 0


if __name__ == "__main__":
    sys.exit(main())
