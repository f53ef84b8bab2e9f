"""Remote control without a worker: the command pipe's wire format and its two ends, the
``reserved`` status event, the control message format, secret masking, and the
``app.control`` client against nodes played by threads on the memory broker."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.control import ControlMessage, flatten
from celeriac.exceptions import ConfigurationError
from celeriac.masking import MASK, mask_settings, mask_url
from celeriac.worker.commands import (
    COMMAND_TYPES,
    Command,
    CommandReader,
    CommandWriter,
    ReportReserved,
    SetConcurrency,
    SetQueues,
    SetRateLimit,
    SetTimeLimit,
    Stop,
    decode_command,
    encode_command,
)
from celeriac.worker.status import Reserved, StatusReader, StatusWriter, decode_event

SAMPLES: list[Command] = [
    SetQueues(("celery", "io", "ünïcode")),
    SetQueues(()),
    SetConcurrency(concurrency=12, prefetch=48),
    SetTimeLimit("tasks.add", soft=0.5, hard=None),
    SetTimeLimit("tasks.add", soft=None, hard=2.0),
    ReportReserved(request=7),
    Stop("the pool shrank"),
    SetRateLimit("tasks.add", "10/s"),
]


def test_every_command_round_trips_through_one_encode_and_decode() -> None:
    assert {type(c).kind for c in SAMPLES} == set(COMMAND_TYPES)
    for command in SAMPLES:
        line = encode_command(command)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert decode_command(line.rstrip(b"\n")) == command


@pytest.mark.parametrize("line", [
    b"not json", b"[1, 2]", b'["nope"]', b"[5]", b"[]", b'{"c": "stop", "reason": "x"}',
    b'["queues"]', b'["stop", "x", 1]', b'["concurrency"]',
])
def test_a_malformed_command_line_is_a_value_error(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode_command(line)


@pytest.fixture
def pipe() -> Iterator[tuple[CommandWriter, CommandReader]]:
    read_fd, write_fd = os.pipe()
    writer, reader = CommandWriter(write_fd), CommandReader(read_fd)
    yield writer, reader
    writer.close()
    reader.close()


def test_the_pipe_carries_commands_in_order_and_an_empty_read_returns_nothing(
        pipe: tuple[CommandWriter, CommandReader]) -> None:
    writer, reader = pipe
    assert reader.read() == []
    for command in SAMPLES:
        writer.send(command)
    assert reader.read() == SAMPLES
    assert reader.read() == []
    assert reader.open


def test_a_full_pipe_never_blocks_the_supervisor_and_loses_nothing(
        pipe: tuple[CommandWriter, CommandReader]) -> None:
    writer, reader = pipe
    sent = [SetQueues((f"queue-{i}-" + "x" * 200,)) for i in range(2000)]  # ~450 KB
    for command in sent:
        writer.send(command)  # returns at once although nobody reads
    assert writer.pending
    got: list[Command] = []
    while writer.pending or len(got) < len(sent):
        got += reader.read()
        writer.flush()
    assert got == sent


def test_a_malformed_line_is_skipped_and_the_reader_sees_the_supervisor_go(
        pipe: tuple[CommandWriter, CommandReader], caplog: pytest.LogCaptureFixture) -> None:
    writer, reader = pipe
    os.write(writer.fd, b'["bogus"]\n' + encode_command(Stop("x")) + b'["sto')
    assert reader.read() == [Stop("x")]
    assert "ignoring a malformed command from the supervisor" in caplog.text
    os.write(writer.fd, b'p", "y"]\n')
    assert reader.read() == [Stop("y")]  # a line split between reads is joined
    writer.close()
    # A gevent-patched process closes a pipe at the hub's next turn: give it turns.
    deadline = time.monotonic() + 5
    while reader.open and time.monotonic() < deadline:
        assert reader.read() == []
        time.sleep(0.01)
    assert not reader.open


def test_reserved_answers_fit_in_atomic_lines_and_round_trip() -> None:
    read_fd, write_fd = os.pipe()
    writer, reader = StatusWriter(write_fd), StatusReader(read_fd)
    tasks: list[dict[str, Any]] = [{"id": f"id-{i}", "name": "tasks.add", "args": "x" * 400,
                                    "kwargs": "{}"} for i in range(40)]
    writer.reserved(3, tasks)
    raw = os.read(read_fd, 1 << 20)
    lines = raw.split(b"\n")[:-1]
    assert len(lines) > 1 and all(len(line) < 4096 for line in lines)
    events = [decode_event(line) for line in lines]
    assert all(isinstance(e, Reserved) and e.request == 3 for e in events)
    assert [e.last for e in events if isinstance(e, Reserved)] == [False] * (len(events) - 1) + [True]
    assert [t for e in events if isinstance(e, Reserved) for t in e.tasks] == tasks
    writer.reserved(4, [])
    [empty], _ = reader.read()
    assert empty == Reserved(4, (), last=True)
    writer.close()
    reader.close()


def test_control_messages_round_trip_and_malformed_bodies_say_why() -> None:
    message = ControlMessage("ping", {"a": 1}, ("w1@h",), "box", 123.5)
    assert ControlMessage.from_body(message.to_body()) == message
    assert ControlMessage.from_body({"command": "ping"}) == ControlMessage("ping", {})
    for body, why in [
        (["ping"], "not a JSON object"),
        ({"command": ""}, "'command' must be a non-empty string"),
        ({"command": "ping", "arguments": [1]}, "'arguments' must be an object"),
        ({"command": "ping", "destination": "w1@h"}, "'destination' must be a list"),
        ({"command": "ping", "destination": [1]}, "'destination' must be a list"),
        ({"command": "ping", "reply_to": 5}, "'reply_to' must be a string"),
        ({"command": "ping", "expires": "soon"}, "'expires' must be a number"),
        ({"command": "ping", "expires": True}, "'expires' must be a number"),
    ]:
        with pytest.raises(ValueError, match=why):
            ControlMessage.from_body(body)


def test_secrets_are_masked_before_they_leave_the_node() -> None:
    assert mask_url("redis://:s3cret@cache:6379/0") == "redis://:**@cache:6379/0"
    assert mask_url("redis://user:pw@cache/1?prefix=x") == "redis://user:**@cache/1?prefix=x"
    assert mask_url("sqlite:///celeriac.db") == "sqlite:///celeriac.db"
    masked = mask_settings({
        "broker_url": "rediss://:pw@host:6380/0", "result_backend": "sqlite:///r.db",
        "secret_key": "abc", "broker_transport_options": {"password": "p", "db": 1},
        "task_routes": {"tasks.*": {"queue": "io"}}, "callable": object,
        "accept_content": ["json"],
    })
    assert masked["broker_url"] == "rediss://:**@host:6380/0"
    assert masked["result_backend"] == "sqlite:///r.db"
    assert masked["secret_key"] == MASK
    assert masked["broker_transport_options"] == {"password": MASK, "db": 1}
    assert masked["task_routes"] == {"tasks.*": {"queue": "io"}}
    assert masked["callable"] == repr(object)
    assert masked["accept_content"] == ["json"]


# -- the client, with nodes played by threads on the memory broker ----------------------


class Node(threading.Thread):
    """Answers like a worker node would: follows the stream, replies to what is for it."""

    def __init__(self, app: Celeriac, name: str) -> None:
        super().__init__(daemon=True)
        self.app, self.name = app, name
        self.seen: list[ControlMessage] = []
        self.stopped = threading.Event()
        app.broker.heartbeat(name, {}, ttl=60)
        self.cursor = app.broker.command_cursor()

    def run(self) -> None:
        broker = self.app.broker
        while not self.stopped.is_set():
            for command in broker.commands(after=self.cursor):
                self.cursor = command.seq
                message = ControlMessage.from_body(command.body)
                if message.destination is not None and self.name not in message.destination:
                    continue
                self.seen.append(message)
                if message.reply_to:
                    broker.reply(message.reply_to, {self.name: {"ok": f"{message.command}"}})
            time.sleep(0.01)


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("tests", broker="memory://", backend="memory://")
    nodes = [Node(app, "n1@h"), Node(app, "n2@h")]
    for node in nodes:
        node.start()
    app.nodes = nodes  # type: ignore[attr-defined]
    yield app
    for node in nodes:
        node.stopped.set()
        node.join()


def test_replies_come_from_every_live_node_and_collection_ends_when_all_answered(
        app: Celeriac) -> None:
    replies = app.control.ping(timeout=30)  # ends once both live nodes answered
    assert sorted(replies or [], key=lambda r: list(r)) == [
        {"n1@h": {"ok": "ping"}}, {"n2@h": {"ok": "ping"}}]
    assert app.control.inspect(timeout=30).stats() == {"n1@h": {"ok": "stats"},
                                                       "n2@h": {"ok": "stats"}}
    assert app.control.inspect(destination="n2@h", timeout=30).ping() == {"ok": "ping"}
    got: list[dict[str, Any]] = []
    assert len(app.control.broadcast("ping", reply=True, limit=1, timeout=30,
                                     callback=got.append) or []) == 1
    assert len(got) == 1
    assert app.control.inspect(destination=["nobody@h"], timeout=0.2).ping() is None


def test_a_command_carries_its_arguments_destination_and_expiry(app: Celeriac) -> None:
    before = time.time()
    assert app.control.time_limit("tasks.add", 1, 2.5, destination=["n1@h"]) is None
    assert app.control.pool_grow(3, destination="n2@h", reply=True, timeout=30) == [
        {"n2@h": {"ok": "pool_grow"}}]
    n1, n2 = app.nodes  # type: ignore[attr-defined]
    [limit] = wait_for_seen(n1)
    assert limit.command == "time_limit" and limit.reply_to is None
    assert limit.arguments == {"task_name": "tasks.add", "soft": 1, "hard": 2.5}
    assert limit.destination == ("n1@h",)
    assert limit.expires is not None and before + 1.0 <= limit.expires <= time.time() + 1.0
    assert [m.arguments for m in n2.seen] == [{"n": 3}]
    assert app.control.inspect(timeout=30).registered("rate_limit") is not None
    assert n2.seen[-1].arguments == {"taskinfoitems": ["rate_limit"]}


def wait_for_seen(node: Node) -> list[ControlMessage]:
    deadline = time.monotonic() + 10
    while not node.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    return node.seen


def test_bad_input_is_a_clear_error_and_sends_nothing(app: Celeriac) -> None:
    cursor = app.broker.command_cursor()
    with pytest.raises(ConfigurationError, match=r"unknown control command 'pign'.*'ping'"):
        app.control.broadcast("pign")
    with pytest.raises(ConfigurationError, match="arguments must be JSON"):
        app.control.broadcast("time_limit", {"task_name": object()})
    with pytest.raises(ConfigurationError, match="timeout"):
        app.control.ping(timeout=0)
    with pytest.raises(TypeError, match="destination must be a node name"):
        app.control.ping(destination=[1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="task ids are non-empty strings"):
        app.control.revoke(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="task ids are non-empty strings"):
        app.control.terminate(["ok", None])  # type: ignore[list-item]
    assert app.broker.command_cursor() == cursor
    assert app.broker.revocations() == []


def test_revoke_is_stored_in_the_broker_not_broadcast(app: Celeriac) -> None:
    cursor = app.broker.command_cursor()
    app.control.revoke(["a", "b"])
    app.control.terminate("c", signal="SIGKILL")
    assert app.control.broadcast("revoke", {"task_id": "d"}, reply=True) is None
    found = [(r.task_id, r.terminate, r.signal) for r in app.broker.revocations()]
    assert found == [("a", False, "SIGTERM"), ("b", False, "SIGTERM"), ("c", True, "SIGKILL"),
                     ("d", False, "SIGTERM")]
    assert app.broker.command_cursor() == cursor


def test_flatten_merges_replies_by_node() -> None:
    assert flatten([{"a": 1}, {"b": 2}, {"a": 3}]) == {"a": 3, "b": 2}
    assert flatten([]) == {}


def test_query_task_takes_one_id_or_a_list_and_refuses_anything_else(app: Celeriac) -> None:
    from celeriac.middleware.remote import Refused, _ids

    assert _ids("a") == {"a"} and _ids(["a", "b"]) == {"a", "b"} and _ids(("c",)) == {"c"}
    for wrong in (3, None, ["a", 1], {"a": 1}):
        with pytest.raises(Refused, match="ids must be a task id or a list"):
            _ids(wrong)
    app.control.inspect(timeout=30).query_task(["x", "y"])  # Celery's older, unary form
    n1, _ = app.nodes  # type: ignore[attr-defined]
    assert wait_for_seen(n1)[-1].arguments == {"ids": ["x", "y"]}
