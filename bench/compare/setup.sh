#!/usr/bin/env bash
# Creates bench/.venv-compare: Dramatiq (with pika, for RabbitMQ), Celery, Huey and RQ (never
# dependencies of celeriac), the harness's tools (rich, matplotlib, requests, aiohttp), all pinned
# in requirements.txt beside this file, plus celeriac itself, editable, so that every framework
# runs on the same interpreter and the same gevent, greenlet and redis-py.
#
#   bash bench/compare/setup.sh            # create or update
#   PYTHON=python3.12 bash bench/compare/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/bench/.venv-compare"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then
        # the base interpreter of the project's own venv, not the venv itself
        python="$("$root/.venv/bin/python" -c 'import sys, os; print(os.path.join(sys.base_prefix, "bin", "python3"))')"
    else
        python=python3
    fi
fi
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
"$venv/bin/python" -m pip install --quiet -e "$root[redis,gevent,amqp,asyncio]"
"$venv/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(celeriac|dramatiq|celery|kombu|amqp|pika|huey|rq|gevent|greenlet|redis|rich|matplotlib)=' || true
