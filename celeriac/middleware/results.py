"""Result storage: the results of a batch of finished messages are stored in one
backend call, before any of their messages is acked (a crash in between re-runs a
task rather than losing its result)."""

from __future__ import annotations

import logging

from celeriac.backends.base import ResultBackend
from celeriac.exceptions import CeleriacError
from celeriac.middleware.base import ACK, RETRY_LATER, Finished, Middleware, Outcome

log = logging.getLogger("celeriac.worker")


class ResultStore(Middleware):
    """Stores each batch's results; if the backend fails, their messages are delivered
    again later instead of being acked (at-least-once for results too)."""

    def __init__(self, backend: ResultBackend) -> None:
        self.backend = backend

    def before_settle(self, batch: list[Finished]) -> list[Finished]:
        records = [outcome.record for _, outcome in batch if outcome.record is not None]
        if not records:
            return batch
        try:
            self.backend.store_many(records)
        except CeleriacError as exc:
            log.error("could not store %d result(s): %s; their tasks will be delivered again",
                      len(records), exc)
            return [(d, Outcome(RETRY_LATER, str(exc), o.ran) if o.record and o.action == ACK
                     else o) for d, o in batch]
        return batch
