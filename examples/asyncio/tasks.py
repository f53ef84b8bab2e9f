"""The feed-fetching task as a coroutine: fetch a URL with aiohttp and parse the RSS feed.

Run it where a thousand coroutines wait on the network at once, on one event loop::

    celeriac -A tasks worker -P asyncio -c 1000
"""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp

from celeriac import Celeriac

app = Celeriac("tasks", broker=os.environ.get("CELERIAC_BROKER_URL", "sqlite:///feeds.db"),
               backend=os.environ.get("CELERIAC_RESULT_BACKEND", "sqlite:///feeds.db"))

#: One client session per event loop (a worker process has one loop for its async tasks):
#: its connector keeps up to a thousand keep-alive connections, so a thousand coroutines
#: reuse them instead of opening new ones. A session belongs to the loop it was made on.
_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def session() -> aiohttp.ClientSession:
    """This loop's client session, made on first use."""
    loop = asyncio.get_running_loop()
    client = _sessions.get(loop)
    if client is None or client.closed:
        client = _sessions[loop] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000), timeout=aiohttp.ClientTimeout(total=30))
    return client


@app.task
async def fetch_feed(url: str) -> dict[str, Any]:
    """Fetch one RSS feed and return its title and item titles."""
    async with session().get(url) as response:
        response.raise_for_status()
        content = await response.read()
    channel = ET.fromstring(content).find("channel")
    if channel is None:
        raise ValueError(f"{url} is not an RSS document")
    return {
        "url": url,
        "title": channel.findtext("title", ""),
        "items": [item.findtext("title", "") for item in channel.iter("item")],
    }
