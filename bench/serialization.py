"""Micro-benchmark: the per-task cost of encoding and decoding messages and results.

Every task sent is one :func:`celeriac.message.encode`, every task run one
:func:`celeriac.message.decode` and one result record encoded (and decoded by whoever
reads it). This times each with ``timeit`` for a typical message (small int and str
arguments) and for one with a ``datetime`` argument (kombu's markers), and prints
microseconds per call: the median of ``--repeat`` runs of ``--number`` calls, and in
brackets the fastest run (the least disturbed by whatever else the machine runs).

A second table times the other serializers and the compression methods (kombu's
names) on the same small message and on a larger one (2 KB of text and 100 numbers):
encode and decode microseconds, the envelope's size and the body's, with
``--number / 10`` calls (lzma takes milliseconds a call).

To compare with another revision, run the same script with that revision's package
first on the path (``git archive REV celeriac | tar -x -C /tmp/rev``, then
``PYTHONPATH=/tmp/rev .venv/bin/python bench/serialization.py``); a revision that cannot
encode a case prints ``refused``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import celeriac
from celeriac.backends.base import ResultRecord
from celeriac.message import decode, encode

TASK_ID = "0b1d3a9e-8f5c-4c1e-9d8a-5b6f7e8d9c0a"
MOMENT = datetime.datetime(2026, 12, 3, 14, 25, 0, 123456, tzinfo=datetime.timezone.utc)
CASES: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "small int/str args": ([42, "hello"], {"user_id": 7, "name": "report"}),
    "a datetime argument": ([42, MOMENT], {"user_id": 7}),
}
#: Payloads and (serializer, compression) pairs of the second table.
PAYLOADS: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "small": CASES["small int/str args"],
    "2 KB": ([" ".join(f"word{i % 50}" for i in range(300)), list(range(100))],
             {"user_id": 7, "name": "report"}),
}
VARIANTS: list[tuple[str, str | None]] = [
    ("json", None), ("json", "gzip"), ("json", "bzip2"), ("json", "lzma"),
    ("msgpack", None), ("msgpack", "gzip"), ("pickle", None),
]


def timed(call: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    """Median and fastest microseconds per call."""
    runs = timeit.repeat(call, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e6, min(runs) / number * 1e6


def measure(args: list[Any], kwargs: dict[str, Any], number: int, repeat: int
            ) -> tuple[dict[str, tuple[float, float]], int]:
    """Microseconds per encode, decode, result to_json and from_json; the message's size."""
    data = encode("tasks.report", TASK_ID, args, kwargs, queue="celery")
    record = ResultRecord(TASK_ID, "SUCCESS", result=args, name="tasks.report", date_done=1.0)
    stored = record.to_json()
    rows = {
        "encode": timed(lambda: encode("tasks.report", TASK_ID, args, kwargs, queue="celery"),
                        number, repeat),
        "decode": timed(lambda: decode(data), number, repeat),
        "result to_json": timed(record.to_json, number, repeat),
        "result from_json": timed(lambda: ResultRecord.from_json(stored, "bench"), number,
                                  repeat),
    }
    return rows, len(data)


def measure_variant(args: list[Any], kwargs: dict[str, Any], serializer: str,
                    compression: str | None, number: int, repeat: int
                    ) -> tuple[tuple[float, float], tuple[float, float], int, int]:
    """Encode and decode microseconds of one serializer and compression; the sizes of
    the message and of its body (as stored: base64 when binary or compressed)."""
    options: dict[str, Any] = {"serializer": serializer}
    if compression is not None:  # an older revision has no compression keyword
        options["compression"] = compression
    accept = {"application/json", "application/x-msgpack", "application/x-python-serialize"}
    data = encode("tasks.report", TASK_ID, args, kwargs, queue="celery", **options)
    encoding = timed(lambda: encode("tasks.report", TASK_ID, args, kwargs, queue="celery",
                                    **options), number, repeat)
    decoding = timed(lambda: decode(data, accept), number, repeat)
    return encoding, decoding, len(data), len(json.loads(data)["body"])


def variants(number: int, repeat: int) -> None:
    print(f"\nserializers and compression; us per call, median of {repeat} x {number:,}")
    for payload, (args, kwargs) in PAYLOADS.items():
        for serializer, compression in VARIANTS:
            label = f"{payload:6} {serializer:8} {compression or '-':6}"
            try:
                enc, dec, size, body = measure_variant(args, kwargs, serializer, compression,
                                                       number, repeat)
            except Exception as exc:  # an older revision lacks msgpack or compression
                print(f"{label} refused ({type(exc).__name__})")
                continue
            print(f"{label} encode {enc[0]:7.2f} ({enc[1]:7.2f})  decode {dec[0]:7.2f} "
                  f"({dec[1]:7.2f})  {size:5} bytes, body {body:5}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-variants", action="store_true",
                        help="only the first table (the default JSON path)")
    options = parser.parse_args()
    number, repeat = options.number, options.repeat
    print(f"celeriac from {celeriac.__file__}; us per call, median of {repeat} x {number:,}")
    for name, (args, kwargs) in CASES.items():
        try:
            rows, size = measure(args, kwargs, number, repeat)
        except Exception as exc:  # an older revision refuses the datetime
            print(f"{name:22} refused ({type(exc).__name__})")
            continue
        print(f"{name:22} " + "  ".join(f"{k} {median:5.2f} ({fastest:5.2f})"
                                        for k, (median, fastest) in rows.items())
              + f"  {size} bytes")
    if not options.no_variants:
        variants(max(number // 10, 1), repeat)


if __name__ == "__main__":
    main()
