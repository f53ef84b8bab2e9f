"""The worker: a supervisor process and the worker processes it starts.

``supervisor`` starts and watches processes; each ``process`` runs a
``consumer`` (fetch, leases, acks) and one pool; the ``executor`` runs a
message's task through ``run``; ``status`` is the pipe between them.
"""
