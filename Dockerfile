# The example prediction service: gunicorn serving example_app over a registry mounted at /app/registry.
FROM python:3.11-slim

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_REGISTRY_ROOT=/app/registry \
    GUNICORN_BIND=0.0.0.0:8000

COPY setup.cfg pyproject.toml README.md ./
COPY flask_model_registry ./flask_model_registry
RUN pip install --no-cache-dir '.[server]'
COPY example_app ./example_app

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/models/health', timeout=2)"
CMD ["gunicorn", "-c", "example_app/gunicorn_conf.py", "example_app:create_app()"]
