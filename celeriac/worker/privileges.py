"""``celeriac worker --uid/--gid/--umask``: who the worker runs as, and the mode of its files.

As Celery's (``celery.platforms.maybe_drop_privileges``), with or without ``--detach``:

* ``--uid USER`` (a name or a number) makes the worker that user, with the user's primary
  group and supplementary groups unless ``--gid`` names the group; ``--gid GROUP`` alone
  changes only the group. The group changes first: once the user is not root it could
  not change it any more. After the change the worker checks that it cannot become root
  again.
* Changing user or group needs root. Celery lets the system call fail with a traceback;
  here a worker started by another user gets one line saying so (``--uid`` naming the
  user it already is is allowed: there is nothing to change).
* ``--umask`` is read as Celery reads it: octal when it starts with ``0`` (``0022``,
  ``0o22``), decimal otherwise (``18`` is ``0o22``; ``22`` is ``0o26``, as in Celery).
  Celery applies it only to a detached worker; celeriac applies it to any worker, since a
  flag that is given should act.

The worker drops its privileges before it connects to the broker, so the SQLite database
it creates, its pidfile and its log files belong to the user it runs as.
"""

from __future__ import annotations

import grp
import os
import pwd

from celeriac.exceptions import ConfigurationError


def parse_umask(text: str) -> int:
    """``--umask`` as Celery reads it: octal with a leading ``0``, else decimal."""
    try:
        value = int(text, 8 if text.startswith("0") else 10)
    except ValueError:
        raise ConfigurationError(f"--umask {text!r}: not a number (e.g. 0022)") from None
    if not 0 <= value <= 0o777:
        raise ConfigurationError(f"--umask {text!r}: must be between 0 and 0777")
    return value


def parse_uid(user: str) -> int:
    """A user id from ``--uid``: a number, or a user name from the password database."""
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ConfigurationError(f"--uid {user!r}: no such user") from None


def parse_gid(group: str) -> int:
    """A group id from ``--gid``: a number, or a group name from the group database."""
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigurationError(f"--gid {group!r}: no such group") from None


def drop_privileges(user: str | None, group: str | None) -> None:
    """Become ``user`` and ``group`` (``--uid``, ``--gid``); nothing when neither is given."""
    if not user and not group:
        return
    uid = parse_uid(user) if user else None
    gid = parse_gid(group) if group else None
    account = _account(uid) if uid is not None else None
    if uid is not None and gid is None:
        if account is None:
            raise ConfigurationError(f"--uid {user}: no such user in the password database, "
                                     "so no primary group to take: give --gid too")
        gid = account.pw_gid
    if os.geteuid() != 0:
        if uid in (None, os.getuid()) and gid in (None, os.getgid()):
            return  # already this user and group: nothing to change
        raise ConfigurationError(
            f"--uid/--gid: changing user or group needs root; this worker runs as uid "
            f"{os.getuid()} gid {os.getgid()}. Start it as root to drop to "
            f"{user or os.getuid()}:{group or gid}, or leave out --uid and --gid")
    try:
        if gid is not None:
            os.setgid(gid)
        if uid is not None:
            if account is not None:
                os.initgroups(account.pw_name, gid if gid is not None else account.pw_gid)
            else:
                os.setgroups([gid] if gid is not None else [])
            os.setuid(uid)
    except OSError as exc:
        raise ConfigurationError(f"--uid/--gid: cannot change to {user or '-'}:{group or '-'}: "
                                 f"{exc.strerror}") from None
    _check_dropped(uid)


def _account(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def _check_dropped(uid: int | None) -> None:
    """A process that dropped root must not be able to take it back (Celery's check too)."""
    if not uid:
        return
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise ConfigurationError(f"--uid {uid}: the worker could become root again after the "
                             "change; refusing to run")


def apply(user: str | None, group: str | None, umask: int | None) -> None:
    """The worker's ``--umask``, ``--uid`` and ``--gid``, in that order."""
    if umask is not None:
        os.umask(umask)
    drop_privileges(user, group)
