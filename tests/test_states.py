"""``celeriac.states`` and ``celeriac.exceptions`` at Celery's import paths, with Celery's meaning."""

from __future__ import annotations

import pytest

from celeriac import exceptions, states
from celeriac.backends.base import ResultRecord


def test_state_sets_partition_the_result_states() -> None:
    assert states.READY_STATES | states.UNREADY_STATES == states.ALL_STATES
    assert not states.READY_STATES & states.UNREADY_STATES
    assert states.PROPAGATE_STATES <= states.EXCEPTION_STATES
    assert states.PROPAGATE_STATES <= states.READY_STATES
    for name in states.ALL_STATES:
        assert ResultRecord("id", status=name).ready is (name in states.READY_STATES)


@pytest.mark.parametrize(("more", "less"), [
    (states.SUCCESS, states.STARTED), (states.FAILURE, states.RETRY),
    (states.STARTED, states.RECEIVED), (states.RECEIVED, states.PENDING),
    (states.REVOKED, states.STARTED), ("PROGRESS", states.STARTED),  # a custom state
    (states.SUCCESS, "PROGRESS"),
])
def test_state_orders_by_how_far_along(more: str, less: str) -> None:
    assert states.state(more) > states.state(less)
    assert states.state(more) >= less
    assert states.state(less) < more
    assert not states.state(less) > more
    assert states.state(more) == more  # still the plain string


def test_custom_states_rank_alike() -> None:
    assert states.precedence("PROGRESS") == states.precedence("UPLOADING")
    assert states.state("PROGRESS") >= "UPLOADING" and states.state("PROGRESS") <= "UPLOADING"


def test_celery_exception_names_are_aliases() -> None:
    assert exceptions.CeleryError is exceptions.CeleriacError
    assert exceptions.ImproperlyConfigured is exceptions.ConfigurationError
    assert exceptions.InvalidTaskError is exceptions.MessageDecodeError
    with pytest.raises(exceptions.CeleryError):
        raise exceptions.UnknownSettingError("no such setting")
