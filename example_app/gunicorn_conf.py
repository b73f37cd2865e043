"""gunicorn settings for the example service, shared by ``make serve``, Docker and the tests.

Prometheus metrics (``/models/metrics``, with the ``metrics`` extra) are counted by every worker
into ``PROMETHEUS_MULTIPROC_DIR`` and added up by whichever worker answers the scrape. It must be
set before the workers start; when it is not, a fresh temporary folder is used for this run.
"""

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
