"""How the Redis broker stores a batch of events (``celeriac/brokers/redis_events.py``),
on a real redis-server: the batch's key and its index come and go together, a retried
emit is stored once, a batch whose script failed expires, and what earlier versions
stored inline is still read. What every broker's event log does is in ``test_broker.py``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celeriac.brokers import Broker, broker_from_url
from celeriac.brokers.base import encode_event


@pytest.fixture
def redis_events(redis_url: str, redis_server: Any) -> Iterator[tuple[Broker, Any, str]]:
    """A Redis broker on a prefix of this test's own, a plain client and that prefix."""
    import redis

    broker = broker_from_url(redis_url)
    yield broker, redis.Redis.from_url(redis_server.url()), broker.prefix  # type: ignore[attr-defined]
    broker.close()


def _event_lines(count: int, tag: str) -> list[bytes]:
    return [encode_event("task-started", "w1", {"uuid": f"{tag}-{i}"}, 1.0 + i)
            for i in range(count)]


def _batch_keys(client: Any, prefix: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{prefix}:events:b:*", count=1000))


def test_redis_event_batches_are_strings_that_leave_with_their_index(
        redis_events: Any) -> None:
    """The script indexes each batch's key and never handles its bytes; trimming past the
    cap deletes the keys of the batches it drops, so nothing is left behind."""
    broker, client, prefix = redis_events
    broker.events_kept = 25
    for batch in range(8):
        broker.emit_encoded(_event_lines(10, f"b{batch}"))
    kept = [e.data["uuid"] for e in broker.events(limit=100)]
    assert kept == [f"b{b}-{i}" for b in range(5, 8) for i in range(10)][-25:]
    keys = _batch_keys(client, prefix)
    assert len(keys) == client.zcard(f"{prefix}:events") == 3  # batches 5, 6 and 7
    assert all(client.ttl(key) == -1 for key in keys)  # indexed: kept for good
    broker.events_kept = 0  # the cap at nothing: every batch goes, keys and all
    broker.emit_encoded(_event_lines(3, "last"))
    assert broker.events(limit=100) == [] and _batch_keys(client, prefix) == []


def test_redis_events_stored_inline_by_an_earlier_version_are_read_and_trimmed(
        redis_events: Any) -> None:
    broker, client, prefix = redis_events
    old = _event_lines(4, "old")
    client.set(f"{prefix}:events:seq", 4)
    client.zadd(f"{prefix}:events", {b"1|" + b"\n".join(old): 4})
    broker.emit_encoded(_event_lines(3, "new"))
    seen = broker.events(limit=100)
    assert [e.data["uuid"] for e in seen] == [*(f"old-{i}" for i in range(4)),
                                               *(f"new-{i}" for i in range(3))]
    assert [e.seq for e in seen] == list(range(1, 8))
    assert [e.data["uuid"] for e in broker.events_of("old-2", 0, 100)] == ["old-2"]
    broker.events_kept = 3  # the inline batch is now wholly past the cap
    broker.emit_encoded(_event_lines(3, "newer"))
    assert [e.data["uuid"] for e in broker.events(limit=100)] == [
        f"newer-{i}" for i in range(3)]
    assert client.zcard(f"{prefix}:events") == 1


def test_redis_an_event_batch_retried_after_a_lost_reply_is_stored_once_and_kept(
        redis_events: Any) -> None:
    """The transaction ran, then the connection dropped before its reply: the retry SETs
    the batch again (with its TTL) and finds it indexed, so it indexes nothing twice and
    makes the batch permanent again. Also after the server forgot its scripts."""
    import redis

    broker, client, prefix = redis_events
    client.script_flush()
    real_pipeline = broker._redis.pipeline  # type: ignore[attr-defined]
    executed: list[int] = []

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a: Any, **k: Any) -> Any:
            value = real_execute(*a, **k)
            executed.append(1)
            if len(executed) == 1:
                raise redis.ConnectionError("Connection closed by server. (simulated)")
            return value

        pipe.execute = execute
        return pipe

    broker._redis.pipeline = pipeline  # type: ignore[attr-defined]
    broker.emit_encoded(_event_lines(5, "once"))
    assert len(executed) == 2
    seen = broker.events(limit=100)
    assert [e.data["uuid"] for e in seen] == [f"once-{i}" for i in range(5)]
    assert [e.seq for e in seen] == [1, 2, 3, 4, 5]
    keys = _batch_keys(client, prefix)
    assert len(keys) == 1 and client.ttl(keys[0]) == -1


def test_redis_an_event_batch_whose_script_fails_is_refused_and_expires(
        redis_events: Any) -> None:
    from celeriac.brokers.redis_events import UNINDEXED_BATCH_TTL
    from celeriac.exceptions import BrokerError

    broker, client, prefix = redis_events
    broker.events_kept = "many"  # type: ignore[assignment]  # the script cannot compare it
    with pytest.raises(BrokerError, match="script workers failed"):
        broker.emit_encoded(_event_lines(2, "lost"))
    keys = _batch_keys(client, prefix)
    assert len(keys) == 1 and 0 < client.ttl(keys[0]) <= UNINDEXED_BATCH_TTL
