"""Canvas: task calls described now and sent later, alone or composed (Celery's paths).

* :class:`Signature` (``task.s()``, ``task.si()``, ``signature(dict)``) and its wire
  form -- :mod:`celeriac.canvas.signatures`;
* :class:`group`: many signatures in one broker call -- :mod:`celeriac.canvas.groups`;
* :class:`chain` (and ``|``): one after the other -- :mod:`celeriac.canvas.chains`;
* :class:`chord`: a group whose results go to one task -- :mod:`celeriac.canvas.chords`;
* :class:`xmap`, :class:`xstarmap`, :class:`chunks` (``task.map``, ``task.starmap``,
  ``task.chunks``) -- :mod:`celeriac.canvas.maps`.
* ``Task.replace(sig)``: a running task hands its place on -- :mod:`celeriac.canvas.replace`.

What the worker does with a message's callbacks, errbacks and chain is
:mod:`celeriac.middleware.followups`; with a chord's body,
:mod:`celeriac.middleware.chords`.
"""

from __future__ import annotations

from typing import Any

from celeriac.canvas.chains import chain
from celeriac.canvas.chords import chord
from celeriac.canvas.groups import group
from celeriac.canvas.maps import chunks, xmap, xstarmap
from celeriac.canvas.signatures import Signature, maybe_signature, signature

#: ``subtask_type`` -> the class whose ``from_dict`` rebuilds it.
SUBTASK_TYPES: dict[str, Any] = {
    "chain": chain, "chord": chord, "group": group, "xmap": xmap, "xstarmap": xstarmap, "chunks": chunks,
}

#: Celery's old names.
subtask = signature
maybe_subtask = maybe_signature

__all__ = ["Signature", "chain", "chord", "chunks", "group", "maybe_signature", "maybe_subtask",
           "signature", "subtask", "xmap", "xstarmap"]
