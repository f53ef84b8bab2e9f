"""A loopback feed hub: serves RSS documents after a configurable latency.

It stands in for the slow remote feeds of a feed aggregator, so the example and
the demo measure the queue, not the internet. It runs on gevent's WSGI server,
so one process answers thousands of concurrent requests, each after
``--latency`` seconds.

    python examples/gevent/feedhub.py --port 8765 --latency 0.5
    curl http://127.0.0.1:8765/feeds/42.xml
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 - patch first
import sys  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402
from xml.sax.saxutils import escape  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

ITEMS_PER_FEED = 5


def rss(feed: str) -> bytes:
    """An RSS 2.0 document for ``feed`` with a few items."""
    items = "".join(
        f"<item><title>{escape(feed)} story {n}</title>"
        f"<link>http://127.0.0.1/{escape(feed)}/{n}</link></item>"
        for n in range(ITEMS_PER_FEED))
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
            f"<title>Feed {escape(feed)}</title>{items}</channel></rss>").encode()


def make_app(latency: float) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if not path.startswith("/feeds/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        gevent.sleep(latency)
        body = rss(path.removeprefix("/feeds/").removesuffix(".xml"))
        start_response("200 OK", [("Content-Type", "application/rss+xml"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds before each answer")
    options = parser.parse_args()
    server = WSGIServer((options.host, options.port), make_app(options.latency), log=None,
                        backlog=2048)
    print(f"feed hub on http://{options.host}:{options.port}/feeds/N.xml "
          f"({options.latency}s latency)", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
