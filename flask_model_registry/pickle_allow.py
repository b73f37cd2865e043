"""The pickle allow-list: refuse an artefact that would import anything outside listed modules.

Defence in depth beside signatures: before unpickling, the artefact's opcodes are read (never
executed) by :mod:`.pickle_scan`, which names every global the pickle would import. Each must be in
a module that equals a listed name or starts with it followed by ``.``, or be one of
:data:`PROTOCOL_GLOBALS`. Anything else, a ``STACK_GLOBAL`` whose
strings are not known constants, and bytes that are not a pickle the scan can follow, are an
:class:`~.errors.UntrustedArtefactError` naming the global or the reason.

The load that follows unpickles with the same rule in ``find_class`` (:func:`loads`), where the
import really happens: a scan bug cannot let a global through, and a name that reaches a module or a
re-exported object (``example_app.model.os.system``, ``from os import system``) is refused there.

Why the standard library's :mod:`pickletools` table and not fickling: see ``docs/signing.md``
("Pickle allow-list"); in short, fickling builds a Python AST of the whole pickle and took seconds
on a 64 MiB artefact where the scan takes milliseconds.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
import types
from collections.abc import Iterable
from typing import Any

from .errors import UntrustedArtefactError
from .pickle_scan import Global, UnreadablePickle, globals_of, mapped

#: The allow-list name that permits cloudpickle's by-value code: functions and classes defined in
#: ``__main__`` or a notebook, rebuilt from their bytecode (which is code execution by design).
CLOUDPICKLE_CODE = "cloudpickle.code"

#: Globals every allow-list accepts: what the pickle protocol itself emits for plain data
#: (containers, numbers, ``copyreg``'s reconstructors, protocol 2's bytes), and the standard
#: library's value types cloudpickle pickles by reference. None of them can run code or reach a
#: module: ``builtins.getattr``, ``builtins.type`` and ``builtins.eval`` are not here.
PROTOCOL_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        *(
            ("builtins", name)
            for name in [
                "bool",
                "bytearray",
                "bytes",
                "complex",
                "dict",
                "float",
                "frozenset",
                "int",
                "list",
                "object",
                "range",
                "set",
                "slice",
                "str",
                "tuple",
            ]
        ),
        ("copyreg", "_reconstructor"),
        ("copyreg", "__newobj__"),
        ("copyreg", "__newobj_ex__"),
        ("_codecs", "encode"),
        *(("collections", name) for name in ("OrderedDict", "defaultdict", "deque", "Counter")),
        *(("datetime", name) for name in ("date", "datetime", "time", "timedelta", "timezone")),
        ("builtins", "Ellipsis"),
        ("builtins", "NotImplemented"),
        *(("cloudpickle.cloudpickle", f"_make_dict_{view}") for view in ("keys", "values", "items")),
        ("decimal", "Decimal"),
        ("fractions", "Fraction"),
        ("uuid", "UUID"),
    ]
)

#: What ``"cloudpickle.code"`` adds besides the ``cloudpickle`` package itself: the types and
#: builtins cloudpickle's by-value functions, classes, enums and methods are rebuilt with.
CLOUDPICKLE_CODE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        ("types", "CodeType"),
        ("types", "FunctionType"),
        ("types", "CellType"),
        ("types", "MethodType"),
        ("types", "ModuleType"),
        ("builtins", "getattr"),
        ("builtins", "type"),
        ("builtins", "classmethod"),
        ("builtins", "staticmethod"),
        ("builtins", "property"),
        ("enum", "Enum"),
        ("enum", "Enum.__new__"),
    ]
)

_UNKNOWN_STRINGS = "STACK_GLOBAL whose module and name are not known string constants"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_DUNDER = re.compile(r"__\w*__")


class PickleAllowList:
    """The modules (and their submodules) an artefact's pickle may import from, plus the built-in set."""

    def __init__(self, names: Iterable[str]) -> None:
        if isinstance(names, str):
            raise ValueError(f"the pickle allow-list is a list of module names, not the string {names!r}")
        names = list(names)
        for name in names:
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(f"pickle allow-list entry {name!r} is not a dotted module name")
        self.names = tuple(dict.fromkeys(names))
        self._code = CLOUDPICKLE_CODE in self.names
        self._prefixes = tuple(n for n in self.names if n != CLOUDPICKLE_CODE) + (
            ("cloudpickle",) if self._code else ()
        )
        self._exact = PROTOCOL_GLOBALS | (CLOUDPICKLE_CODE_GLOBALS if self._code else frozenset())

    def __repr__(self) -> str:
        return f"PickleAllowList({list(self.names)!r})"

    def module_allowed(self, module: str) -> bool:
        """Whether ``module`` is a listed name or inside one (``sklearn.tree`` under ``sklearn``)."""
        return any(module == p or module.startswith(p + ".") for p in self._prefixes)

    def refusal(self, module: str, name: str) -> str | None:
        """Why the global ``module.name`` may not be imported, or None when it may."""
        if (module, name) in self._exact:
            return None
        if any(_DUNDER.fullmatch(part) for part in name.split(".")):
            return f"global {module}.{name} reaches a dunder attribute"
        if not self.module_allowed(module):
            if module.startswith("cloudpickle") and not self._code:
                return (
                    f"global {module}.{name} rebuilds code by value (cloudpickle); allow"
                    f" {CLOUDPICKLE_CODE!r} to load it"
                )
            return f"global {module}.{name} is not in the pickle allow-list"
        return None

    def check(self, version: str, data: bytes) -> list[Global]:
        """Every global the pickle ``data`` would import; :class:`UntrustedArtefactError` naming the
        first one outside the allow-list, or why the bytes cannot be followed. Never unpickles."""
        try:
            found = list(globals_of(data))
        except UnreadablePickle as exc:
            raise UntrustedArtefactError(
                version, f"pickle not readable by the allow-list scan: {exc}"
            ) from None
        for item in found:
            reason = _UNKNOWN_STRINGS if item.module is None else self.refusal(item.module, item.name)
            if reason is not None:
                raise UntrustedArtefactError(version, f"{reason} ({item.opcode} at byte {item.position})")
        return found

    def loads(self, version: str, data: bytes) -> Any:
        """Unpickle ``data`` (checked first with :meth:`check`), enforcing the same rule again in
        ``find_class``, where each import really happens."""
        self.check(version, data)
        # The scan refuses a PROTO anywhere but first: the protocol is the same throughout.
        proto = data[1] if len(data) > 1 and data[0] == pickle.PROTO[0] else 0
        return _Guarded(self, version, proto, io.BytesIO(data)).load()


class _Guarded(pickle.Unpickler):
    """The C unpickler, whose imports go through the allow-list once more."""

    def __init__(self, allow: PickleAllowList, version: str, proto: int, file: io.BytesIO) -> None:
        super().__init__(file)
        self._allow = allow
        self._version = version
        self._proto = proto

    def find_class(self, module: str, name: str) -> Any:
        """Resolve like :class:`pickle.Unpickler`, but only what the allow-list accepts."""
        imported = mapped(module, name, self._proto)  # what super() imports: 0-2 map Python 2 names
        reason = self._allow.refusal(*imported)
        if reason is not None:
            raise UntrustedArtefactError(self._version, reason)
        found = super().find_class(module, name)
        if imported not in self._allow._exact:
            self._check_resolved(*imported)
        return found

    def _check_resolved(self, module: str, name: str) -> None:
        """Refuse a name that passes through a module, or lands on an object of another module."""
        value: Any = sys.modules[module]
        for part in name.split("."):
            value = getattr(value, part)
            if isinstance(value, types.ModuleType) and not self._allow.module_allowed(value.__name__):
                raise UntrustedArtefactError(
                    self._version, f"global {module}.{name} reaches module {value.__name__}"
                )
        home = getattr(value, "__module__", None)
        if isinstance(home, str) and not self._allow.module_allowed(home):
            qualname = getattr(value, "__qualname__", None)
            if (home, qualname) not in self._allow._exact:
                raise UntrustedArtefactError(
                    self._version, f"global {module}.{name} is {home}.{qualname}, outside the allow-list"
                )
