"""The served OpenAPI document generates a complete client (``openapi-python-client
--fail-on-warning``), and that client works against a real HTTP server, ``PATCH`` included."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from flask_model_registry import FlaskModelRegistry, ModelRegistry

TOKEN = "client-token"
PACKAGE = "flask_model_registry_client"


@pytest.fixture
def server(published: ModelRegistry, registry_root: Path) -> Iterator[str]:
    """The API on a real (werkzeug) HTTP server on 127.0.0.1, mounted under a non-default prefix."""
    app = Flask("served")
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_API_TOKEN=TOKEN)
    app.config["MODEL_REGISTRY_URL_PREFIX"] = "/models"
    FlaskModelRegistry(app)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def generated(server: str, tmp_path: Path) -> Iterator[Any]:
    """Generate the client from the document the server serves; import it."""
    import httpx

    document = httpx.get(f"{server}/models/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert document.status_code == 200
    spec = tmp_path / "openapi.json"
    spec.write_bytes(document.content)
    tool = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert tool is not None, "openapi-python-client is in the test extra"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    output = tmp_path / "client"
    run = subprocess.run(
        [tool, "generate", "--path", str(spec), "--output-path", str(output), "--fail-on-warning"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Unable" not in run.stdout + run.stderr  # nothing dropped, not even with a warning
    sys.path.insert(0, str(output))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(output))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_the_generated_client_reads_and_patches_over_http(generated, server: str, published: ModelRegistry):
    operations = {path.stem for path in (Path(generated.__file__).parent / "api" / "default").glob("*.py")}
    assert operations >= {
        "list_versions",
        "get_latest_version",
        "get_version",
        "patch_version",
        "get_version_history",
        "get_open_api_document",
    }
    api = importlib.import_module(f"{PACKAGE}.api.default")
    models = importlib.import_module(f"{PACKAGE}.models")
    client = generated.AuthenticatedClient(base_url=server, token=TOKEN)
    listing = importlib.import_module(f"{api.__name__}.list_versions").sync(client=client)
    assert [item.version for item in listing] == ["1.0.0", "1.1.0", "2.0.0-rc.1"]
    get_version = importlib.import_module(f"{api.__name__}.get_version")
    answer = get_version.sync_detailed("1.1.0", client=client)
    assert answer.status_code == 200 and answer.parsed.metadata["stage"] == "staging"
    etag = answer.headers["ETag"]

    patch_version = importlib.import_module(f"{api.__name__}.patch_version")
    notes = {"reviewer": "ana", "checks": ["auc", {"passed": True}], "score": 0.93}
    body = models.MetadataPatch.from_dict({"stage": "prod", "canary": None, "notes": notes})
    stale = patch_version.sync_detailed("1.1.0", client=client, body=body, if_match='"stale"')
    assert stale.status_code == 412 and isinstance(stale.parsed, models.Error)
    patched = patch_version.sync_detailed("1.1.0", client=client, body=body, if_match=etag)
    assert patched.status_code == 200, patched.content
    assert patched.parsed.metadata["stage"] == "prod" and "canary" not in patched.parsed.metadata.to_dict()
    assert get_version.sync_detailed("1.1.0", client=client).headers["ETag"] == patched.headers["ETag"]
    assert published.get_metadata("1.1.0")["notes"] == notes

    history = importlib.import_module(f"{api.__name__}.get_version_history").sync("1.1.0", client=client)
    assert [event.action for event in history] == ["publish", "update_metadata"]
    missing = get_version.sync_detailed("9.9.9", client=client)
    assert missing.status_code == 404 and missing.parsed.error.code == 404
    anonymous = generated.Client(base_url=server)
    assert get_version.sync_detailed("1.1.0", client=anonymous).status_code == 401
