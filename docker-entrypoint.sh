#!/bin/sh
# Container entrypoint: bring the schema up to date, then become the Sanic main process (`taxi serve`).
#
# With arguments, run them instead (a one-off command in the image, e.g. `python -m taxi migrate` or `sh`).
# Without, migrate (safe from several containers at once: it holds a PostgreSQL advisory lock) and then
# `exec` the supervised launcher (taxi/launch.py), so that it replaces this shell as PID 1 and `docker stop`'s
# SIGTERM reaches it directly; it stops its workers itself, within TAXI_SHUTDOWN_TIMEOUT + 1 seconds, and
# replaces a worker that dies (docs/pitfalls.md, "Starting and stopping").
set -eu

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

python -m taxi migrate

exec python -m taxi serve --host 0.0.0.0 --port 8000 --workers "${TAXI_WORKERS:-2}"
