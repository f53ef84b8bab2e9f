#!/usr/bin/env bash
# Creates bench/.venv-compare: Dramatiq (with pika, for RabbitMQ), Celery and Huey (never dependencies of
# celeriac) plus celeriac itself, editable, so that all four frameworks run on the
# same interpreter and the same gevent, greenlet and redis-py.
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
"$venv/bin/python" -m pip install --quiet --upgrade \
    "dramatiq[redis,rabbitmq,gevent]>=2,<3" "celery[redis]>=5,<6" "huey>=2.5" gevent redis
"$venv/bin/python" -m pip install --quiet -e "$root[redis,gevent,amqp]"
"$venv/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(celeriac|dramatiq|celery|kombu|amqp|pika|huey|gevent|greenlet|redis)=' || true
