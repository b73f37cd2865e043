"""Reading a pickle's imports from its opcodes, never executing it: the allow-list's scan.

A small simulation of the C unpickler's stack, marks and memo, driven by :mod:`pickletools`' own
table of opcodes, enough to know every global a pickle would import: ``GLOBAL`` and ``INST`` carry
theirs as text, ``STACK_GLOBAL`` takes the two strings on top of the stack (pushed just before, or
fetched from the memo), ``EXT1/2/4`` name an entry of :mod:`copyreg`'s extension registry. Payloads
are stepped over, never copied; runs of one opcode (a tuple of floats) are skipped a stride slice
at a time. ``tests/test_pickle_allow.py`` checks it names exactly what the real unpickler imports.
"""

from __future__ import annotations

import _compat_pickle
import copyreg
import pickletools
from collections.abc import Iterator
from typing import Any, NamedTuple


class UnreadablePickle(Exception):
    """Bytes the scan cannot follow as the unpickler would (truncated, unknown opcode, underflow)."""


class Global(NamedTuple):
    """One import a pickle asks for: the module and name the unpickler resolves (None for a
    ``STACK_GLOBAL`` whose strings the scan does not know), the opcode and its byte offset."""

    module: str | None
    name: str | None
    opcode: str
    position: int

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


def mapped(module: str, name: str, proto: int) -> tuple[str, str]:
    """What the unpickler imports for ``module``/``name``: protocols 0-2 map Python 2 names."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        return _compat_pickle.IMPORT_MAPPING.get(module, module), name
    return module, name


_UNKNOWN = object()  # a value on the simulated stack that the scan does not track

# Argument lengths from pickletools: fixed (0 or more), a line, or a length read from the stream.
_LINE = pickletools.UP_TO_NEWLINE
_LENGTHS = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}
# What the scan does with an opcode: pushes one value of fixed width (such opcodes come in runs,
# skipped many at a time), pushes a string constant, pops and pushes, MARK, pops to the MARK, or
# is handled one by one (imports, the memo, DUP, POP, PROTO, STOP).
_RUN, _TEXT, _PLAIN, _MARK, _TO_MARK, _SPECIAL = range(6)
_RUN_OPS = frozenset(["BINFLOAT", "BININT", "BININT1", "BININT2", "NONE", "NEWTRUE", "NEWFALSE"])
_TEXT_OPS = {"SHORT_BINUNICODE": "utf-8", "BINUNICODE": "utf-8", "BINUNICODE8": "utf-8"}
_TEXT_OPS |= {"SHORT_BINSTRING": "ascii", "BINSTRING": "ascii"}  # str under encoding="ASCII"
_SPECIAL_OPS = frozenset(
    [
        "GLOBAL",
        "INST",
        "STACK_GLOBAL",
        "EXT1",
        "EXT2",
        "EXT4",
        "PUT",
        "BINPUT",
        "LONG_BINPUT",
        "GET",
        "BINGET",
        "LONG_BINGET",
        "MEMOIZE",
        "DUP",
        "POP",
        "PROTO",
        "STOP",
    ]
)
_RUN_LENGTH = 4096  # opcodes of one run checked at a time


class _Op(NamedTuple):
    name: str
    arg: int | None  # its argument's length (see _LENGTHS), None: none
    kind: int
    pops: int  # values popped (below the MARK, for _TO_MARK)
    pushes: int


def _table() -> list[_Op | None]:
    """Each opcode byte's shape, from :mod:`pickletools`' own description of the protocol."""
    table: list[_Op | None] = [None] * 256
    for op in pickletools.opcodes:
        before = [s.name for s in op.stack_before]
        name = op.name
        if name in _SPECIAL_OPS:
            kind = _SPECIAL
        elif name in _TEXT_OPS:
            kind = _TEXT
        elif name in _RUN_OPS:
            kind = _RUN
        elif name == "MARK":
            kind = _MARK
        else:
            kind = _TO_MARK if "mark" in before else _PLAIN
        pops = before.index("mark") if kind == _TO_MARK else len(before)
        arg = op.arg.n if op.arg else None
        table[ord(op.code)] = _Op(name, arg, kind, pops, len(op.stack_after))
    return table


_OPS = _table()


def globals_of(data: bytes) -> Iterator[Global]:
    """Every global the pickle ``data`` imports, in order, following the stack and memo as the C
    unpickler keeps them (marks apart, as its fence); :class:`UnreadablePickle` for what it cannot follow.

    A string constant is kept on the simulated stack as its opcode's offset (an int), decoded only
    if an import takes it; every other value is :data:`_UNKNOWN`. The hot opcodes come first."""
    view = memoryview(data)
    end = len(data)
    stack: list[Any] = []
    marks: list[int] = []  # the stack's height at each MARK
    fence = 0  # the last of them: nothing below it may be popped
    memo: dict[int, Any] = {}
    ops = _OPS
    proto = pos = 0
    try:
        while pos < end:
            start = pos
            code = data[pos]
            pos += 1
            if code == 0x94:  # MEMOIZE: after nearly every object from protocol 4 on
                if len(stack) <= fence:
                    raise UnreadablePickle(f"MEMOIZE of nothing at byte {start}")
                memo[len(memo)] = stack[-1]
                continue
            if code == 0x8C:  # SHORT_BINUNICODE
                pos += 1 + data[pos]
                stack.append(start)
                continue
            if code == 0x71:  # BINPUT: after every object up to protocol 3
                if len(stack) <= fence:
                    raise UnreadablePickle(f"BINPUT of nothing at byte {start}")
                memo[data[pos]] = stack[-1]
                pos += 1
                continue
            if code == 0x68:  # BINGET
                value = memo.get(data[pos], memo)
                if value is memo:
                    raise UnreadablePickle(f"memo index {data[pos]} not set at byte {start}")
                stack.append(value)
                pos += 1
                continue
            op = ops[code]
            if op is None:
                raise UnreadablePickle(f"unknown opcode {code:#04x} at byte {start}")
            name, length, kind, pops, pushes = op
            if kind == _RUN:
                width = 1 + (length or 0)
                count = 1
                if data[start + width : start + width + 1] == data[start:pos]:  # a run: many at once
                    strided = data[start : start + width * _RUN_LENGTH : width]
                    count = len(strided) - len(strided.lstrip(strided[:1]))
                pos = start + width * count
                stack += [_UNKNOWN] * count
                continue
            arg: Any = None
            if length is not None:
                pos, arg = _argument(data, view, pos, end, name, length)
            if kind == _PLAIN:
                if pops:
                    if len(stack) - pops < fence:
                        raise UnreadablePickle(f"{name} at byte {start}: stack underflow")
                    del stack[-pops:]
                if pushes:
                    stack.append(_UNKNOWN)
            elif kind == _TEXT:
                stack.append(start)
            elif kind == _MARK:
                marks.append(len(stack))
                fence = len(stack)
            elif kind == _TO_MARK:
                if not marks:
                    raise UnreadablePickle(f"{name} without a MARK at byte {start}")
                del stack[marks.pop() :]
                fence = marks[-1] if marks else 0
                if pops:  # APPENDS, SETITEMS, ADDITEMS: the container below the MARK
                    _pop(stack, fence, pops)
                stack.append(_UNKNOWN)
            elif name == "STOP":
                _pop(stack, fence, 1)
                return
            else:
                proto = yield from _special(data, view, name, arg, start, stack, marks, memo, proto)
                fence = marks[-1] if marks else 0
    except IndexError:  # a length or a line that runs past the end
        raise UnreadablePickle("truncated") from None
    raise UnreadablePickle("truncated: no STOP opcode")


def _special(
    data: bytes,
    view: memoryview,
    name: str,
    arg: Any,
    start: int,
    stack: list[Any],
    marks: list[int],
    memo: dict[int, Any],
    proto: int,
) -> Iterator[Global]:
    """One opcode that imports or touches the memo; returns the protocol (PROTO sets it)."""
    fence = marks[-1] if marks else 0
    if name in ("GLOBAL", "INST"):
        if name == "INST":
            if not marks:
                raise UnreadablePickle(f"INST without a MARK at byte {start}")
            del stack[marks.pop() :]
        yield Global(*mapped(*arg, proto), name, start)
        stack.append(_UNKNOWN)
    elif name == "STACK_GLOBAL":
        module, attribute = (_string(data, view, v) for v in _pop(stack, fence, 2))
        if module is not None and attribute is not None:
            yield Global(*mapped(module, attribute, proto), name, start)
        else:
            yield Global(None, None, name, start)
        stack.append(_UNKNOWN)
    elif name in ("EXT1", "EXT2", "EXT4"):
        target = copyreg._inverted_registry.get(arg)  # type: ignore[attr-defined]
        if target is None:
            raise UnreadablePickle(f"unregistered extension code {arg} at byte {start}")
        yield Global(target[0], target[1], name, start)
        stack.append(_UNKNOWN)
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        if arg < 0:
            raise UnreadablePickle(f"negative memo index at byte {start}")
        memo[arg] = _top(stack, fence)
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        if arg not in memo:
            raise UnreadablePickle(f"memo index {arg} not set at byte {start}")
        stack.append(memo[arg])
    elif name == "DUP":
        stack.append(_top(stack, fence))
    elif name == "POP":
        if marks and fence == len(stack):  # POP right after a MARK pops the MARK
            marks.pop()
        else:
            _pop(stack, fence, 1)
    else:  # PROTO
        if start:
            raise UnreadablePickle(f"PROTO at byte {start}: a pickle names its protocol first")
        return arg
    return proto


def _argument(data: bytes, view: memoryview, pos: int, end: int, name: str, length: int) -> tuple[int, Any]:
    """The position after an opcode's argument, and the argument: an int for fixed widths, a
    memoryview for counted payloads (never copied), what the scan needs of a text line."""
    if length >= 0:
        if pos + length > end:
            raise UnreadablePickle(f"{name} truncated at byte {pos - 1}")
        return pos + length, int.from_bytes(data[pos : pos + length], "little", signed=name == "EXT4")
    if length == _LINE:
        parts = []
        for _ in range(2 if name in ("GLOBAL", "INST") else 1):
            stop = data.find(b"\n", pos)
            if stop < 0:
                raise UnreadablePickle(f"{name} without its newline at byte {pos - 1}")
            parts.append(data[pos:stop])
            pos = stop + 1
        return pos, _line_argument(name, parts)
    width, signed = _LENGTHS[length]
    if pos + width > end:
        raise UnreadablePickle(f"{name} truncated at byte {pos - 1}")
    size = int.from_bytes(data[pos : pos + width], "little", signed=signed)
    pos += width
    if size < 0 or pos + size > end:
        raise UnreadablePickle(f"{name} truncated or of negative length at byte {pos - width - 1}")
    return pos + size, view[pos : pos + size]


def _line_argument(name: str, parts: list[bytes]) -> Any:
    """A text opcode's argument as the unpickler reads it; only what the scan needs is decoded."""
    if name in ("GLOBAL", "INST"):
        try:
            return parts[0].decode("utf-8"), parts[1].decode("utf-8")
        except UnicodeDecodeError:
            raise UnreadablePickle(f"{name} names a module that is not UTF-8") from None
    if name in ("GET", "PUT"):
        try:
            return int(parts[0])
        except ValueError:
            raise UnreadablePickle(f"{name} index {parts[0][:20]!r} is not a number") from None
    return None  # INT, LONG, FLOAT, STRING, UNICODE, PERSID: values the scan does not track


def _string(data: bytes, view: memoryview, value: Any) -> str | None:
    """The ``str`` the unpickler gets from the string constant at offset ``value``; None for any
    other value, and for a constant it would not decode to a ``str``."""
    if not isinstance(value, int):
        return None
    name, length, *_ = _OPS[data[value]]  # type: ignore[misc]
    payload = _argument(data, view, value + 1, len(data), name, length)[1]
    encoding = _TEXT_OPS[name]
    try:
        return bytes(payload).decode(encoding, "surrogatepass" if encoding == "utf-8" else "strict")
    except UnicodeDecodeError:
        return None


def _top(stack: list[Any], fence: int) -> Any:
    if len(stack) <= fence:
        raise UnreadablePickle("stack underflow")
    return stack[-1]


def _pop(stack: list[Any], fence: int, count: int) -> list[Any]:
    """Pop ``count`` values; going below the last MARK is an underflow, as in the unpickler."""
    if len(stack) - count < fence:
        raise UnreadablePickle("stack underflow")
    popped = stack[-count:]
    del stack[-count:]
    return popped
