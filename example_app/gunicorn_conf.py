"""gunicorn settings for the example service, shared by ``make serve``, Docker and the tests.

Prometheus metrics (``/models/metrics``, with the ``metrics`` extra) are counted by every worker
into ``PROMETHEUS_MULTIPROC_DIR`` and added up by whichever worker answers the scrape. It must be
set before the workers start; when it is not, a fresh temporary folder is used for this run.

The registry's log records (and the example app's own) go to gunicorn's error log, in its format:
time, process id and level, e.g. ``[2026-12-02 17:40:01 +0000] [4242] [WARNING] …``.
"""

import logging
import os
import shutil
import tempfile

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
accesslog = "-"
graceful_timeout = 5

_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
if not os.environ.get(_MULTIPROC):  # inherited by the workers, read when they import prometheus_client
    os.environ[_MULTIPROC] = tempfile.mkdtemp(prefix="gunicorn-prometheus-")
    _OWN_FOLDER = True
else:
    _OWN_FOLDER = False


def on_starting(server):
    """Samples left by an earlier run would be counted again: start from an empty folder."""
    folder = os.environ[_MULTIPROC]
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.unlink(os.path.join(folder, name))


#: Loggers whose records go to gunicorn's error log: the package's and the example app's.
SHARED_LOGGERS = ("flask_model_registry", "example_app")


def post_fork(server, worker):
    """Before the worker loads the app, give the package's loggers gunicorn's error log handlers
    and level; without them Python prints a bare message with no time or level."""
    error_log = server.log.error_log
    for name in SHARED_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = list(error_log.handlers)
        logger.setLevel(error_log.level)


def child_exit(server, worker):
    """A worker that exits keeps its counts, but its live gauges (served_info) must go."""
    try:
        from prometheus_client import multiprocess
    except ImportError:  # served without the metrics extra
        return
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _OWN_FOLDER:
        shutil.rmtree(os.environ[_MULTIPROC], ignore_errors=True)
