"""The main function of one worker process (started by the supervisor).

Order matters: the pool prepares the process (a green pool patches here) before
the user's app is imported, then the app, the pool and the consumer start.
SIGTERM asks for a warm shutdown; SIGINT is ignored, because Ctrl-C reaches the
whole process group and the supervisor decides what it means.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

from celeriac.worker.spec import WorkerSpec


def configure_logging(level: str, name: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr,
        format=f"[%(asctime)s %(levelname)s {name}] %(message)s")


def main() -> int:
    spec = WorkerSpec.from_env()
    from celeriac.pools import get_pool

    pool_class = get_pool(spec.pool)
    pool_class.prepare_process()
    configure_logging(spec.loglevel, f"{spec.node}/{spec.index}")
    os.chdir(spec.workdir)

    from celeriac.loader import load_app
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.status import StatusWriter

    app = load_app(spec.app)
    app.conf.update(spec.settings)
    pool = pool_class(spec.concurrency)
    status = StatusWriter(spec.status_fd)
    consumer = Consumer(app, pool, spec, status)

    def on_term(signum: int, frame: FrameType | None) -> None:
        consumer.stop("warm shutdown requested")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pool.start()
    try:
        pool.run(consumer.run)
    finally:
        pool.stop()
        app.close()
        status.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
