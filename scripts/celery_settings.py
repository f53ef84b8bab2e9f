"""Print ``celeriac/celery_settings.py`` from an installed Celery's own table.

Run with an interpreter that has Celery installed (celeriac does not depend on it)::

    bench/.venv-compare/bin/python scripts/celery_settings.py > celeriac/celery_settings.py

The data is generated rather than typed so that it is exactly Celery's: every current
setting name, and every old (Celery 3) upper-case name with the name it became.
"""

from __future__ import annotations

import json

import celery
from celery.app.defaults import _TO_NEW_KEY, SETTING_KEYS

HEADER = f'''"""Celery's setting names, as data (generated: do not edit).

Generated from Celery {celery.__version__}'s ``celery.app.defaults`` by
``scripts/celery_settings.py``. :mod:`celeriac.settings` uses it to map Celery's old
upper-case names to the current ones and to tell a Celery setting celeriac does not
support from a misspelt name.
"""

from __future__ import annotations
'''


def main() -> None:
    print(HEADER)
    print("#: Every current Celery setting name.")
    print("CELERY_NAMES: frozenset[str] = frozenset({")
    for name in sorted(set(SETTING_KEYS) | set(_TO_NEW_KEY.values())):
        print(f"    {json.dumps(name)},")
    print("})")
    print()
    print("#: Celery's old (Celery 3) upper-case name -> the current name.")
    print("OLD_NAMES: dict[str, str] = {")
    for old, new in sorted(_TO_NEW_KEY.items()):
        line = f"    {json.dumps(old)}: {json.dumps(new)},"
        print(line if len(line) <= 100 else f"    {json.dumps(old)}:\n        {json.dumps(new)},")
    print("}")


if __name__ == "__main__":
    main()
