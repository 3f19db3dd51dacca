# syntax=docker/dockerfile:1
# DPP: one image for the three processes of SPEC §7. The default command is the API (gunicorn);
# docker-compose.yml runs the worker (`celery -A config worker`) and beat (`celery -A config beat`) from it.
# Configuration is by environment only (docs/operations.md); nothing secret is baked in.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DJANGO_SETTINGS_MODULE=config.settings

WORKDIR /app

# No compiler and no libcurl/libpq headers: pycurl (kombu's SQS transport) and psycopg-binary ship manylinux
# wheels with their own libraries, for amd64 and arm64. --only-binary makes a missing wheel fail here, loudly,
# rather than as a compile error.
COPY requirements.txt .
RUN pip install --only-binary=pycurl,psycopg-binary -r requirements.txt

RUN useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dpp

# The code stays root-owned (read-only to the app); only var/ (beat's schedule file, local-mode files) is its own.
COPY . .
# Static files (admin, Swagger UI) are served by whitenoise from var/static (STATIC_ROOT follows DPP_VAR_DIR: keep
# it unset or /app/var at run time). The secret is a throwaway for this step only; the settings import leaves a
# filesystem-broker folder behind, removed here.
RUN mkdir -p var \
    && DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0 \
    && rm -rf var/broker \
    && chown dpp:dpp var

# /metrics adds up every gunicorn worker (prometheus_client's multiprocess mode). Set after collectstatic: the
# directory must exist before anything imports the settings, and the entrypoint below empties and creates it
# at each container start (counters of a previous start must not be summed in).
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/dpp-prometheus

USER dpp
EXPOSE 8000

# Liveness only (GET /health touches nothing). The request's host is 127.0.0.1: DJANGO_ALLOWED_HOSTS must list it.
# worker and beat serve no HTTP: docker-compose.yml disables this check for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"]

ENTRYPOINT ["/bin/sh", "-c", "if [ -n \"$PROMETHEUS_MULTIPROC_DIR\" ]; then rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\"; fi; exec \"$@\"", "dpp-entrypoint"]
# Workers from WEB_CONCURRENCY (gunicorn's own default: 1); gthread workers; heartbeat files on tmpfs.
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--threads", "4", "--worker-class", "gthread", "--timeout", "60", "--worker-tmp-dir", "/dev/shm", "--no-control-socket"]
