"""asyncio support (issue 13): async tasks on every pool, ``-P asyncio`` and its parts
(:mod:`~celeriac.aio.greenjobs`, :mod:`~celeriac.aio.syncbodies`, :mod:`~celeriac.aio.monitor`),
and the async client API (``adelay``, ``aapply_async``, ``aget``: :mod:`celeriac.aio.client`)."""
