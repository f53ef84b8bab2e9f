"""asyncio support (issue 13): the ``-P asyncio`` pool's parts and the per-process loop."""
