"""Compression (``celeriac.compression``) and the msgpack serializer, with kombu's meaning.

``tests/data/kombu_wire.json`` holds messages Celery 5.7 sent with compression and
msgpack, as its transport stored them (the command that made it is in
``scripts/kombu_wire.py``): celeriac must read each to the same arguments. The other way,
celeriac's messages are handed to kombu in ``bench/.venv-compare`` when it exists
(``CELERIAC_COMPARE_VENV`` names another), and kombu must read them.
"""

from __future__ import annotations

import base64
import bz2
import importlib.util
import json
import lzma
import os
import subprocess
import sys
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import compare_python, needs_celery

from celeriac import Celeriac, compression
from celeriac.brokers.base import OutgoingMessage
from celeriac.contrib.testing.worker import start_worker
from celeriac.exceptions import ConfigurationError, MessageDecodeError, SerializationError
from celeriac.message import decode, encode
from celeriac.task_options import TaskOptions

ROOT = Path(__file__).resolve().parent.parent
WIRE = json.loads((ROOT / "tests" / "data" / "kombu_wire.json").read_text())
_SPEC = importlib.util.spec_from_file_location("kombu_wire", ROOT / "scripts" / "kombu_wire.py")
assert _SPEC is not None and _SPEC.loader is not None
_SCRIPT = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_SCRIPT)
#: The calls the recorded messages are of: (serializer, compression, args, kwargs).
CASES: list[tuple[str, str | None, list[Any], dict[str, Any]]] = _SCRIPT.CASES
ACCEPT = {"application/json", "application/x-msgpack"}
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
VALUES: list[Any] = [1, "é", b"\x00\xff", {"k": [1.5, None, True]}, 2 ** 64 - 1, -(2 ** 63)]


def _app(name: str, **settings: Any) -> Celeriac:
    return Celeriac(name, broker="memory://", backend="memory://",
                    accept_content=["json", "msgpack"], **settings)


def _envelope(data: bytes) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(data)
    return envelope


# -- kombu's wire form ----------------------------------------------------------------------
@pytest.mark.parametrize("case", WIRE, ids=lambda c: f"{c['serializer']}-{c['compression']}")
def test_a_message_celery_compressed_decodes_here(case: dict[str, Any]) -> None:
    message = decode(json.dumps(case["message"]).encode(), ACCEPT)
    assert repr([message.args, message.kwargs]) == case["expected"]


def test_the_fixture_is_of_the_script_cases() -> None:
    assert [(c["serializer"], c["compression"], c["expected"]) for c in WIRE] == [
        (serializer, name, repr([args, kwargs])) for serializer, name, args, kwargs in CASES]


@pytest.mark.parametrize("index", [i for i, c in enumerate(CASES) if c[0] == "msgpack"])
def test_our_msgpack_body_is_byte_for_byte_kombus(index: int) -> None:
    """msgpack and the compressors are deterministic: same arguments, same body."""
    celery = WIRE[index]["message"]
    _, name, args, kwargs = CASES[index]
    ours = _envelope(encode("tasks.echo", "x", args, kwargs, queue="celery", serializer="msgpack",
                            compression=name))
    assert ours["body"] == celery["body"]
    assert ours["headers"].get("compression") == celery["headers"].get("compression")
    for key in ("content-type", "content-encoding"):
        assert ours[key] == celery[key]
    assert ours["properties"]["body_encoding"] == celery["properties"]["body_encoding"]


@pytest.mark.parametrize("case", [c for c in WIRE if c["serializer"] == "json"],
                         ids=lambda c: str(c["compression"]))
def test_a_compressed_json_body_is_kombus_layout(case: dict[str, Any]) -> None:
    """JSON text compressed, then base64; the header the method's content type: only
    the JSON's spacing differs from kombu's."""
    celery = case["message"]
    packed = base64.b64decode(celery["body"])
    method = compression.get(case["compression"])
    assert celery["headers"]["compression"] == method.content_type
    ours = _envelope(encode("t", "x", [1], {}, queue="q", compression=case["compression"]))
    assert ours["headers"]["compression"] == method.content_type
    assert (ours["content-type"], ours["content-encoding"], ours["properties"]["body_encoding"]) == (
        celery["content-type"], celery["content-encoding"], "base64")
    text = compression.decompress(base64.b64decode(ours["body"]), method.content_type)
    assert json.loads(text) == [[1], {}, EMBED]
    assert json.loads(compression.decompress(packed, method.content_type))[2] == EMBED


@needs_celery
def test_kombu_reads_our_compressed_and_msgpack_messages(tmp_path: Path) -> None:
    python = compare_python()
    assert python is not None, "no venv with kombu: run ./scripts/test, or set CELERIAC_COMPARE_VENV"
    # kombu registers msgpack only if it can import it: a directory holding only a link to
    # this interpreter's msgpack package gives it that, and nothing else.
    (tmp_path / "msgpack").symlink_to(Path(msgpack.__file__).parent)
    lines = [encode("tasks.echo", "x", args, kwargs, queue="celery", serializer=serializer,
                    compression=name) for serializer, name, args, kwargs in CASES]
    expected = [repr([args, kwargs]) for _, _, args, kwargs in CASES]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([str(python), str(ROOT / "scripts" / "kombu_wire.py"), "read"],
                          input=b"\n".join(lines), env=env, capture_output=True, timeout=120,
                          check=True)
    assert proc.stdout.decode().splitlines() == expected


# -- round trips and errors -----------------------------------------------------------------
@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
@pytest.mark.parametrize("name", [*compression.names(), "application/x-gzip", "application/x-bz2"])
def test_every_method_and_alias_round_trips(serializer: str, name: str) -> None:
    data = encode("t", "x", VALUES, {"n": "é" * 500}, queue="q", serializer=serializer,
                  compression=name)
    message = decode(data, {*ACCEPT, "application/x-python-serialize"})
    assert (message.args, message.kwargs) == (VALUES, {"n": "é" * 500})
    assert _envelope(data)["headers"]["compression"] == compression.get(name).content_type


def test_an_uncompressed_message_has_no_compression_header() -> None:
    assert "compression" not in _envelope(encode("t", "x", [1], {}, queue="q"))["headers"]


def test_compression_makes_a_large_body_smaller() -> None:
    plain = _envelope(encode("t", "x", ["word " * 2000], {}, queue="q"))["body"]
    packed = _envelope(encode("t", "x", ["word " * 2000], {}, queue="q", compression="gzip"))
    assert len(packed["body"]) < len(plain) / 20


@pytest.mark.parametrize("name", ["nope", "GZIP", "brotli", "zstd", 3])
def test_an_unknown_compression_is_refused_when_sent(name: Any) -> None:
    app = _app("unknown-compression")

    @app.task
    def echo(value: Any) -> Any:
        return value

    with pytest.raises(ConfigurationError, match="compression"):
        echo.apply_async([1], compression=name)
    with pytest.raises(ConfigurationError, match="gzip, zlib, bzip2"):
        encode("t", "x", [1], {}, queue="q", compression=name)
    with pytest.raises(ConfigurationError, match="task option compression"):
        app.task(name="other", compression=name)(lambda: None)
    with pytest.raises(ConfigurationError, match="task_compression"):
        app.conf.task_compression = name
    assert app.broker.stats() == {} or all(s.ready == 0 for s in app.broker.stats().values())


def test_brotli_and_zstd_say_why() -> None:
    with pytest.raises(ConfigurationError, match="needs a library celeriac does not use"):
        compression.get("brotli")


def _wire(body: bytes, header: Any, content_type: str = "application/json") -> bytes:
    return json.dumps({
        "body": base64.b64encode(body).decode(), "content-type": content_type,
        "content-encoding": "utf-8", "properties": {"body_encoding": "base64"},
        "headers": {"task": "t", "id": "i", "compression": header}}).encode()


JSON_BODY = json.dumps([[1], {}, EMBED]).encode()


@pytest.mark.parametrize(("data", "reason"), [
    (_wire(zlib.compress(JSON_BODY), "application/x-snappy"), "unknown compression"),
    (_wire(zlib.compress(JSON_BODY), 7), "header 'compression' must be a string"),
    (_wire(JSON_BODY, "application/x-gzip"), "damaged application/x-gzip"),
    (_wire(zlib.compress(JSON_BODY)[:-6], "application/x-gzip"), "truncated"),
    (_wire(bz2.compress(JSON_BODY)[:-6], "application/x-bz2"), "truncated"),
    (_wire(b"garbage", "application/x-bz2"), "damaged application/x-bz2"),
    (_wire(b"garbage", "application/x-lzma"), "damaged application/x-lzma"),
    (_wire(zlib.compress(b"[1, 2"), "application/x-gzip"), "undecodable application/json"),
])
def test_a_bad_compressed_body_is_a_decode_error_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MessageDecodeError, match=reason):
        decode(data)


def test_kombus_alias_in_the_header_is_read_as_kombu_reads_it() -> None:
    assert decode(_wire(zlib.compress(JSON_BODY), "gzip")).args == [1]
    assert decode(_wire(lzma.compress(JSON_BODY), "xz")).args == [1]


def test_a_body_that_expands_past_the_limit_is_refused() -> None:
    bomb = zlib.compress(b" " * (2 * 1024 * 1024))
    assert len(bomb) < 4096
    with pytest.raises(ValueError, match="expands past 1048576 bytes"):
        compression.decompress(bomb, "application/x-gzip", limit=1024 * 1024)
    assert len(compression.decompress(bomb, "gzip", limit=2 * 1024 * 1024)) == 2 * 1024 * 1024


def test_a_worker_dead_letters_an_unknown_compression_and_runs_the_rest() -> None:
    app = _app("worker-compression")
    seen: list[Any] = []

    @app.task(name="t")
    def echo(value: Any) -> Any:
        seen.append(value)
        return value

    app.broker.publish([OutgoingMessage("celery", _wire(zlib.compress(JSON_BODY), "x-snappy"))])
    with start_worker(app, perform_ping_check=False):
        assert echo.apply_async(["gz"], compression="gzip").get(timeout=10) == "gz"
        assert echo.apply_async([b"\x00"], serializer="msgpack", compression="bzip2").get(
            timeout=10) == b"\x00"
        letters = app.broker.dead_letters("celery", limit=10)
    assert len(letters) == 1 and "unknown compression 'x-snappy'" in (letters[0].reason or "")
    assert app.AsyncResult("i").status == "FAILURE"
    assert seen == ["gz", b"\x00"]


# -- where the compression comes from -------------------------------------------------------
def _sent(app: Celeriac) -> list[dict[str, Any]]:
    deliveries = app.broker.fetch(["celery"], 100, consumer="test", lease=30)
    return [_envelope(d.body) for d in deliveries]


def test_call_option_beats_task_option_beats_setting() -> None:
    app = _app("precedence", task_compression="bzip2")

    @app.task
    def plain() -> None: ...

    @app.task(compression="lzma")
    def packed() -> None: ...

    plain.delay()
    packed.delay()
    packed.apply_async(compression="gzip")
    app.send_task(plain.name)
    plain.s().set(compression="zlib").delay()
    headers = [e["headers"].get("compression") for e in _sent(app)]
    assert headers == ["application/x-bz2", "application/x-lzma", "application/x-gzip",
                       "application/x-bz2", "application/x-gzip"]


def test_celerys_old_setting_name_and_a_base_class_attribute() -> None:
    app = _app("old-name")
    with pytest.warns(DeprecationWarning):
        app.conf.update(CELERY_MESSAGE_COMPRESSION="gzip")
    assert app.conf.task_compression == "gzip"
    from celeriac import Task

    class Packed(Task[Any, Any]):
        compression = "bzip2"

    @app.task(base=Packed)
    def echo() -> None: ...

    assert echo.options.compression == "bzip2"
    assert TaskOptions.check({"compression": "xz"}).compression == "xz"


def test_an_eager_call_goes_through_the_compression_too() -> None:
    app = _app("eager", task_always_eager=True)

    @app.task
    def echo(value: Any) -> Any:
        return value

    assert echo.apply_async([[1, "é"]], compression="bzip2").get() == [1, "é"]
    with pytest.raises(ConfigurationError, match="unknown compression"):
        echo.apply_async([1], compression="rar")


def test_result_compression_is_none_only_with_the_reason() -> None:
    app = _app("results")
    app.conf.result_compression = None
    with pytest.raises(ConfigurationError, match="results are stored uncompressed"):
        app.conf.result_compression = "gzip"
    with pytest.raises(ConfigurationError, match="only 'json'"):
        app.conf.result_serializer = "msgpack"


# -- msgpack --------------------------------------------------------------------------------
def test_msgpack_is_kombus_content_type_and_carries_what_msgpack_carries() -> None:
    app = _app("msgpack", task_serializer="msgpack")

    @app.task
    def echo(*args: Any) -> Any:
        return list(args)

    with start_worker(app, perform_ping_check=False):
        assert echo.delay(*VALUES).get(timeout=10) == VALUES
        # Per task and per call, by name or content type in accept_content.
        assert echo.apply_async(["x"], serializer="json").get(timeout=10) == ["x"]
    envelope = _envelope(encode("t", "x", [1], {}, queue="q", serializer="msgpack"))
    assert (envelope["content-type"], envelope["content-encoding"],
            envelope["properties"]["body_encoding"]) == ("application/x-msgpack", "binary", "base64")
    assert msgpack.unpackb(base64.b64decode(envelope["body"])) == [[1], {}, EMBED]


@pytest.mark.parametrize("value", [datetime(2026, 12, 3, tzinfo=timezone.utc), 2 ** 64, object()])
def test_what_kombus_msgpack_refuses_is_refused_when_sent(value: Any) -> None:
    """kombu adds no markers to msgpack: a datetime is an error there, as here."""
    with pytest.raises(SerializationError, match="cannot be encoded with msgpack"):
        encode("t", "x", [value], {}, queue="q", serializer="msgpack")


def test_a_dict_with_int_keys_is_refused_by_the_worker_as_kombus_msgpack_does() -> None:
    """msgpack writes it; ``unpackb(raw=False)`` refuses map keys that are not str or
    bytes, in kombu's worker as in ours: a dead letter that says why."""
    data = encode("t", "x", [{1: "a"}], {}, queue="q", serializer="msgpack")
    with pytest.raises(MessageDecodeError, match="map key"):
        decode(data, ACCEPT)


def test_msgpack_must_be_accepted_by_the_worker() -> None:
    data = encode("t", "x", [1], {}, queue="q", serializer="msgpack")
    with pytest.raises(MessageDecodeError, match="not accepted"):
        decode(data)
    app = Celeriac("no-accept", broker="memory://", backend="memory://")
    with pytest.raises(ConfigurationError, match="not in accept_content"):
        app.send_task("t", [1], serializer="msgpack")


def test_without_the_package_msgpack_is_an_error_naming_the_extra() -> None:
    """A fresh interpreter where ``import msgpack`` fails, as when it is not installed."""
    code = """if True:
        import sys
        sys.modules["msgpack"] = None  # import msgpack raises ImportError
        from celeriac import Celeriac, serialization
        from celeriac.message import decode
        app = Celeriac("x", broker="memory://")
        for attempt in (lambda: setattr(app.conf, "task_serializer", "msgpack"),
                        lambda: serialization.get("msgpack")):
            try:
                attempt()
            except Exception as exc:
                print(type(exc).__name__, exc)
        body = ('{"headers": {"task": "t", "id": "i"}, "content-type": "application/x-msgpack",'
                ' "body": "kwE="}').encode()
        try:
            decode(body, {"application/x-msgpack"})
        except Exception as exc:
            print(type(exc).__name__, exc)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout + proc.stderr
    assert lines[0].startswith("ConfigurationError setting task_serializer='msgpack'")
    assert lines[1].startswith("ConfigurationError")
    assert lines[2].startswith("MessageDecodeError")
    assert all("pip install 'celeriac[msgpack]'" in line for line in lines)
