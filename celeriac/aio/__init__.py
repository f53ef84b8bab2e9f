"""asyncio support (issue 13): async tasks on every pool, ``-P asyncio``, and the async
client API (``adelay``, ``aapply_async``, ``aget``: :mod:`celeriac.aio.client`)."""
