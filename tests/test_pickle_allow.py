"""The pickle allow-list: an artefact that would import outside it is refused before unpickling.

A refused pickle here would leave a marker file if it ran, so "nothing was unpickled" is checked,
not assumed; a control test shows the same bytes do leave it when plainly unpickled.
"""

from __future__ import annotations

import collections
import datetime
import importlib
import io
import os
import pickle
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import servers
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from example_app.model import LinearModel
from flask_model_registry import (
    ConfigError,
    CorruptVersionError,
    FlaskModelRegistry,
    ModelRegistry,
    UntrustedArtefactError,
)
from flask_model_registry.pickle_allow import PickleAllowList
from flask_model_registry.pickle_scan import globals_of, mapped

ALLOW = ["example_app.model"]
MODEL = LinearModel((1.0, 2.0), 0.5)


class Calls:
    """Pickles as a call of ``function(*args)``: what an attacker's artefact does on load."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.function, self.args


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file a malicious artefact would create; it must never exist."""
    return tmp_path / f"pwned-{uuid.uuid4().hex}"


@pytest.fixture
def malicious(marker: Path) -> bytes:
    """A pickle whose unpickling runs ``os.system`` to leave :func:`marker`."""
    return cloudpickle.dumps(Calls(os.system, f"touch {marker}"))


@pytest.fixture
def guarded(registry_root: Path) -> ModelRegistry:
    """A registry with the example model's module allowed."""
    return ModelRegistry(registry_root, pickle_allow=ALLOW)


def by_value_function() -> Callable[[int], int]:
    """A closure: cloudpickle pickles it by value (its bytecode), as a notebook's function."""
    step = 1

    def add(x: int) -> int:
        return x + step

    return add


def test_the_malicious_artefact_would_leave_the_marker(malicious: bytes, marker: Path):
    pickle.loads(malicious)  # the control: these bytes do run code when unpickled
    assert marker.exists()


def test_a_malicious_artefact_is_refused_and_nothing_runs(guarded: ModelRegistry, marker: Path):
    guarded.save_model("1.0.0", Calls(os.system, f"touch {marker}"), {"stage": "prod"})
    with pytest.raises(UntrustedArtefactError, match=r"posix\.system") as caught:
        guarded.get_model("1.0.0")
    assert isinstance(caught.value, CorruptVersionError)
    assert caught.value.version == "1.0.0" and "allow-list" in caught.value.reason
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (Calls(os.system, "true"), "posix.system"),
        (Calls(subprocess.Popen, ["true"]), "subprocess.Popen"),
        (Calls(eval, "1"), "builtins.eval"),
        (Calls(exec, "x = 1"), "builtins.exec"),
        (Calls(importlib.import_module, "os"), "importlib.import_module"),
        (by_value_function(), "cloudpickle.cloudpickle._make_function"),
    ],
)
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_each_global_outside_the_list_is_refused_by_name(payload: Any, named: str, protocol: int):
    data = cloudpickle.dumps(payload, protocol=protocol)
    with pytest.raises(UntrustedArtefactError, match=named.replace(".", r"\.")):
        PickleAllowList(ALLOW).check("2.0.0", data)


def test_by_value_code_says_how_to_allow_it_and_loads_when_allowed():
    data = cloudpickle.dumps(by_value_function())
    with pytest.raises(UntrustedArtefactError, match=r"allow 'cloudpickle\.code'"):
        PickleAllowList(ALLOW).check("1.0.0", data)
    assert PickleAllowList([*ALLOW, "cloudpickle.code"]).loads("1.0.0", data)(1) == 2


def test_the_example_model_loads_through_the_registry(guarded: ModelRegistry):
    guarded.save_model("1.0.0", MODEL, {"stage": "prod"})
    assert guarded.get_model("1.0.0") == MODEL
    assert guarded.get_latest("prod").model.predict([[1, 1]]) == [3.5]


def test_the_shipped_sample_registry_loads_under_its_allow_list():
    sample = ModelRegistry(Path(__file__).parent.parent / "registry", pickle_allow=ALLOW, watch=False)
    for version in sample.list_versions():
        assert isinstance(sample.get_model(version), LinearModel)


def test_plain_data_needs_no_listed_module():
    data = [{"a": (1, 2.5, None)}, {1, 2}, frozenset({3}), bytearray(b"x"), 1j, 2**80, b"raw"]
    data += [collections.OrderedDict(a=1), collections.Counter("ab"), datetime.date(2026, 1, 2)]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert PickleAllowList([]).loads("1.0.0", cloudpickle.dumps(data, protocol=protocol)) == data


def test_a_module_prefix_covers_submodules_only_at_a_dot():
    allow = PickleAllowList(["example_app"])
    assert allow.module_allowed("example_app") and allow.module_allowed("example_app.model")
    assert not allow.module_allowed("example_application")
    assert PickleAllowList(["example_app"]).loads("1", cloudpickle.dumps(MODEL)) == MODEL


def stack_global(module: str, name: str, *tail: bytes) -> bytes:
    """A protocol 4 pickle importing ``module.name`` by ``STACK_GLOBAL``, then ``tail`` and STOP."""
    strings = b"".join(b"\x8c" + bytes([len(s)]) + s.encode() for s in (module, name))
    return b"\x80\x04" + strings + b"\x93" + b"".join(tail) + b"."


def test_memoised_strings_are_followed_to_the_global():
    # "example_app.model" and "LinearModel" are memoised, then the memo is overwritten with
    # "posix" / "system", then fetched back: the scan must see what the unpickler would.
    data = (
        b"\x80\x04\x8c\x11example_app.model\x94\x8c\x0bLinearModel\x94"
        b"00"  # pop both strings: the stack is empty again (their memo stays)
        b"\x8c\x05posixq\x00\x8c\x06systemq\x01"  # BINPUT 0 and 1: the memo now holds these
        b"00h\x00h\x01\x93."
    )
    with pytest.raises(UntrustedArtefactError, match=r"posix\.system"):
        PickleAllowList(ALLOW).check("1.0.0", data)
    assert [str(g) for g in globals_of(data)] == ["posix.system"]
    assert pickle.loads(data) is os.system  # the unpickler agrees (a lookup, not a call)


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x04N\x8c\x06system\x93.",  # the module is None, not a string constant
        b"\x80\x04\x8c\x05posix\x8c\x06system\x86\x93.",  # a tuple of the two strings
        b"\x80\x04\x8c\x05posix(\x8c\x06system\x93.",  # the module is below a MARK
        b"\x80\x04Vposix\nVsystem\n\x93.",  # strings of protocol 0 form: not tracked
    ],
)
def test_a_stack_global_of_unknown_strings_is_refused(data: bytes):
    with pytest.raises(UntrustedArtefactError, match=r"STACK_GLOBAL|underflow"):
        PickleAllowList(ALLOW).check("1.0.0", data)


def test_protocol_2_names_are_mapped_as_the_unpickler_maps_them():
    with pytest.raises(UntrustedArtefactError, match=r"builtins\.eval"):
        PickleAllowList(["__builtin__"]).check("1.0.0", b"\x80\x02c__builtin__\neval\n.")


def test_an_extension_code_is_resolved_or_refused():
    with pytest.raises(UntrustedArtefactError, match="extension code 240"):
        PickleAllowList(ALLOW).check("1.0.0", b"\x80\x02\x82\xf0.")


@pytest.mark.parametrize(
    ("module", "name", "refusal"),
    [
        ("example_app", "os.system", "reaches module os"),  # through an allowed module's import
        ("example_app.model", "dataclass", r"dataclasses\.dataclass"),  # re-exported from elsewhere
        ("example_app.model", "LinearModel.__init__", "dunder"),
    ],
)
def test_names_that_leave_the_allowed_modules_are_refused_where_they_are_imported(
    module: str, name: str, refusal: str
):
    with pytest.raises(UntrustedArtefactError, match=refusal):
        PickleAllowList(["example_app"]).loads("1.0.0", stack_global(module, name))


def test_the_same_rule_holds_at_the_real_import(monkeypatch: pytest.MonkeyPatch, marker: Path):
    # A scan that missed a global (simulated: it finds none) is caught where the unpickler imports.
    monkeypatch.setattr("flask_model_registry.pickle_allow.globals_of", lambda data: iter(()))
    with pytest.raises(UntrustedArtefactError, match=r"posix\.system"):
        PickleAllowList(ALLOW).loads("1.0.0", cloudpickle.dumps(Calls(os.system, f"touch {marker}")))
    assert not marker.exists()


@pytest.mark.parametrize("bad", ["os system", "", "1abc", "a..b", ".a", 5])
def test_an_entry_that_is_not_a_module_name_is_a_value_error(registry_root: Path, bad: Any):
    with pytest.raises(ValueError, match="module name"):
        ModelRegistry(registry_root, pickle_allow=[bad])
    with pytest.raises(ValueError, match="not the string"):
        ModelRegistry(registry_root, pickle_allow="example_app.model")


def load_failures(client: Any, version: str) -> float:
    """``model_registry_model_load_failures_total`` of ``version``, from the app's ``/metrics``."""
    text = client.get("/models/metrics").get_data(as_text=True)
    families = text_string_to_metric_families(text)
    return sum(
        s.value
        for f in families
        for s in f.samples
        if s.name == "model_registry_model_load_failures_total" and s.labels.get("version") == version
    )


def test_a_refusal_keeps_serving_the_previous_model_and_counts_a_failure(registry_root: Path, marker: Path):
    app = Flask("allow_metrics_app")
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_PICKLE_ALLOW=ALLOW)
    FlaskModelRegistry(app)
    registry, client = app.registry, app.test_client()
    registry.save_model("1.0.0", MODEL, {"stage": "prod"})
    assert registry.get_latest("prod").version == registry.route("key", "prod").version == "1.0.0"
    before = load_failures(client, "1.1.0")  # the counters belong to the process: other tests count
    registry.save_model("1.1.0", Calls(os.system, f"touch {marker}"), {"stage": "prod"})
    assert registry.get_latest("prod") == ("1.0.0", MODEL)  # the newer version is refused
    assert registry.route("key", "prod").version == "1.0.0"
    assert load_failures(client, "1.1.0") == before + 1  # once: the refusal is remembered
    registry.update_metadata("1.1.0", {"canary": 0.5})  # as a canary: its traffic goes to stable
    assert {registry.route(f"user-{n}", "prod").version for n in range(50)} == {"1.0.0"}
    assert isinstance(registry.load_failure("1.1.0"), UntrustedArtefactError)
    assert client.get("/models/health").status_code == 200  # storage answered: healthy
    assert not marker.exists()


class Stub:
    """What :class:`Recorder` imports instead of anything: takes any arguments, does nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class Recorder(pickle.Unpickler):
    """The C unpickler with every import recorded (as the scan names it) and replaced by
    :class:`Stub`: what it would import, in order, without importing anything."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.imported: list[str] = []
        self._proto = data[1] if data[:1] == b"\x80" and len(data) > 1 else 0

    def find_class(self, module: str, name: str) -> Any:
        self.imported.append(".".join(mapped(module, name, self._proto)))
        return Stub


def imports_of(data: bytes) -> tuple[list[str], bool]:
    """What the real unpickler imports from ``data``, in order, and whether it got to the end
    (a stub where a real object was needed may stop it: then what it imported up to there)."""
    recorder = Recorder(data)
    try:
        recorder.load()
    except Exception:
        return recorder.imported, False
    return recorder.imported, True


def check_against_the_unpickler(scanned: list[str], data: bytes) -> None:
    """The scan names exactly what the unpickler imports (a prefix of it, if the stubs stop it)."""
    imported, complete = imports_of(data)
    assert imported == (scanned if complete else scanned[: len(imported)])


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from([MODEL, LinearModel((0.5,)), datetime.date(2026, 1, 1)]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        | st.frozensets(st.integers(), max_size=3)
        | st.builds(collections.OrderedDict, st.dictionaries(st.text(max_size=3), inner, max_size=3))
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=values, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL), extra=st.sampled_from([None, "code"]))
def test_the_scan_names_exactly_what_the_unpickler_imports(value: Any, protocol: int, extra: str | None):
    if extra == "code":
        value = [value, by_value_function(), value]
    data = cloudpickle.dumps(value, protocol=protocol)
    check_against_the_unpickler([str(g) for g in globals_of(data)], data)


# Fuzz: programs of well-formed opcodes (strings that name dangerous globals, the memo, marks,
# calls), with stray bytes mixed in. The scan refuses cleanly or lets through only what the list
# accepts; the real unpickler then imports exactly what the scan named; the marker never appears.


def short_text(text: str) -> bytes:
    encoded = text.encode()
    return b"\x8c" + bytes([len(encoded)]) + encoded


COMMAND = b"<touch the marker>"  # replaced by the test's command
TOKENS = [
    *map(short_text, ["posix", "system", "example_app.model", "LinearModel", "builtins", "eval", "list"]),
    COMMAND,
    *(
        b"cposix\nsystem\n",
        b"cexample_app.model\nLinearModel\n",
        b"cbuiltins\nlist\n",
        b"c__builtin__\neval\n",
    ),
    *(b"iposix\nsystem\n", b"iexample_app.model\nLinearModel\n"),
    *(b"K\x01", b"N", b"(", b"t", b"\x85", b"\x86", b"]", b"}", b"a", b"s", b"e", b"u", b"0", b"1", b"2"),
    *(b"\x94", b"q\x00", b"q\x01", b"h\x00", b"h\x01", b"h\x02", b"\x93", b"R", b"b", b"\x81"),
]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    protocol=st.sampled_from([b"\x80\x02", b"\x80\x04", b""]),
    tokens=st.lists(st.sampled_from(TOKENS) | st.binary(max_size=2), max_size=24),
)
def test_fuzzed_pickles_are_refused_cleanly_or_import_only_what_the_list_allows(
    protocol: bytes, tokens: list[bytes], marker: Path
):
    data = protocol + b"".join(tokens).replace(COMMAND, short_text(f"touch {marker}")) + b"."
    allow = PickleAllowList(ALLOW)
    try:
        found = allow.check("1.0.0", data)
    except UntrustedArtefactError as exc:
        assert str(exc).startswith("version 1.0.0: untrusted artefact, not loaded: ")
        return
    assert all(g.module is not None and allow.refusal(g.module, g.name) is None for g in found)
    check_against_the_unpickler([str(g) for g in found], data)
    try:
        allow.loads("1.0.0", data)
    except Exception as exc:  # what bad data does to the unpickler: the registry reports it as corrupt
        assert not isinstance(exc, (SystemExit, KeyboardInterrupt))
    assert not marker.exists()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_never_crash_the_scan(data: bytes):
    try:
        PickleAllowList(ALLOW).check("1.0.0", data)
    except UntrustedArtefactError as exc:
        assert str(exc).startswith("version 1.0.0: untrusted artefact")


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=120) | st.lists(st.sampled_from(TOKENS), max_size=12).map(b"".join))
def test_any_artefact_loads_or_fails_as_a_corrupt_version(data: bytes, tmp_path_factory: Any):
    root = tmp_path_factory.mktemp("fuzzed")
    folder = root / "versions" / "1.0.0"
    folder.mkdir(parents=True)
    (folder / "model.pkl").write_bytes(b"\x80\x04" + data.replace(COMMAND, b"N") + b".")
    (folder / "metadata.json").write_text("{}")
    registry = ModelRegistry(root, pickle_allow=ALLOW, watch=False)
    try:
        registry.get_model("1.0.0")
    except CorruptVersionError as exc:
        assert str(exc).startswith("version 1.0.0: ")


# Flask config and the environment


def test_the_flask_config_turns_the_list_on(registry_root: Path, marker: Path):
    ModelRegistry(registry_root).save_model("1.0.0", MODEL, {"stage": "prod"})
    app = Flask("allow_app")
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_PICKLE_ALLOW=ALLOW)
    FlaskModelRegistry(app)
    assert app.registry.pickle_allow.names == tuple(ALLOW)
    assert app.registry.get_model("1.0.0") == MODEL
    ModelRegistry(registry_root).save_model("1.1.0", Calls(os.system, f"touch {marker}"), {})
    with pytest.raises(UntrustedArtefactError):
        app.registry.get_model("1.1.0")
    assert not marker.exists()


def test_the_environment_gives_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch, registry_root: Path):
    monkeypatch.setenv("MODEL_REGISTRY_PICKLE_ALLOW", "example_app.model, numpy")
    app = Flask("allow_env_app")
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root))
    FlaskModelRegistry(app)
    assert app.config["MODEL_REGISTRY_PICKLE_ALLOW"] == ["example_app.model", "numpy"]
    assert app.registry.pickle_allow.names == ("example_app.model", "numpy")


def test_a_named_model_has_its_own_list_or_the_app_wide_one(registry_root: Path, tmp_path: Path):
    for name in ("fraud", "churn"):
        (tmp_path / name).mkdir()
    app = Flask("allow_named_app")
    app.config.update(
        MODEL_REGISTRY_ROOT=str(registry_root),
        MODEL_REGISTRY_PICKLE_ALLOW="example_app",
        MODEL_REGISTRY_MODELS={
            "fraud": {"root": str(tmp_path / "fraud"), "pickle_allow": ["sklearn", "numpy"]},
            "churn": str(tmp_path / "churn"),
        },
    )
    FlaskModelRegistry(app)
    assert app.registries["fraud"].pickle_allow.names == ("sklearn", "numpy")
    assert app.registries["churn"].pickle_allow.names == ("example_app",)


def test_no_list_means_no_scan(registry: ModelRegistry):
    assert registry.pickle_allow is None
    registry.save_model("1.0.0", by_value_function(), {})
    assert registry.get_model("1.0.0")(1) == 2


@pytest.mark.parametrize("value", ["os system", '["numpy", 3]', "[not json"])
def test_a_bad_list_is_a_config_error_naming_the_key(registry_root: Path, value: str):
    app = Flask("bad_allow_app")
    app.config.update(MODEL_REGISTRY_ROOT=str(registry_root), MODEL_REGISTRY_PICKLE_ALLOW=value)
    with pytest.raises(ConfigError, match="MODEL_REGISTRY_PICKLE_ALLOW") as caught:
        FlaskModelRegistry(app)
    assert caught.value.key == "MODEL_REGISTRY_PICKLE_ALLOW"


# Object storage: the spooled copy is read once, hashed, scanned and unpickled from memory too.


def test_on_s3_the_list_refuses_and_allows(s3_server: servers.Store, marker: Path):
    root = s3_server.url(f"pickle-allow-{uuid.uuid4().hex}")
    registry = ModelRegistry(root, storage_options=s3_server.storage_options, pickle_allow=ALLOW)
    registry.save_model("1.0.0", MODEL, {"stage": "prod"})
    assert registry.get_latest("prod") == ("1.0.0", MODEL)
    registry.save_model("1.1.0", Calls(os.system, f"touch {marker}"), {"stage": "prod"})
    with pytest.raises(UntrustedArtefactError, match=r"posix\.system"):
        registry.get_model("1.1.0")
    assert registry.get_latest("prod").version == "1.0.0"
    assert not marker.exists()
