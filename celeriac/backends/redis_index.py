"""The Redis result backend's task index, for :meth:`RedisBackend.search`.

Keys (``{p}`` is the backend's prefix), expiring with the records (see **Expiry**):

* ``{p}:tasks:meta:{task_id}`` -- string, the task's summary as a JSON array
  ``[state, name, date_done, queue, worker, stored_at]`` (name ``""`` when unknown),
  with the record's TTL: what a page of results reads (never the records, which may
  be large), and what tells a store which sets the task leaves when its state changes;
* ``{p}:tasks:all``, ``{p}:tasks:s:{state}``, ``{p}:tasks:n:{name}`` and
  ``{p}:tasks:ns:{len(state)}:{state}:{name}`` -- sorted sets of task ids scored by the
  time of their last store: every task, by state, by name, by both (the length keeps
  a state holding ``:`` from being confused with a name);
* ``{p}:tasks:ids`` -- sorted set of every task id with score 0, for ``ZRANGEBYLEX``:
  the search by id prefix.

**Writing** is the store itself: one script run per ``store_many`` (one round trip,
atomic, for any number of records) sets each record with its TTL, publishes its status
(as :mod:`celeriac.backends.redis` describes), reads the task's meta, takes the id out
of the sets of its former state (PENDING -> STARTED -> SUCCESS moves a task from set to
set) and writes the meta; the ids going into each set are gathered and added at the
end with one ``ZADD`` per set, so a batch pays per set, not per record, for the calls
and for what follows. A task stored again within half the TTL of its last store is
already in ``ids`` (which is pruned with ``all`` only) and is not added again. An
unready record over a ready one is skipped whole, record and index, so the index never
disagrees with the record.

**Expiry.** A record stored at ``t`` expires at ``t + expires``; so does its meta key,
and its score in every set is ``t``. Readers therefore count and list only scores
above ``now - expires`` (``ZCOUNT``/``ZREVRANGEBYSCORE``: O(log n + page)), and never
see an expired task even before it is pruned. The script prunes ``all`` and ``ids`` of
up to :data:`PRUNE_BATCH` expired ids per call, which keeps up with any store rate.
Every set it adds to gets a TTL of 1.5 times the records' (so a set nobody writes to
any more, a task name no longer used, goes away after its last record), and the set's
``PTTL`` tells when that was last done: when :data:`PRUNE_EVERY_MS` (or half the TTL)
has passed since, the script prunes the set's expired entries (``ZREMRANGEBYSCORE``)
and sets its TTL again. So a store checks each set's TTL (a read) but writes it and
prunes at most once a second per set, and the TTL never falls below the records' own
after an add. A process with a shorter ``expires`` never shortens a set's TTL. A store
kept forever (``expires <= 0``) removes the TTL of the sets it adds to. Scores use the
storing process's clock; clocks a few seconds apart only move a task that close to its
expiry in or out of the listing early or late.

Keys are built in the script from the prefix (the sets of a former state are only
known there), so the index needs a single Redis server, as the rest of celeriac does.

With ``result_index`` off the backend stores with
:data:`~celeriac.backends.redis.STORE_RECORDS_LUA` instead (records and notifications
only) and :meth:`RedisBackend.search` refuses; ``forget`` still takes a task out of an
index written earlier or by other processes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

from celeriac.backends.base import ResultRecord
from celeriac.backends.search import PREFIX_SCAN, TaskSummary
from celeriac.fastjson import dumps
from celeriac.redisconn import decode

#: Expired ids taken out of ``all`` and ``ids`` per store call at most.
PRUNE_BATCH = 500
#: Milliseconds between two prunes of a set (and settings of its TTL) at most: a set
#: touched more often is pruned once in that time (or half the TTL, if shorter).
PRUNE_EVERY_MS = 1000

_READY_LUA = "{SUCCESS=true, FAILURE=true, REVOKED=true}"

#: Shared by both scripts: the keys of a task's sets.
_KEYS_LUA = """
local function state_key(p, state) return p .. ':tasks:s:' .. state end
local function name_key(p, name) return p .. ':tasks:n:' .. name end
local function both_key(p, state, name)
    return p .. ':tasks:ns:' .. #state .. ':' .. state .. ':' .. name
end
"""

#: The store itself (:meth:`RedisBackend.store_many`), records and index in one script run.
#: ARGV: prefix, now, TTL in ms (0: none), and the records as one JSON array of
#: ``[id, state, name ('' none), meta, payload]`` (:func:`store_args`). Per record it
#: reads and writes the meta and takes the id out of the sets it leaves; the ids going
#: into each set are gathered and added with one ``ZADD`` per set at the end, so a batch
#: costs per set, not per record, for what follows: pruning and the TTL (see the module
#: docstring).
STORE_LUA = _KEYS_LUA + f"""
local ready = {_READY_LUA}
local p, at, px = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = tonumber(at)
local all, ids = p .. ':tasks:all', p .. ':tasks:ids'
-- ids has score 0 for ZRANGEBYLEX; every other set scores by the time of the store
local adds, new_ids = {{}}, {{}}
-- an id stored again within half the TTL is already in ids (pruned only with all)
local recent = px > 0 and now - px / 2000 or nil
local function add(key, id)
    local members = adds[key]
    if not members then
        members = {{}}
        adds[key] = members
    end
    members[id] = true
end
local function remove(key, id)
    local members = adds[key]
    if members then
        members[id] = nil
    end
    redis.call('ZREM', key, id)
end
local function set(key, value)
    if px > 0 then
        redis.call('SET', key, value, 'PX', px)
    else
        redis.call('SET', key, value)
    end
end
local function zadd(key, score, members)
    local args, n = {{}}, 0
    for id in pairs(members) do
        args[n + 1], args[n + 2] = score, id
        n = n + 2
        if n >= 1000 then
            redis.call('ZADD', key, unpack(args, 1, n))
            n = 0
        end
    end
    if n > 0 then
        redis.call('ZADD', key, unpack(args, 1, n))
    end
    return next(members) ~= nil
end
for _, row in ipairs(cjson.decode(ARGV[4])) do
    local id, state, name, meta, payload = row[1], row[2], row[3], row[4], row[5]
    local key = p .. ':result:' .. id
    local skip = false
    if not ready[state] then
        -- never over a ready record (ResultBackend.store): the record itself says
        local current = redis.call('GET', key)
        if current then
            local ok, record = pcall(cjson.decode, current)
            skip = ok and type(record) == 'table' and ready[record.status] == true
        end
    end
    if not skip then
        set(key, payload)
        redis.call('PUBLISH', p .. ':done:' .. id, state)
        local meta_key = p .. ':tasks:meta:' .. id
        local old = redis.call('GET', meta_key)
        local listed = false
        if old then
            local ok, before = pcall(cjson.decode, old)
            if ok and type(before) == 'table' then
                local was, was_named = tostring(before[1]), tostring(before[2])
                if was ~= state then
                    remove(state_key(p, was), id)
                end
                if was_named ~= '' and (was ~= state or was_named ~= name) then
                    remove(both_key(p, was, was_named), id)
                end
                if was_named ~= '' and was_named ~= name then
                    remove(name_key(p, was_named), id)
                end
                local stored = tonumber(before[6])
                listed = stored ~= nil and (recent == nil or stored > recent)
            end
        end
        set(meta_key, meta)
        add(all, id)
        if not listed then
            new_ids[id] = true
        end
        add(state_key(p, state), id)
        if name ~= '' then
            add(name_key(p, name), id)
            add(both_key(p, state, name), id)
        end
    end
end
zadd(ids, 0, new_ids)
local touched = {{}}
for key, members in pairs(adds) do
    if zadd(key, at, members) then
        touched[#touched + 1] = key
    end
end
if px > 0 then
    local cutoff = '(' .. (now - px / 1000)
    local gone = redis.call('ZRANGEBYSCORE', all, '-inf', cutoff, 'LIMIT', 0, {PRUNE_BATCH})
    if #gone > 0 then
        redis.call('ZREM', all, unpack(gone))
        redis.call('ZREM', ids, unpack(gone))
    end
    if #touched > 0 then
        touched[#touched + 1] = ids
    end
    -- Each set's TTL is set to 1.5 px; PTTL tells how long ago: at most once per
    -- `every` ms a set is pruned and its TTL set again, which keeps it >= px.
    local long, every = math.floor(px * 1.5), math.min({PRUNE_EVERY_MS}, math.floor(px / 2))
    for _, key in ipairs(touched) do
        if redis.call('PTTL', key) < long - every then
            if key ~= all and key ~= ids then
                redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
            end
            redis.call('PEXPIRE', key, long)
        end
    end
else
    if #touched > 0 then
        touched[#touched + 1] = ids
    end
    for _, key in ipairs(touched) do
        redis.call('PERSIST', key)
    end
end
return 0
"""

#: ARGV: prefix, then task ids. Takes the tasks out of the index (``forget``).
FORGET_LUA = _KEYS_LUA + """
local p = ARGV[1]
for i = 2, #ARGV do
    local id = ARGV[i]
    local meta_key = p .. ':tasks:meta:' .. id
    local old = redis.call('GET', meta_key)
    if old then
        local ok, before = pcall(cjson.decode, old)
        if ok and type(before) == 'table' then
            local was, was_named = tostring(before[1]), tostring(before[2])
            redis.call('ZREM', state_key(p, was), id)
            if was_named ~= '' then
                redis.call('ZREM', name_key(p, was_named), id)
                redis.call('ZREM', both_key(p, was, was_named), id)
            end
        end
        redis.call('DEL', meta_key)
    end
    redis.call('ZREM', p .. ':tasks:all', id)
    redis.call('ZREM', p .. ':tasks:ids', id)
end
return 0
"""


def store_args(prefix: str, records: Sequence[ResultRecord], now: float,
               px: int | None) -> list[str | int | bytes]:
    """The arguments of :data:`STORE_LUA` for ``records`` stored at ``now`` (each record
    encoded first, so a record that is not JSON stores nothing). The records go as one
    argument, a JSON array the script decodes: five arguments a record cost redis-py
    about 3 us a record to pack, more than encoding the array takes."""
    rows = []
    for r in records:
        meta = dumps([r.status, r.name or "", r.date_done, r.queue, r.worker, now]).decode()
        rows.append((r.task_id, r.status, r.name or "", meta, r.to_json()))
    return [prefix, repr(now), px or 0, dumps(rows)]


def set_key(prefix: str, name: str | None, state: str | None) -> str:
    """The sorted set listing the tasks of ``name`` and ``state`` (either may be None)."""
    if name is not None and state is not None:
        return f"{prefix}:tasks:ns:{len(state)}:{state}:{name}"
    if name is not None:
        return f"{prefix}:tasks:n:{name}"
    if state is not None:
        return f"{prefix}:tasks:s:{state}"
    return f"{prefix}:tasks:all"


def meta_key(prefix: str, task_id: str) -> str:
    return f"{prefix}:tasks:meta:{task_id}"


def floor(expires: float) -> str:
    """The lowest score of a live entry (exclusive), for ``ZCOUNT``/``ZREVRANGEBYSCORE``."""
    return f"({time.time() - expires!r}" if expires > 0 else "-inf"


def ttl_ms(expires: float) -> int | None:
    return max(math.ceil(expires * 1000), 1) if expires > 0 else None


def summary(task_id: str, meta: Any) -> tuple[TaskSummary, float] | None:
    """A task's summary and store time from its meta (None: gone or unreadable)."""
    if meta is None:
        return None
    try:
        state, name, done, queue, worker, stored_at = json.loads(decode(meta))
    except (ValueError, TypeError):
        return None
    return TaskSummary(task_id=task_id, task=name or None, state=state, date_done=done,
                       queue=queue, worker=worker), float(stored_at)


def search(redis: Any, prefix: str, expires: float, *, task_id_prefix: str | None,
           name: str | None, state: str | None, offset: int,
           limit: int) -> tuple[list[TaskSummary], int]:
    """Search the index (see :meth:`celeriac.backends.base.ResultBackend.search`)."""
    if task_id_prefix is not None:
        return _by_prefix(redis, prefix, task_id_prefix, name, state, offset, limit)
    key, low = set_key(prefix, name, state), floor(expires)
    pipe = redis.pipeline(transaction=False)
    pipe.zcount(key, low, "+inf")
    pipe.zrevrangebyscore(key, "+inf", low, start=offset, num=limit)
    total, ids = pipe.execute()
    ids = [decode(task_id) for task_id in ids]
    metas = redis.mget([meta_key(prefix, task_id) for task_id in ids]) if ids else []
    found = [summary(task_id, meta) for task_id, meta in zip(ids, metas, strict=True)]
    return [item[0] for item in found if item is not None], int(total)


def _by_prefix(redis: Any, prefix: str, task_id_prefix: str, name: str | None,
               state: str | None, offset: int, limit: int) -> tuple[list[TaskSummary], int]:
    """The first :data:`PREFIX_SCAN` ids with the prefix, their metas in one ``MGET``
    (an expired task's meta is gone), filtered and ordered here."""
    start = "[" + task_id_prefix
    ids = [decode(task_id) for task_id in redis.zrangebylex(
        f"{prefix}:tasks:ids", start, start + "\U0010ffff", start=0, num=PREFIX_SCAN)]
    metas = redis.mget([meta_key(prefix, task_id) for task_id in ids]) if ids else []
    found = [item for item in (summary(task_id, meta)
                               for task_id, meta in zip(ids, metas, strict=True))
             if item is not None and (name is None or item[0].task == name)
             and (state is None or item[0].state == state)]
    found.sort(key=lambda item: item[1], reverse=True)
    return [item[0] for item in found[offset:offset + limit]], len(found)
