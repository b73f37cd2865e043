"""gunicorn settings for the example service, shared by ``make serve``, Docker and the tests."""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
accesslog = "-"
graceful_timeout = 5
