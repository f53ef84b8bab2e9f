"""The RabbitMQ test helper itself: the AMQP tests are only as good as the node they get.

The node must be private (nothing listens beyond loopback, nothing of /etc is read),
vhosts must really be separate and usable, and stopping must leave no epmd behind on
the node's port; these check exactly that, so a broken helper fails here and not as a
mysterious broker bug.
"""

from __future__ import annotations

import socket

import psutil
import pytest
from rabbitserver import RabbitServer

amqp = pytest.importorskip("amqp")


def listening_addresses(ports: set[int]) -> dict[int, set[str]]:
    """Port -> the addresses something listens on (from /proc: no root needed)."""
    found: dict[int, set[str]] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports:
            found.setdefault(conn.laddr.port, set()).add(conn.laddr.ip)
    return found


def test_every_listener_is_on_loopback(rabbit_server: RabbitServer) -> None:
    ports = {rabbit_server.port, rabbit_server.dist_port, rabbit_server.epmd_port}
    found = listening_addresses(ports)
    assert set(found) == ports, found  # AMQP, Erlang distribution and our own epmd
    assert set().union(*found.values()) <= {"127.0.0.1", "::1"}, found


def test_vhosts_are_new_separate_and_usable(rabbit_server: RabbitServer) -> None:
    first, second = rabbit_server.vhost(), rabbit_server.vhost()
    assert first != second
    for vhost in (first, second):
        conn = amqp.Connection(f"127.0.0.1:{rabbit_server.port}", userid="guest", password="guest",
                               virtual_host=vhost, confirm_publish=True)
        conn.connect()
        try:
            channel = conn.channel()
            channel.queue_declare("only-here", durable=True, auto_delete=False)
            channel.basic_publish(amqp.Message(vhost.encode()), routing_key="only-here")
            assert channel.queue_declare("only-here", passive=True).message_count == 1
        finally:
            conn.close()
    assert rabbit_server.url(first) == f"amqp://guest:guest@127.0.0.1:{rabbit_server.port}/{first}"


def test_stop_leaves_nothing_listening(fault_rabbit: RabbitServer) -> None:
    ports = (fault_rabbit.port, fault_rabbit.dist_port, fault_rabbit.epmd_port)
    fault_rabbit.stop()
    assert not fault_rabbit.running
    for port in ports:
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", port))
