"""Settling: the one path by which a finished message leaves the broker.

Both ends use it: a worker process's consumer for every batch of finished jobs,
and the supervisor for a task it failed itself (a hard time limit it enforced
by killing the process). The order is always the same: the pipeline's
``before_settle`` hooks (status flush, result storage: a result is stored
before its message is acked, and a message whose result could not be stored is
delivered again later instead), then one ``ack`` for the batch, dead letters,
requeues (a task's ``Reject(requeue=True)``), delayed ones and deferred ones (over a
rate or concurrency limit: uncharged), then the ``after_settle`` hooks (recycling).
"""

from __future__ import annotations

import logging

from celeriac.brokers.base import Broker
from celeriac.middleware.base import ACK, DEAD, DEFER, REQUEUE, RETRY_LATER, Finished, Pipeline

log = logging.getLogger("celeriac.worker")

#: Delay before a message whose result could not be stored is delivered again.
RETRY_LATER_DELAY = 1.0


class Settler:
    """Stores results and settles messages, in batches, in that order."""

    def __init__(self, broker: Broker, pipeline: Pipeline) -> None:
        self.broker = broker
        self.pipeline = pipeline

    def settle(self, batch: list[Finished]) -> list[Finished]:
        """Settle ``batch``; return it as settled (an outcome may have become a retry-later)."""
        batch = self.pipeline.before_settle(batch)
        acks = [d for d, o in batch if o.action == ACK]
        if acks:
            for delivery, ok in zip(acks, self.broker.ack(acks), strict=True):
                if not ok:
                    log.warning("ack of message %s refused: its lease passed to another worker "
                                "(the task may run twice)", delivery.id)
        for delivery, outcome in batch:
            if outcome.action == DEAD:
                self.broker.dead_letter([delivery], outcome.reason)
            elif outcome.action == RETRY_LATER:
                self.broker.requeue([delivery], delay=RETRY_LATER_DELAY)
            elif outcome.action == REQUEUE:
                self.broker.requeue([delivery])
            elif outcome.action == DEFER:
                # Never started (over a limit): this delivery is not charged.
                self.broker.requeue([delivery], delay=outcome.delay, uncharge=True)
        self.pipeline.after_settle(batch)
        return batch
