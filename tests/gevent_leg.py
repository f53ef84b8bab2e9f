"""Run the test suite in a gevent-patched process: ``python tests/gevent_leg.py [pytest args]``.

This is the *client side* as a gevent user runs it -- a web app or script that
called ``gevent.monkey.patch_all()`` first and then sends tasks, waits for
results and uses the SQLite broker and backend from greenlets, with no green
pool of celeriac's running. The whole suite runs again in such a process: every
``threading.Thread`` a test starts is a greenlet, ``time.sleep`` and
``subprocess`` cooperate, locks and conditions are gevent's. Workers started by
end-to-end tests are separate processes and run as usual.

Patching must come before anything imports ``threading``, ``socket`` or
``subprocess``, so it is the very first thing this file does when run as a
script, and pytest is imported only afterwards. Importing this module patches
nothing (it is not a test module, and an ordinary pytest process must never be
patched); ``./scripts/test`` runs it as its own interpreter after the normal run.
Extra arguments go to pytest; the exit code is pytest's.

pytest-timeout still limits each test, but its alarm is handled by the hub: if
the hub itself deadlocks, nothing Python-level runs again. So a watchdog in C
(:func:`faulthandler.dump_traceback_later`) bounds the whole run: after
``CELERIAC_GEVENT_LEG_TIMEOUT`` seconds (default 600) it prints every thread's
stack and exits with status 1 rather than hang ``./scripts/test`` forever.

Tests can tell they run here with ``conftest.gevent_patched()``. End-to-end tests about
what happens inside worker processes (``conftest.WORKER_SIDE_MODULES``) are skipped here:
they exercise the client only as every other end-to-end test does.
"""

from __future__ import annotations

#: Seconds the whole leg may take before the watchdog ends it.
DEFAULT_TIMEOUT = 600.0


def main(argv: list[str]) -> int:
    import faulthandler
    import os
    import sys

    import pytest

    # Running a script puts its own directory (tests/) first on sys.path; a normal
    # pytest run does not, so drop it to import exactly what that run imports.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == here:
        del sys.path[0]
    limit = float(os.environ.get("CELERIAC_GEVENT_LEG_TIMEOUT") or DEFAULT_TIMEOUT)
    # A copy of the real stderr: pytest's capturing redirects fd 2 during each test.
    with open(os.dup(sys.stderr.fileno()), "w") as stderr:
        faulthandler.dump_traceback_later(limit, exit=True, file=stderr)
        try:
            return int(pytest.main(argv))
        finally:
            faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

    import sys

    sys.exit(main(sys.argv[1:]))
