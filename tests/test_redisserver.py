"""The redis-server test helper itself: the Redis tests are only as good as the server they get.

Fault tests trust that ``appendonly`` really keeps acknowledged writes across a
crash and that a restart comes back on the same port; these check exactly that,
plus the port-collision guard, so a broken helper fails here and not as a
mysterious broker bug.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redisserver import HOST, RedisServer, RedisServerError


def test_starts_on_loopback_and_answers_ping(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        assert server.running
        assert server.client().ping()
        assert server.client().config_get("bind") == {"bind": HOST}
        assert server.client().config_get("dir") == {"dir": str(tmp_path.resolve())}
        assert server.log_path.exists()
    finally:
        server.stop()
    assert not server.running


def test_url_names_port_db_and_prefix(redis_server: RedisServer, redis_url: str) -> None:
    base = f"redis://127.0.0.1:{redis_server.port}"
    assert redis_server.url() == f"{base}/0"
    assert redis_server.url(db=3, prefix="app-1") == f"{base}/3?prefix=app-1"
    assert redis_url.startswith(f"{base}/0?prefix=t-")


def test_appendonly_keeps_acknowledged_writes_across_kill_and_restart(fresh_redis: RedisServer) -> None:
    port = fresh_redis.port
    fresh_redis.client().set("k", b"v1")
    fresh_redis.kill()  # a crash: only what was fsynced before the reply survives
    assert not fresh_redis.running
    fresh_redis.start()
    assert fresh_redis.port == port
    assert fresh_redis.client().get("k") == b"v1"
    fresh_redis.client().set("k", b"v2")
    fresh_redis.restart()
    assert fresh_redis.port == port
    assert fresh_redis.client().get("k") == b"v2"


def test_without_appendonly_a_restart_forgets_everything(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        server.client().set("k", b"v")
        server.restart()
        assert server.client().get("k") is None
        assert not list(tmp_path.glob("*.rdb"))


def test_taken_port_is_an_error_with_the_log_not_someone_elses_pong(
        tmp_path: Path, redis_server: RedisServer) -> None:
    intruder = RedisServer(tmp_path, port=redis_server.port)
    with pytest.raises(RedisServerError, match="Address already in use"):
        intruder.start(timeout=5.0)
    assert not intruder.running
    assert redis_server.client().ping()
