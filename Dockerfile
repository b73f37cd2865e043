# The example prediction service: gunicorn serving example_app over a registry mounted at /app/registry.
# Base image pinned by tag and digest (python:3.12.12-slim-bookworm); to move it, update both:
#   docker buildx imagetools inspect python:3.12-slim-bookworm
FROM python:3.12.12-slim-bookworm@sha256:593bd06efe90efa80dc4eee3948be7c0fde4134606dd40d8dd8dbcade98e669c

# The service runs as this user, never as root. To own files in a read-write bind mount as your own
# host user, build with --build-arg APP_UID=$(id -u) --build-arg APP_GID=$(id -g), or override it at
# run time (`docker run --user`, compose's `user:`; see docker-compose.yml).
ARG APP_UID=10001
ARG APP_GID=10001

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    MODEL_REGISTRY_ROOT=/app/registry \
    GUNICORN_BIND=0.0.0.0:8000

# Dependencies first, from setup.cfg alone (a stub package and README stand in for the real ones), so
# that an edit of the package or the README reuses this layer and only reinstalls the package below.
# DL3013: the versions are setup.cfg's ranges; pin them with a constraints file for a production image.
COPY setup.cfg pyproject.toml ./
# hadolint ignore=DL3013
RUN mkdir flask_model_registry \
    && echo '__version__ = "0"' > flask_model_registry/__init__.py \
    && touch README.md \
    && pip install --no-cache-dir '.[server,metrics]' \
    && pip uninstall --yes flask-model-registry \
    && rm -rf flask_model_registry build ./*.egg-info README.md

COPY README.md ./
COPY flask_model_registry ./flask_model_registry
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info
COPY example_app ./example_app

RUN groupadd --gid "${APP_GID}" app \
    && useradd --uid "${APP_UID}" --gid "${APP_GID}" --no-create-home --home-dir /app --shell /usr/sbin/nologin app
USER ${APP_UID}:${APP_GID}

EXPOSE 8000
# <prefix>/health: 200 while the registry's storage answers, 503 otherwise (slim has no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/models/health', timeout=2)"]
CMD ["gunicorn", "-c", "example_app/gunicorn_conf.py", "example_app:create_app()"]
