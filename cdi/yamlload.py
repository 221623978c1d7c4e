"""Strict YAML reading: libyaml's C parser, driven at the event level.

PyYAML's own constructor is Python code and dominates load time, so we take the parser's
events and build plain dicts/lists ourselves in one loop. Plain scalars are typed with the
YAML 1.1 rules of the reference library's decoder (go-yaml v2), not PyYAML's: `0:1` stays a
string (go-yaml has no sexagesimal ints), `y`/`n` are booleans, `0o17` and `1e3` are numbers.
Strings come out as `str`, integers as `int`, null as None; booleans, floats and timestamps
come out as `Yaml11Scalar` so that errors can quote what was written (`on`, `0.5`).
Duplicate keys, non-string keys, multiple documents and unknown tags are errors here.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from typing import Any, NoReturn

import yaml
from yaml import events as ev
from yaml._yaml import CParser

from cdi.names import quote


class YamlError(Exception):
    """Bad YAML; the message says what and where (line, column)."""


class Yaml11Scalar:
    """A plain scalar that YAML 1.1 types as boolean, float or timestamp."""

    __slots__ = ("kind", "text", "value")

    def __init__(self, kind: str, text: str, value: object) -> None:
        self.kind = kind
        self.text = text
        self.value = value

    def __repr__(self) -> str:
        return f"Yaml11Scalar({self.kind!r}, {self.text!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Yaml11Scalar) and other.kind == self.kind and other.text == self.text
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.text))


_TRUE = ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")
_FALSE = ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF")
_NULL = ("", "~", "null", "Null", "NULL")
_INF = (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")
_NEG_INF = ("-.inf", "-.Inf", "-.INF")
_NAN = (".nan", ".NaN", ".NAN")

# Plain scalars with a special meaning regardless of their first character.
_SPECIAL: dict[str, object] = {}
for _word in _TRUE:
    _SPECIAL[_word] = Yaml11Scalar("boolean", _word, True)
for _word in _FALSE:
    _SPECIAL[_word] = Yaml11Scalar("boolean", _word, False)
for _word in _INF:
    _SPECIAL[_word] = Yaml11Scalar("float", _word, float("inf"))
for _word in _NEG_INF:
    _SPECIAL[_word] = Yaml11Scalar("float", _word, float("-inf"))
for _word in _NAN:
    _SPECIAL[_word] = Yaml11Scalar("float", _word, float("nan"))

# Go's strconv.ParseInt(s, 0, 64) syntax (after go-yaml removed every '_').
# Plain scalars that are never strings (booleans, null, infinities, not-a-number); public
# for the fast road in cdi.yamlfast, which must type scalars exactly as this module does.
NON_STRING_WORDS = frozenset((*_SPECIAL, *_NULL))

_GO_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)\Z")
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_GO_DOT_FLOAT = re.compile(r"\.[0-9](?:_?[0-9])*(?:[eE][-+]?[0-9](?:_?[0-9])*)?\Z")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:\Z|[Tt ])")
# A plain scalar can be a number or a date only if it starts with one of these.
NUMBER_START = _NUMBER_START = frozenset("0123456789-+.")
_HAS_DIGIT = re.compile("[0-9]").search
_INF_VALUE = float("inf")
_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1


def _go_int(text: str) -> int | None:
    sign = 1
    body = text
    if body[0] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if len(body) > 1 and body[0] == "0":
        prefix = body[1]
        if prefix in "xX":
            return sign * int(body[2:], 16)
        if prefix in "oO":
            return sign * int(body[2:], 8)
        if prefix in "bB":
            return sign * int(body[2:], 2)
        return sign * int(body[1:], 8)
    return sign * int(body)


def _float_or_string(text: str, plain: str) -> object:
    number = float(plain)
    # Go's ParseFloat fails on overflow (`1e400`), and go-yaml then keeps the string.
    if number in (_INF_VALUE, -_INF_VALUE):
        return text
    return Yaml11Scalar("float", text, number)


def resolve_plain(text: str) -> object:
    """The value of an untagged plain scalar under go-yaml v2's YAML 1.1 rules."""
    special = _SPECIAL.get(text)
    if special is not None:
        return special
    if not text or text in _NULL:
        return None
    if text[0] not in _NUMBER_START or _HAS_DIGIT(text) is None:
        return text  # numbers and dates have a digit (`--link` has none)
    if text[0] == ".":
        # go-yaml v2 hands these to strconv.ParseFloat as written: underscores only
        # between digits (`._6` stays a string), no integer or date forms.
        if _GO_DOT_FLOAT.match(text) is not None:
            return _float_or_string(text, text.replace("_", ""))
        return text
    plain = text.replace("_", "") if "_" in text else text
    if _GO_INT.match(plain) is not None:
        value = _go_int(plain)
        if value is not None and _INT64_MIN <= value <= _UINT64_MAX:
            return value
    if _GO_FLOAT.match(plain) is not None:
        return _float_or_string(text, plain)
    if _TIMESTAMP.match(text) is not None:
        return Yaml11Scalar("timestamp", text, text)
    return text


_STR_TAGS = frozenset(("!", "tag:yaml.org,2002:str"))
_MAP_TAGS = frozenset(("!", "tag:yaml.org,2002:map"))
_SEQ_TAGS = frozenset(("!", "tag:yaml.org,2002:seq"))
# Total nodes that aliases may expand to, against "billion laughs" documents.
_ALIAS_BUDGET = 1_000_000


def _tagged(event: Any) -> object:
    tag = event.tag
    text = event.value
    if tag in _STR_TAGS:
        return text
    if tag == "tag:yaml.org,2002:int":
        value = resolve_plain(text)
        if type(value) is int:
            return value
    elif tag == "tag:yaml.org,2002:bool":
        value = resolve_plain(text)
        if isinstance(value, Yaml11Scalar) and value.kind == "boolean":
            return value
    elif tag == "tag:yaml.org,2002:null":
        if text in _NULL:
            return None
    elif tag == "tag:yaml.org,2002:float":
        value = resolve_plain(text)
        if isinstance(value, Yaml11Scalar) and value.kind == "float":
            return value
        if type(value) is int:
            return Yaml11Scalar("float", text, float(value))
    else:
        _fail(event, f"unsupported YAML tag {quote(tag)}")
    _fail(event, f"value {quote(text)} does not match its tag {quote(tag)}")


def _fail(event: Any, reason: str) -> NoReturn:
    mark = event.start_mark
    raise YamlError(f"line {mark.line + 1}, column {mark.column + 1}: {reason}")


def _size(value: object, memo: dict[int, int]) -> int:
    """Nodes in `value`, counting shared (aliased) parts each time they appear."""
    known = memo.get(id(value))
    if known is not None:
        return known
    if type(value) is dict:
        total = 1 + sum(_size(item, memo) for item in value.values())
    elif type(value) is list:
        total = 1 + sum(_size(item, memo) for item in value)
    else:
        return 1
    memo[id(value)] = total
    return total


def describe_key(key: object) -> str:
    """A mapping key that is not a string, described for an error message."""
    if isinstance(key, Yaml11Scalar):
        return f"{key.text} (a YAML {key.kind})"
    if key is None:
        return "null"
    if type(key) is int:
        return f"{key} (an integer)"
    return "a mapping or list"


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector (nests; restores the previous state).

    Building a spec allocates hundreds of thousands of objects that all stay alive, so
    collections during the build would only rescan them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def has_slash_escape(data: bytes | str) -> bool:
    """Whether `data` contains the two characters `\\/` anywhere (a cheap first filter)."""
    return (b"\\/" in data) if isinstance(data, bytes) else ("\\/" in data)


def slash_escape_error(data: bytes | str) -> str | None:
    """Where a double-quoted scalar uses the `\\/` escape, which libyaml 0.2.2+ accepts but
    go-yaml v2 (the reference's decoder) rejects ("found unknown escape character")."""
    if not has_slash_escape(data):
        return None
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        text = text.removeprefix("\ufeff")
        get_token: Any = CParser(text).get_token
        while True:
            token = get_token()
            if type(token) is yaml.StreamEndToken:
                return None
            if type(token) is yaml.ScalarToken and token.style == '"':
                start, end = token.start_mark, token.end_mark
                for escape in re.finditer(r"\\(.)", text[start.index : end.index], re.S):
                    if escape.group(1) == "/":
                        return (
                            f"line {start.line + 1}, column {start.column + 1}: unknown escape "
                            "\\/ in a double-quoted string (the reference library's YAML "
                            "decoder rejects it; write / alone)"
                        )
    except (UnicodeDecodeError, yaml.YAMLError):
        return None  # the parse proper reports what is wrong


def load_yaml(data: bytes | str) -> object:
    """The single document of `data` as plain Python data (see module doc); YamlError if bad.

    The garbage collector is paused while the tree is built (see `paused_gc`).
    """
    escape_error = slash_escape_error(data)
    if escape_error is not None:
        raise YamlError(escape_error)
    try:
        with paused_gc():
            return _load(data)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise YamlError(f"{where}{_one_line(error.problem or str(error))}") from None
    except yaml.YAMLError as error:
        raise YamlError(_one_line(str(error))) from None
    except RecursionError:
        raise YamlError("aliased data nested too deeply") from None


def _one_line(message: str) -> str:
    # PyYAML's messages span lines ("\n  in <byte string>, position 106"); ours are one line.
    return " ".join(message.split())


def _load(data: bytes | str) -> object:
    scalar_event = ev.ScalarEvent
    mapping_start = ev.MappingStartEvent
    mapping_end = ev.MappingEndEvent
    sequence_start = ev.SequenceStartEvent
    sequence_end = ev.SequenceEndEvent
    special = _SPECIAL
    number_start = _NUMBER_START
    no_key = _NO_KEY
    get_event: Any = CParser(data).get_event

    stack: list[tuple[Any, bool, Any]] = []
    anchors: dict[str, object] = {}
    alias_budget = _ALIAS_BUDGET
    size_memo: dict[int, int] = {}
    root: object = _NO_KEY
    container: Any = None
    is_map = False
    key: Any = no_key
    documents = 0

    while True:
        event = get_event()
        kind = type(event)
        if kind is scalar_event:
            if event.tag is None:
                text = event.value
                if event.implicit[0]:
                    # Inline fast path of resolve_plain for the common plain string.
                    if text in special or not text or text[0] in number_start or text in _NULL:
                        value: object = resolve_plain(text)
                    else:
                        value = text
                else:
                    value = text
            else:
                value = _tagged(event)
            if event.anchor is not None:
                anchors[event.anchor] = value
        elif kind is mapping_start or kind is sequence_start:
            tag = event.tag
            if tag is not None and tag not in (_MAP_TAGS if kind is mapping_start else _SEQ_TAGS):
                _fail(event, f"unsupported YAML tag {quote(tag)}")
            new: Any = {} if kind is mapping_start else []
            if event.anchor is not None:
                anchors[event.anchor] = new
            if container is None:
                root = new
            elif is_map:
                if key is no_key:
                    _fail(event, "a mapping key must be a string, not a mapping or list")
                if key is not _MERGE:  # a merged value is merged when it ends
                    container[key] = new
            else:
                container.append(new)
            stack.append((container, is_map, key))
            container = new
            is_map = kind is mapping_start
            key = no_key
            continue
        elif kind is mapping_end or kind is sequence_end:
            finished = container
            container, is_map, key = stack.pop()
            if key is _MERGE:
                _merge(container, finished, event)
            key = no_key
            continue
        elif kind is ev.AliasEvent:
            if event.anchor not in anchors:
                _fail(event, f"unknown YAML alias *{event.anchor}")
            value = anchors[event.anchor]
            alias_budget -= _size(value, size_memo)
            if alias_budget < 0:
                _fail(event, "too many YAML alias expansions (more than 1,000,000 nodes)")
        elif kind is ev.DocumentStartEvent:
            documents += 1
            if documents > 1:
                second = get_event()
                if (
                    type(second) is scalar_event
                    and second.tag is None
                    and second.implicit[0]
                    and second.value in _NULL
                ):
                    continue
                _fail(
                    second,
                    "a second YAML document: a CDI spec file holds exactly one "
                    "(the reference library silently ignores all but the first)",
                )
            continue
        elif kind is ev.StreamEndEvent:
            break
        else:
            continue
        # A scalar or alias value: place it.
        if container is None:
            root = value
        elif is_map:
            if key is no_key:
                if type(value) is not str:
                    _fail(event, f"mapping key {describe_key(value)} is not a string")
                if (
                    value == "<<"
                    and kind is scalar_event
                    and event.tag is None
                    and (event.implicit[0])
                ):
                    key = _MERGE
                    continue
                if value in container:
                    _fail(event, f"duplicate key {quote(value)}")
                key = value
            else:
                if key is _MERGE:
                    _merge(container, value, event)
                else:
                    container[key] = value
                key = no_key
        else:
            container.append(value)
    if root is _NO_KEY:
        return None
    return root


def _merge(target: dict[str, object], value: object, event: Any) -> None:
    """A YAML 1.1 merge key (`<<: *anchor`): go-yaml v2 in strict mode sets the merged keys
    one by one, so a key present on both sides is a duplicate; of a list of mappings, the
    last is merged first."""
    if type(value) is dict:
        for key, item in value.items():
            if key in target:
                _fail(event, f"duplicate key {quote(key)} (from the merge key '<<')")
            target[key] = item
    elif type(value) is list and all(type(item) is dict for item in value):
        for item in reversed(value):
            _merge(target, item, event)
    else:
        _fail(event, "the value of a merge key '<<' must be a mapping or a list of mappings")


class _NoKey:
    __slots__ = ()


_NO_KEY: Any = _NoKey()
_MERGE: Any = _NoKey()
