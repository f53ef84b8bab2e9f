"""``--uid``, ``--gid`` and ``--umask`` (celeriac.worker.privileges), on the real system calls.

The drop itself needs root: as root, it runs in a forked child (a process cannot take
root back once it dropped it); the refusal without root runs with the effective user
``nobody`` (the saved user stays root, so the test takes root back after), or as it is
when the tests do not run as root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterator

import pytest

from celeriac.exceptions import ConfigurationError
from celeriac.worker.privileges import drop_privileges, parse_gid, parse_uid, parse_umask

ROOT = os.geteuid() == 0
NOBODY = pwd.getpwnam("nobody") if "nobody" in {p.pw_name for p in pwd.getpwall()} else None


@pytest.mark.parametrize(("text", "mask"), [("0022", 0o22), ("0o22", 0o22), ("027", 0o27),
                                            ("0", 0), ("18", 0o22), ("22", 22)])
def test_umask_reads_as_celerys(text: str, mask: int) -> None:
    """A leading 0 is octal, anything else decimal (so ``22`` is 0o26, as in Celery)."""
    assert parse_umask(text) == mask


@pytest.mark.parametrize("text", ["9z", "", "08", "01000", "-1"])
def test_a_bad_umask_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="--umask"):
        parse_umask(text)


def test_users_and_groups_by_name_or_number() -> None:
    assert parse_uid("root") == parse_uid("0") == 0
    assert parse_gid("0") == 0
    with pytest.raises(ConfigurationError, match="--uid 'no-such-user-here': no such user"):
        parse_uid("no-such-user-here")
    with pytest.raises(ConfigurationError, match="--gid 'no-such-group-here': no such group"):
        parse_gid("no-such-group-here")


@contextlib.contextmanager
def not_root() -> Iterator[None]:
    """Run the block as a user that is not root (as root: effectively ``nobody``)."""
    if not ROOT:
        yield
        return
    if NOBODY is None:
        pytest.skip("no user 'nobody' to become")
    os.setresuid(NOBODY.pw_uid, NOBODY.pw_uid, 0)
    try:
        yield
    finally:
        os.setresuid(0, 0, 0)


def test_changing_user_without_root_is_a_clear_error() -> None:
    with not_root(), pytest.raises(ConfigurationError) as caught:
        uid = os.getuid()
        drop_privileges("0", None)
    assert "changing user or group needs root" in str(caught.value)
    assert f"runs as uid {uid}" in str(caught.value)


def test_naming_the_user_it_already_is_needs_no_root() -> None:
    with not_root():
        drop_privileges(str(os.getuid()), str(os.getgid()))
        drop_privileges(None, None)


@pytest.mark.skipif(not ROOT or NOBODY is None, reason="dropping privileges needs root")
def test_root_becomes_the_user_with_its_group_for_good() -> None:
    """``--uid nobody``: nobody's uid and primary group, and no way back to root."""
    assert NOBODY is not None
    child = os.fork()
    if child == 0:  # pragma: no cover -- the child reports through its exit status
        status = 1
        try:
            drop_privileges("nobody", None)
            dropped = (os.getuid(), os.geteuid(), os.getgid()) == (
                NOBODY.pw_uid, NOBODY.pw_uid, NOBODY.pw_gid)
            status = 0 if dropped and 0 not in os.getgroups() else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
