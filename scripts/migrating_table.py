"""Write the table of Celery's surface into ``docs/migrating.md`` from ``docs/celery-surface.csv``.

The data file has one row per name of Celery's user-facing surface (a setting, a task
option, a worker flag, an import path...) with what celeriac does about it; this script
renders it as Markdown between the two marker comments of ``docs/migrating.md`` and
leaves the prose around them as it is::

    .venv/bin/python scripts/migrating_table.py          # rewrite the table
    .venv/bin/python scripts/migrating_table.py --check  # exit 1 if the doc is stale

``tests/test_migrating_table.py`` checks the doc against this rendering and each row's
status against the code, so a row cannot say "works" for a name celeriac refuses (or
the reverse). To flip a row once a feature lands: set its status, clear ``planned``,
write the note, run this script.

Columns: ``kind``, ``name`` (Celery's name), ``status`` (``works``: Celery's meaning;
``differs``: accepted, with the difference in the note and how to get Celery's
behaviour; ``unsupported``: refused or absent, the note says why or what to use),
``planned`` (the issue that brings it, for a row not done yet) and ``note``.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "celery-surface.csv"
DOC = ROOT / "docs" / "migrating.md"
BEGIN = ("<!-- celery-surface table: generated from docs/celery-surface.csv by "
         "scripts/migrating_table.py; edit the CSV, not this -->")
END = "<!-- end of celery-surface table -->"

STATUSES = ("works", "differs", "unsupported")
#: How each status reads in the doc.
LABELS = {"works": "works", "differs": "differs", "unsupported": "not supported"}
#: The kinds of row, in the doc's order, with each one's heading.
KINDS = {
    "import": "Import paths (`celery.X` is `celeriac.X`)",
    "command": "`celery` commands",
    "celery option": "Options of the `celery` command",
    "worker flag": "`celery worker` flags",
    "setting": "Settings",
    "task option": "Task options (`@app.task(...)` and `base=` class attributes)",
    "send option": "Send options (`apply_async(...)`, `send_task`, `signature(...).set`)",
    "AsyncResult": "`AsyncResult` methods and attributes",
    "exception": "`celery.exceptions`",
    "state": "`celery.states`",
    "signal": "`celery.signals`",
}


@dataclass(frozen=True)
class Row:
    kind: str
    name: str
    status: str
    planned: str
    note: str


class DataError(ValueError):
    """A row of the data file that cannot be right whatever the code does."""


def load(path: Path = DATA) -> list[Row]:
    """The rows of the data file, checked for shape: a known kind and status, no name
    twice, and ``planned`` only on a row that is not done."""
    with path.open(newline="") as stream:
        rows = [Row(**{k: (v or "").strip() for k, v in line.items()})
                for line in csv.DictReader(stream)]
    seen: set[tuple[str, str]] = set()
    for number, row in enumerate(rows, start=2):
        where = f"{path.name}:{number} ({row.kind} {row.name})"
        if row.kind not in KINDS:
            raise DataError(f"{where}: kind must be one of {', '.join(KINDS)}")
        if row.status not in STATUSES:
            raise DataError(f"{where}: status must be one of {', '.join(STATUSES)}")
        if row.planned and row.status == "works":
            raise DataError(f"{where}: a row that works has nothing planned")
        if row.status == "differs" and not row.note:
            raise DataError(f"{where}: a row that differs says how in its note")
        if (row.kind, row.name) in seen:
            raise DataError(f"{where}: listed twice")
        seen.add((row.kind, row.name))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _note(row: Row) -> str:
    planned = f"Planned in {row.planned}." if row.planned else ""
    return _cell(" ".join(part for part in (row.note, planned) if part))


def _counts(rows: Iterable[Row]) -> str:
    rows = list(rows)
    parts = [f"{sum(r.status == status for r in rows)} {LABELS[status]}" for status in STATUSES]
    return f"{len(rows)} names: {', '.join(parts)}"


def render(rows: list[Row]) -> str:
    """The Markdown between the markers (markers included)."""
    out = [BEGIN, ""]
    for kind, heading in KINDS.items():
        of_kind = [r for r in rows if r.kind == kind]
        if not of_kind:
            continue
        out += [f"### {heading}", "", f"{_counts(of_kind)}.", "", "| Celery | celeriac | note |",
                "|---|---|---|"]
        out += [f"| `{_cell(r.name)}` | {LABELS[r.status]} | {_note(r)} |" for r in of_kind]
        out.append("")
    out.append(END)
    return "\n".join(out)


def updated(doc: str, rows: list[Row]) -> str:
    """``doc`` with the text between the markers replaced by the rendering of ``rows``."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        raise DataError(f"{DOC.name}: the marker comments are missing (put {BEGIN!r} and "
                        f"{END!r} where the table goes)")
    return doc[:start] + render(rows) + doc[end + len(END):]


def main(argv: list[str]) -> int:
    doc = DOC.read_text()
    new = updated(doc, load())
    if "--check" in argv:
        if new != doc:
            print(f"{DOC} is stale: run {Path(__file__).relative_to(ROOT)}", file=sys.stderr)
            return 1
        return 0
    if new != doc:
        DOC.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
