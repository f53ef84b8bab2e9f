"""Compressed and msgpack task messages as Celery/kombu write and read them.

Run with the Python of ``bench/.venv-compare`` (Celery 5.7 and kombu), with the
``msgpack`` package importable (it is not installed there: put a directory holding a
link to it first on ``PYTHONPATH``)::

    mkdir -p /tmp/mp && ln -s "$(.venv/bin/python -c \
        'import msgpack, os; print(os.path.dirname(msgpack.__file__))')" /tmp/mp/
    PYTHONPATH=/tmp/mp bench/.venv-compare/bin/python scripts/kombu_wire.py record \
        > tests/data/kombu_wire.json

``record`` sends :data:`CASES` with Celery onto its in-memory transport and prints each
message as the transport stored it (as JSON, as kombu's Redis transport stores it).
``read`` takes envelopes (one JSON per line) on stdin, as celeriac wrote them, and
prints what kombu decodes from each: ``repr([args, kwargs])``, one per line, or
``error: ...``. ``tests/test_compression.py`` uses both.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

#: (serializer, compression, args, kwargs). JSON cases carry a datetime (kombu's
#: marker); msgpack ones bytes (its bin type) and text beyond ASCII.
CASES: list[tuple[str, str | None, list[Any], dict[str, Any]]] = [
    ("json", "gzip", [2, "é", datetime.datetime(2026, 12, 3, 14, 25, tzinfo=datetime.timezone.utc)],
     {"nested": {"a": [1.5, None, True]}}),
    ("json", "zlib", [1, 2], {}),
    ("json", "bzip2", [2, "é"], {"nested": {"a": [1.5, None, True]}}),
    ("json", "xz", ["x" * 200], {}),
    ("msgpack", None, [1, "é", b"\x00\xff"], {"k": [1.5, None]}),
    ("msgpack", "gzip", [1, "é", b"\x00\xff"], {"k": [1.5, None]}),
    ("msgpack", "bzip2", [-(2 ** 63), 2 ** 64 - 1], {"big": "y" * 300}),
    ("msgpack", "lzma", [[1, [2, [3]]]], {"d": {"e": b"f"}}),
]


def record() -> None:
    from celery import Celery

    app = Celery("wire", broker="memory://")
    out = []
    with app.connection() as conn:
        channel = conn.default_channel
        for index, (serializer, compression, args, kwargs) in enumerate(CASES):
            task_id = f"c0ffee00-0000-4000-8000-{index:012d}"
            app.send_task("tasks.echo", args=args, kwargs=kwargs, serializer=serializer,
                          compression=compression, task_id=task_id, connection=conn)
            out.append({"serializer": serializer, "compression": compression,
                        "expected": repr([args, kwargs]), "message": channel._get("celery")})
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    print()


def read() -> None:
    from kombu import Connection

    with Connection("memory://") as conn:
        channel = conn.default_channel
        for line in sys.stdin:
            try:
                message = channel.message_to_python(json.loads(line))
                message.accept = {"application/json", "application/x-msgpack"}  # as accept_content
                args, kwargs, _embed = message.decode()
                print(repr([args, kwargs]))
            except Exception as exc:
                print(f"error: {type(exc).__name__}: {exc}")
            sys.stdout.flush()


if __name__ == "__main__":
    {"record": record, "read": read}[sys.argv[1]]()
