"""Canvas: task calls described now and sent later, alone or composed (Celery's paths).

* :class:`Signature` (``task.s()``, ``task.si()``, ``signature(dict)``) and its wire
  form -- :mod:`celeriac.canvas.signatures`;
* :class:`group`: many signatures in one broker call -- :mod:`celeriac.canvas.groups`;
* :class:`chain` (and ``|``): one after the other -- :mod:`celeriac.canvas.chains`;
* :class:`xmap`, :class:`xstarmap`, :class:`chunks` (``task.map``, ``task.starmap``,
  ``task.chunks``) -- :mod:`celeriac.canvas.maps`.

What the worker does with a message's callbacks, errbacks and chain is
:mod:`celeriac.middleware.followups`. Chords are not there yet: every way to build one
raises a :class:`ConfigurationError` saying so (``docs/canvas.md``).
"""

from __future__ import annotations

from typing import Any

from celeriac.canvas.chains import chain
from celeriac.canvas.groups import group
from celeriac.canvas.maps import chunks, xmap, xstarmap
from celeriac.canvas.signatures import Signature, maybe_signature, signature

#: ``subtask_type`` -> the class whose ``from_dict`` rebuilds it.
SUBTASK_TYPES: dict[str, Any] = {
    "chain": chain, "group": group, "xmap": xmap, "xstarmap": xstarmap, "chunks": chunks,
}

#: Celery's old names.
subtask = signature
maybe_subtask = maybe_signature

__all__ = ["Signature", "chain", "chunks", "group", "maybe_signature", "maybe_subtask",
           "signature", "subtask", "xmap", "xstarmap"]
