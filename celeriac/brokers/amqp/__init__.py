"""The RabbitMQ broker (``amqp://``), issue 12: work in progress, not registered yet.

So far only its connection exists (:mod:`celeriac.brokers.amqp.connection`: one
native owner thread per process, confirms, a tx consume channel, reconnects);
the ``amqp://`` scheme is registered in :mod:`celeriac.brokers` once the broker
on top of it passes the contract suite. The design is in the issue's notes.
"""
