"""The ``/models`` JSON API: a thin HTTP adapter over the app's :class:`ModelRegistry`.

Every answer under the prefix is JSON, errors included (``{"error": {"code", "message"}}``), and no
answer carries a server path, a traceback or a credential. Bodies and ETags are rendered once per
registry state (memoised on the snapshot), so a warm ``GET`` costs a freshness check and a lookup.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Collection
from importlib import resources
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    RequestEntityTooLarge,
    UnsupportedMediaType,
    default_exceptions,
)
from werkzeug.routing import BaseConverter, RequestRedirect

from . import approvals
from .access import caller, check_change, identify, named_tokens, require_role, set_caller, tokens_configured
from .answers import entry_item, version_item
from .config import NAME_PATTERN, RESERVED_NAMES
from .context import get_registries, get_registry
from .errors import (
    InvalidArgumentError,
    InvalidMetadataError,
    PromotionRefusedError,
    RegistryError,
    VersionNotFoundError,
)
from .metadata import MAX_METADATA_BYTES, check_stage
from .registry import Entry, ModelRegistry, Snapshot
from .timeline import known_metadata, parse_as_of
from .versioning import check_version

log = logging.getLogger(__name__)

bp = Blueprint("model_registry", __name__)
View = TypeVar("View", bound=Callable[..., Response])

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The least role a write of each method needs whatever its view checks after (a ``PATCH`` needs
#: what its keys need, :func:`~.access.check_change`): deleting is an admin's, a ``POST`` (an
#: approval) a promoter's; a view of either that forgot its own check still refuses the rest.
_WRITE_FLOORS = {"DELETE": "admin", "POST": "promoter"}
_JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_ACTOR_HEADER = "X-Model-Registry-Actor"
_OPENAPI_FILE = "openapi.json"
_OPENAPI_PREFIX = "/models"  # the prefix the paths in openapi.json are written under
_MODEL_PARAMETER = {"$ref": "#/components/parameters/model"}
_MAX_APPROVAL_BYTES = 4096
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def register_api(app: Flask, prefix: str) -> None:
    """Mount the API at ``prefix``; every answer under it is JSON, whatever the host registers.

    Errors raised in the API's views go to the blueprint's handlers, registered per status code
    so that they win over a host's ``errorhandler(404)`` as well as ``(HTTPException)`` and
    ``(Exception)`` (Flask asks a request's blueprint before the app). Errors of routing (an unknown
    path or method under the prefix) have no blueprint yet: an app-level ``before_request`` answers
    them in JSON before any error handler is asked. Nothing is registered on the app's own error
    handlers, so outside the prefix the host answers exactly as it would without the extension.
    """
    prefix = "/" + prefix.strip("/")
    if prefix == "/":
        raise ValueError("MODEL_REGISTRY_URL_PREFIX must not be '/': the API needs a prefix of its own")
    app.url_map.converters.setdefault("model_version", _VersionSegment)
    app.url_map.converters.setdefault("model_name", _NameSegment)
    app.url_map.converters.setdefault("named_model_version", _NamedVersionSegment)
    app.register_blueprint(bp, url_prefix=prefix)
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(f"{bp.name}."):
            rule.merge_slashes = False  # "/models//1.0.0": a JSON 404, not Werkzeug's HTML redirect

    def routing_error() -> Response | None:
        """A request under the prefix that matched no route (404, 405): its JSON answer."""
        exc = request.routing_exception
        if exc is None:
            return None
        path = request.path
        if path == prefix or path.startswith(prefix + "/"):
            segment = path[len(prefix) + 1 :]
            first = segment.partition("/")[0]
            if (
                exc.code == 405
                and re.fullmatch(NAME_PATTERN, first)
                and first not in RESERVED_NAMES
                and first not in get_registries()
                and _routes(f"{prefix}/0.0.0{segment[len(first) :]}", request.method)
            ):
                # "PATCH /models/v1", "DELETE /models/v1", "POST /models/v1/approvals": a segment
                # shaped like a model name only matched a model's routes; not being one, it is a bad
                # version (400) or, with named models, an unknown one (404 naming it), never a
                # method error.
                try:
                    get_registry(first) if get_registries() else check_version(first)
                except RegistryError as error:
                    return error_response(error.http_status, str(error))
            return http_error_response(exc)  # type: ignore[arg-type]
        return None

    app.before_request(routing_error)


def _routes(path: str, method: str) -> bool:
    """Whether ``method`` on ``path`` reaches a view of this app."""
    adapter = current_app.create_url_adapter(request)
    try:
        adapter.match(path, method)  # type: ignore[union-attr]
    except HTTPException:
        return False
    return True


class _VersionSegment(BaseConverter):
    """A version right after the prefix: any segment but the API's own words and model names, so
    ``PATCH /models/latest`` answers 405 (and ``OPTIONS`` the right ``Allow``) rather than "not a
    valid version"; views check the rest (400). Names start with a letter, versions with a digit."""

    regex = rf"(?!(?:{NAME_PATTERN}|openapi\.json)$)[^/]+"
    part_isolating = True


class _NamedVersionSegment(BaseConverter):
    """A version after a model's name: any segment but ``latest``; views check the rest (400)."""

    regex = r"(?!latest$)[^/]+"
    part_isolating = True


class _NameSegment(BaseConverter):
    """A path segment shaped like a model name (``MODEL_REGISTRY_MODELS``), other than the API's words."""

    regex = rf"(?!(?:{'|'.join(map(re.escape, sorted(RESERVED_NAMES)))})$){NAME_PATTERN}"
    part_isolating = True


# answers ------------------------------------------------------------------------------------------


def _dumps(payload: Any) -> bytes:
    """The one JSON rendering of every answer, success or error: compact, strict (no NaN)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _render(payload: Any) -> tuple[bytes, str]:
    body = _dumps(payload)
    return body, hashlib.blake2b(body, digest_size=16).hexdigest()


def _respond(rendered: tuple[bytes, str]) -> Response:
    body, etag = rendered
    headers = request.headers  # a PATCH checks its preconditions before the change, not here
    if ("If-None-Match" in headers or "If-Match" in headers) and request.method in ("GET", "HEAD"):
        failed = _failed_precondition(etag)
        if failed == 412:
            return error_response(412, "If-Match: the answer has changed since that ETag")
        if failed == 304:
            response = current_app.response_class(status=304)
            response.set_etag(etag)
            return response
    response = current_app.response_class(body, mimetype="application/json")
    response.set_etag(etag)
    return response


def _failed_precondition(etag: str) -> int | None:
    """RFC 9110 §13.2.2 for a resource whose strong ETag is ``etag``: ``If-Match`` by strong
    comparison (a list, or ``*``), then ``If-None-Match`` by weak comparison (``W/"x"`` matches
    ``"x"``). The status of a failed precondition (412, or 304 for a read), None when it holds."""
    if "If-Match" in request.headers and not request.if_match.contains(etag):
        return 412
    if "If-None-Match" in request.headers and request.if_none_match.contains_weak(etag):
        return 304 if request.method in ("GET", "HEAD") else 412
    return None


def _sorted_methods(value: str) -> str:
    """An ``Allow`` header in one stable order (Werkzeug builds it from a set)."""
    return ", ".join(sorted({method.strip() for method in value.split(",") if method.strip()}))


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    """The JSON error answer every part of the package gives: ``{"error": {"code", "message"}}``,
    plus ``extra`` fields of the error's own (a refused promotion's ``unmet``)."""
    body = _dumps({"error": {"code": status, "message": message, **extra}})
    response = current_app.response_class(body, status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = _sorted_methods(value) if name.lower() == "allow" else value
    return response


def http_error_response(exc: HTTPException) -> Response:
    """A Werkzeug HTTP error (404, 405 …) as the JSON error answer, its headers (``Allow``) kept; a
    routing redirect (``//health`` → ``/health``) keeps its ``Location``, which Werkzeug sets only in
    its own answer."""
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    if isinstance(exc, RequestRedirect):
        headers["Location"] = exc.new_url
    return error_response(exc.code or 500, exc.description or exc.name, headers)


# Per status code too: a host's errorhandler(404) would otherwise win over a class-based handler.
bp.register_error_handler(HTTPException, http_error_response)
for _code in default_exceptions:
    bp.register_error_handler(_code, http_error_response)


@bp.errorhandler(RegistryError)
def _registry_error(exc: RegistryError) -> Response:
    if isinstance(exc, PromotionRefusedError):
        return error_response(exc.http_status, str(exc), unmet=exc.unmet)
    return error_response(exc.http_status, str(exc))


@bp.errorhandler(Exception)
def unexpected_error(exc: Exception) -> Response:
    """A bug, logged with its traceback; the client gets a 500 that shows no detail."""
    log.exception("unexpected error in the model registry API")
    return error_response(500, "internal error in the model registry; the server log has the details")


@bp.after_request
def options_in_json(response: Response) -> Response:
    """Flask answers ``OPTIONS`` itself, with an empty body: say the same (``Allow``) in JSON."""
    if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
        methods = sorted(response.allow)
        response.set_data(_dumps({"allow": methods}))
        response.mimetype = "application/json"
        response.headers["Allow"] = ", ".join(methods)
    return response


# auth ---------------------------------------------------------------------------------------------


@bp.before_request
def authorize() -> Response | None:
    """The token rules: with tokens configured every request carries a known one (401), whose
    role each write then checks (403); without, reads are open and writes refused. ``OPTIONS`` (a
    CORS preflight, sent without credentials) is always open: it reveals nothing but ``Allow``."""
    if request.method == "OPTIONS":
        return None
    if tokens_configured(current_app.config):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        token = identify(given.strip()) if scheme.lower() == "bearer" and given.strip() else None
        if token is None:
            return error_response(
                401,
                "a valid 'Authorization: Bearer <token>' header is required",
                {"WWW-Authenticate": 'Bearer realm="models"'},
            )
        set_caller(token)
        if request.method in _WRITE_FLOORS:
            require_role(_WRITE_FLOORS[request.method], f"{request.method} {request.path}")
    elif request.method not in _READ_METHODS:
        return error_response(
            403, "writes are disabled: set MODEL_REGISTRY_TOKENS or MODEL_REGISTRY_API_TOKEN to enable them"
        )
    return None


# query arguments ----------------------------------------------------------------------------------


def _arg(name: str) -> str | None:
    if not request.query_string:  # the common case: nothing to parse
        return None
    try:
        return request.args.get(name)
    except UnicodeDecodeError:  # raw non-UTF-8 bytes in the query string: Werkzeug does not decode them
        raise BadRequest("the query string is not valid UTF-8") from None


def _stage_arg() -> str | None:
    stage = _arg("stage")
    if stage is None:
        return None
    try:
        return check_stage(stage, None)
    except InvalidMetadataError as exc:
        raise InvalidMetadataError(f"query parameter 'stage': {exc}") from None


def _bool_arg(name: str) -> bool:
    value = (_arg(name) or "false").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidMetadataError(f"query parameter {name!r} must be true or false")


# views --------------------------------------------------------------------------------------------


def _memo(snap: Snapshot, key: tuple[Any, ...], payload: Callable[[], Any]) -> tuple[bytes, str]:
    return snap.memo(("api", *key), lambda: _render(payload()))


def _entry_answer(registry: ModelRegistry, snap: Snapshot, entry: Entry) -> Response:
    entry.require_metadata()  # a corrupt version answers 500 with the reason
    status = registry.signatures.status
    return _respond(_memo(snap, ("entry", entry.version), lambda: entry_item(entry, status)))


def _route(rule: str, method: str) -> Callable[[View], View]:
    """One view for every registry: the default one at ``<prefix><rule>`` and each named model at
    ``<prefix>/<name><rule>``; the view gets the registry (an unknown name is a 404 naming it).
    ``<version>`` in ``rule`` stands for a version segment."""

    def register(view: View) -> View:
        @functools.wraps(view)
        def endpoint(model: str | None = None, **kwargs: Any) -> Response:
            if model is not None and not rule and not get_registries():
                check_version(model)  # no named models: "<prefix>/<segment>" is a bad version (400)
            return view(get_registry(model), **kwargs)

        default = rule.replace("<version>", "<model_version:version>")
        named = rule.replace("<version>", "<named_model_version:version>")
        bp.add_url_rule(default, view_func=endpoint, methods=[method])
        bp.add_url_rule(f"/<model_name:model>{named}", view_func=endpoint, methods=[method])
        return view

    return register


@_route("", "GET")
def list_models(registry: ModelRegistry) -> Response:
    """``GET /models``: every version with its metadata, ascending; ``?stage=`` filters."""
    stage = _stage_arg()
    snap = registry.snapshot()
    if stage is not None and stage not in snap.stages:
        return _respond(_render([]))

    def items() -> list[dict[str, Any]]:
        status = registry.signatures.status
        return [entry_item(e, status) for e in snap.entries if stage is None or e.stage == stage]

    return _respond(_memo(snap, ("list", stage), items))


@_route("/latest", "GET")
def latest_model(registry: ModelRegistry) -> Response:
    """``GET /models/latest``: the highest version; ``?stage=``, ``?prerelease=true``; ``?as_of=``
    (RFC 3339 with an offset): the one it was then, from the audit trail."""
    stage = _stage_arg()
    prerelease = _bool_arg("prerelease")
    as_of = _arg("as_of")
    if as_of is not None:
        when = parse_as_of(as_of)
        version = registry.get_latest_version(stage, prerelease, as_of=when)
        if version is None:
            where = f" in stage {stage!r}" if stage is not None else ""
            raise VersionNotFoundError(f"no version{where} at {when.isoformat()}")
        entry = registry.snapshot().by_version.get(version)  # None: deleted since
        if entry is not None and entry.metadata:  # as GET <prefix>/<version> answers it
            answer = _version_answer(registry, version, entry.metadata)
        else:  # its last known metadata
            answer = version_item(version, known_metadata(registry, version))
        answer["as_of"] = when.isoformat()
        return _respond(_render(answer))
    snap = registry.snapshot()
    entry = snap.latest(stage, prerelease)
    if entry is None:
        where = f" in stage {stage!r}" if stage is not None else ""
        raise VersionNotFoundError(f"no version{where} yet")
    return _entry_answer(registry, snap, entry)


@_route("/<version>", "GET")
def show_model(registry: ModelRegistry, version: str) -> Response:
    """``GET /models/<version>``: one version and its metadata."""
    check_version(version)
    snap = registry.snapshot()
    entry = snap.by_version.get(version)
    if entry is None:
        raise VersionNotFoundError(f"version {version} not found")
    return _respond(_render(_version_answer(registry, version, entry.require_metadata())))


@_route("/<version>/history", "GET")
def model_history(registry: ModelRegistry, version: str) -> Response:
    """``GET /models/<version>/history?limit=&before=``: that version's audit events, oldest first
    (the newest ``limit`` older than event ``before``)."""
    limit = _arg("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit() and len(limit) <= 6):
        raise InvalidArgumentError("query parameter 'limit' must be a whole number from 1 to 10000")
    page = registry.history(check_version(version), int(limit) if limit else None, _arg("before"))
    return _respond(_render(page))


def _json_body(types: Collection[str], limit: int, what: str) -> Any:
    """The request's JSON body: ``415`` for another media type, ``413`` above ``limit`` bytes,
    ``400`` when it is not JSON."""
    if request.mimetype not in types:
        raise UnsupportedMediaType(f"send {what}")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidMetadataError("the body is not valid UTF-8 JSON") from None


@_route("/<version>", "PATCH")
def patch_model(registry: ModelRegistry, version: str) -> Response:
    """``PATCH /models/<version>``: a JSON merge patch (RFC 7396) of user metadata and flags.

    ``If-Match`` / ``If-None-Match`` are checked against the metadata the change replaces, inside
    the registry's compare-and-swap (412, nothing changed); the answer's ``ETag`` is the one the
    next ``GET`` of the version answers with.
    """
    check_version(version)
    required = _require_if_match()
    if required is not None:
        return required
    changes = _json_body(_JSON_TYPES, MAX_METADATA_BYTES, "the patch as application/json or merge-patch+json")
    preconditions = _preconditions(registry, version)

    def allowed(current: dict[str, Any]) -> bool:
        """The caller's role allows this change (else 403), and its preconditions hold."""
        check_change(version, current, changes)
        return preconditions is None or preconditions(current)

    metadata = registry.update_metadata(version, changes, actor=_actor(), expected=allowed)
    return _respond(_render(_version_answer(registry, version, metadata)))


@_route("/<version>", "DELETE")
def delete_model(registry: ModelRegistry, version: str) -> Response:
    """``DELETE /models/<version>``: delete the version (204, empty body); 409 while it serves, is
    a canary or is a stage's rollback target. ``If-Match`` is checked as for ``PATCH``."""
    check_version(version)
    required = _require_if_match()
    if required is not None:
        return required
    registry.delete_version(version, actor=_actor(), expected=_preconditions(registry, version))
    return current_app.response_class(status=204)


def _require_if_match() -> Response | None:
    """The 428 answer of a write without ``If-Match`` when ``MODEL_REGISTRY_REQUIRE_IF_MATCH`` is on."""
    if current_app.config["MODEL_REGISTRY_REQUIRE_IF_MATCH"] and "If-Match" not in request.headers:
        return error_response(428, "this server requires If-Match: send the ETag of the version's last GET")
    return None


def _preconditions(registry: ModelRegistry, version: str) -> Callable[[dict[str, Any]], bool] | None:
    """The request's ``If-Match`` / ``If-None-Match`` as a test of the version's current metadata
    (checked by the registry against the very metadata it changes); None when it sends neither."""
    if "If-Match" not in request.headers and "If-None-Match" not in request.headers:
        return None
    signature = registry.signature(version)  # of the artefact, which a metadata change never changes
    approved = approvals.of(registry, version)  # nor approvals: the ETag of GET holds both

    def precondition(current: dict[str, Any]) -> bool:
        return _failed_precondition(_render(version_item(version, current, signature, approved))[1]) is None

    return precondition


def _version_answer(registry: ModelRegistry, version: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The JSON of one version as ``GET <prefix>/<version>`` answers it: with signature and approvals."""
    return version_item(version, metadata, registry.signature(version), approvals.of(registry, version))


@_route("/<version>/approvals", "POST")
def approve_model(registry: ModelRegistry, version: str) -> Response:
    """``POST /models/<version>/approvals {"stage": "prod"}``: record the caller's approval of the
    version for that stage (an ``approve`` audit event); answers ``201`` with the version's JSON."""
    check_version(version)
    body = _json_body(
        {"application/json"}, _MAX_APPROVAL_BYTES, 'the approval as application/json {"stage": …}'
    )
    if not isinstance(body, dict) or set(body) != {"stage"}:
        raise InvalidMetadataError('the body must be {"stage": "<stage>"}, the stage approved')
    stage = check_stage(body["stage"], registry.allowed_stages)
    require_role("promoter", f"approving {version} for {stage}", stage=stage)
    registry.approve(version, stage, actor=_actor())
    response = _respond(_render(_version_answer(registry, version, registry.get_metadata(version))))
    response.status_code = 201
    return response


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """``GET /models/openapi.json``: this API's OpenAPI 3.1 document, for where it is mounted."""
    prefix = request.path.removesuffix("/" + _OPENAPI_FILE)
    return _respond(_openapi(request.script_root, prefix))


@functools.cache
def _openapi_template() -> dict[str, Any]:
    """The packaged document, plus each registry path again under ``/{model}`` for named models."""
    document = json.loads(resources.files(__package__).joinpath(_OPENAPI_FILE).read_bytes())
    paths = document["paths"]
    app_wide = {f"{_OPENAPI_PREFIX}/{name}" for name in (_OPENAPI_FILE, "health", "metrics")}
    for path, item in list(paths.items()):
        if path not in app_wide:
            paths[f"{_OPENAPI_PREFIX}/{{model}}{path.removeprefix(_OPENAPI_PREFIX)}"] = _of_model(item)
    return document


def _of_model(item: dict[str, Any]) -> dict[str, Any]:
    """A path item of the default registry as the same operations of a named model."""
    named: dict[str, Any] = {**item, "parameters": [_MODEL_PARAMETER, *item.get("parameters", [])]}
    for method in _HTTP_METHODS.intersection(item):
        operation = item[method]
        responses = {**operation["responses"], "404": {"$ref": "#/components/responses/NotFound"}}
        named[method] = {
            **operation,
            "operationId": operation["operationId"] + "OfModel",
            "summary": "Named model: " + operation["summary"],
            "responses": dict(sorted(responses.items())),
        }
    return named


@functools.lru_cache(maxsize=16)
def _openapi(script_root: str, prefix: str) -> tuple[bytes, str]:
    """The document with its server and paths where the app mounts the API, rendered once."""
    document = _openapi_template()
    paths = {prefix + path.removeprefix(_OPENAPI_PREFIX): item for path, item in document["paths"].items()}
    return _render({**document, "servers": [{"url": script_root or "/"}], "paths": paths})


def _actor() -> str:
    """Who made a change through the API: the token's name with named tokens configured, else the
    actor header when sent, and the client address."""
    token = caller()
    if token is not None and named_tokens(current_app.config):
        return token.name
    client = f"api:{request.remote_addr or 'unknown'}"
    claimed = request.headers.get(_ACTOR_HEADER, "")
    if claimed and len(claimed) <= 128 and claimed.isprintable():
        return f"{claimed} ({client})"
    return client
