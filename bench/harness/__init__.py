"""The benchmark harness behind ``./scripts/bench`` (issue 15).

One module per concern: ``servers`` (Redis, RabbitMQ, the feed hub), ``procs`` (workers,
producers, counters), ``systems`` (who is compared, configured how), ``tasks`` (the task
module each system runs), ``ceiling`` (the same bodies with no queue), ``context`` (what a
measurement shares), ``workloads`` (what is measured, how), ``targets`` (the issue's
targets), ``run`` (the runs, with a rich progress display), ``report`` and ``charts``
(``docs/benchmarks.md`` and its PNGs), ``machine`` (the facts the report starts with).
"""
