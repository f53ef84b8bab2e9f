"""The RabbitMQ broker (``amqp://``, ``amqps://``, Celery's ``pyamqp://``): issue 12.

:mod:`~celeriac.brokers.amqp.broker` is the Broker; beneath it the connection and its
native owner thread (:mod:`.connection`, :mod:`.session`, :mod:`.params`), what one
process holds (:mod:`.consume`), the copies it writes (:mod:`.copies`), names and
declarations (:mod:`.topology`), Celery's message form (:mod:`.envelope`), the state
store's records (:mod:`.state`) and beat claims (:mod:`.outbox`).
"""

from celeriac.brokers.amqp.broker import AmqpBroker

__all__ = ["AmqpBroker"]
