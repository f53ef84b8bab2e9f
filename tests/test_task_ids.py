"""Task ids (``celeriac.uuid``): random version 4 UUIDs, written fast, never repeated --
not across threads, and not between a process and the child it forks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid as std_uuid

import pytest

from celeriac import uuid


def test_ids_are_random_version_4_uuids_in_their_canonical_form() -> None:
    ids = [uuid() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:600]:  # past more than one draw of random bytes
        parsed = std_uuid.UUID(value)
        assert (parsed.version, parsed.variant) == (4, std_uuid.RFC_4122)
        assert str(parsed) == value


def test_threads_never_get_the_same_id() -> None:
    found: list[list[str]] = [[] for _ in range(8)]

    def take(into: list[str]) -> None:
        into.extend(uuid() for _ in range(3_000))

    threads = [threading.Thread(target=take, args=(into,)) for into in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for into in found for value in into]
    assert len(set(every)) == len(every) == 24_000


#: Run in a process of its own: forking the test process itself (patched, in the gevent
#: leg) is not what a worker does.
FORK_PROBE = """
import os
from celeriac import uuid
uuid()  # the parent holds drawn bytes the child must not hand out again
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read)
    os.write(write, "\\n".join(uuid() for _ in range(10)).encode())
    os._exit(0)
os.close(write)
with os.fdopen(read) as pipe:
    child = pipe.read().split("\\n")
os.waitpid(pid, 0)
parent = [uuid() for _ in range(10)]
print(len(child), len(set(child) & set(parent)))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    out = subprocess.run([sys.executable, "-c", FORK_PROBE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["10", "0"], "the child's ten ids, none of them the parent's"
