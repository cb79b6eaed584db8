# taxi: the API server image. Build: docker build -t taxi .
# Production shape (PostgreSQL + Redis + several workers): see docker-compose.yml.
# Alone, for a try-out on the embedded SQLite database (one worker, in-process broker):
#   docker run -p 8000:8000 -e TAXI_WORKERS=1 -e TAXI_DATABASE_URL=sqlite:////data/db/taxi.sqlite3 \
#     -v taxi-db:/data/db -v taxi-media:/data/media taxi
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid, so files on mounted volumes have a predictable owner.
RUN groupadd --system --gid 10001 taxi \
    && useradd --system --uid 10001 --gid taxi --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin taxi

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
# Every pin ships a manylinux wheel for CPython 3.11, so no compiler is needed.
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code stays owned by root: the server can read it but not change it.
COPY taxi ./taxi
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh

# Create and chown before VOLUME: a new named volume is seeded from the image, owner included,
# and changes to a path after it is declared a volume are discarded. /data/db is for the SQLite
# try-out above (the default sqlite:///taxi.sqlite3 would be in /app, which taxi cannot write).
RUN mkdir -p /data/media /data/db && chown -R taxi:taxi /data
ENV TAXI_MEDIA_ROOT=/data/media
VOLUME ["/data/media"]

USER taxi:taxi
EXPOSE 8000

# Liveness only: /api/health/ touches neither the database nor Redis. There is no curl in slim.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import json, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/api/health/', timeout=3); sys.exit(0 if r.status == 200 and json.load(r).get('status') == 'ok' else 1)"]

# Exec form, and the script execs the launcher (python -m taxi.launch): the server's main process is PID 1
# and gets `docker stop`'s SIGTERM itself; it stops its workers and exits 0 (docs/pitfalls.md, "Starting and
# stopping").
ENTRYPOINT ["docker-entrypoint.sh"]
