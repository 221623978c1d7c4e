"""Reading YAML as the reference library does (go-yaml v2, YAML 1.1), from PyYAML's parser events.

The events come from libyaml through PyYAML's public loader API (`yaml.CBaseLoader`), or from
PyYAML's pure-Python parser when PyYAML was built without libyaml (same events, slower).
Readers pull events one by one (`Get`); this module gives them what every reader shares:
plain scalars typed with go-yaml v2's rules (not PyYAML's: `0:1` stays a string, `y`/`n` are
booleans, `0o17` and `1e3` are numbers), tags, mapping keys, merge keys, one document per
file, aliases expanded within a budget, and errors that say where (line, column).

Strings come out as `str`, integers as `int`, null as None; booleans, floats and timestamps as
`Yaml11Scalar` so that errors can quote what was written (`on`, `0.5`). `load_yaml` reads a
whole document as plain data; `cdi.codec` reads specs straight into the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import yaml
from yaml import events as ev

from cdi.errors import quote

# PyYAML's public parser API: libyaml's when PyYAML has it, else the pure-Python one.
LOADER: Any = getattr(yaml, "CBaseLoader", None) or yaml.BaseLoader

SCALAR = ev.ScalarEvent
MAP_START = ev.MappingStartEvent
MAP_END = ev.MappingEndEvent
SEQ_START = ev.SequenceStartEvent
SEQ_END = ev.SequenceEndEvent
ALIAS = ev.AliasEvent
Get = Callable[[], Any]
T = TypeVar("T")


class YamlError(Exception):
    """Bad YAML; the message says what and where (line, column)."""


class Aliased(Exception):
    """A reader met an alias: read the document again with aliases expanded."""


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

# Plain scalars that are never strings (booleans, null, infinities, not-a-number), and the
# characters a number or date can start with: a plain scalar that is neither is a string.
# Readers test these inline before calling `resolve_plain` on their hot paths.
NON_STRING_WORDS = frozenset((*_SPECIAL, *_NULL))
NUMBER_START = frozenset("0123456789-+.")

# Go's strconv.ParseInt(s, 0, 64) syntax (after go-yaml removed every '_').
_GO_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)\Z")
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_GO_DOT_FLOAT = re.compile(r"\.[0-9](?:_?[0-9])*(?:[eE][-+]?[0-9](?:_?[0-9])*)?\Z")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:\Z|[Tt ])")
_HAS_DIGIT = re.compile("[0-9]").search
_INF_VALUE = float("inf")
_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1


def _go_int(text: str) -> int:
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
    if text[0] not in NUMBER_START or _HAS_DIGIT(text) is None:
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
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
    if _GO_FLOAT.match(plain) is not None:
        return _float_or_string(text, plain)
    if _TIMESTAMP.match(text) is not None:
        return Yaml11Scalar("timestamp", text, text)
    return text


MAP_TAGS = frozenset(("!", "tag:yaml.org,2002:map"))
SEQ_TAGS = frozenset(("!", "tag:yaml.org,2002:seq"))
_STR_TAGS = frozenset(("!", "tag:yaml.org,2002:str"))
# Total nodes that aliases may expand to, against "billion laughs" documents.
_ALIAS_BUDGET = 1_000_000


def fail(event: Any, reason: str) -> NoReturn:
    """Raise YamlError for `event`, at its line and column."""
    raise YamlError(f"{position(event)}: {reason}")


def position(event: Any) -> str:
    """Where `event` starts: `line L, column C` (1-based)."""
    return _at(event.start_mark)


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def scalar(event: Any) -> object:
    """The value of a ScalarEvent: plain scalars typed, quoted ones strings, tags checked."""
    tag = event.tag
    text: str = event.value
    if tag is None:
        return resolve_plain(text) if event.implicit[0] else text
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
        fail(event, f"unsupported YAML tag {quote(tag)}")
    fail(event, f"value {quote(text)} does not match its tag {quote(tag)}")


def check_tag(event: Any) -> None:
    """Refuse a tag on a mapping or sequence other than its own."""
    tag = event.tag
    if tag is not None and tag not in (MAP_TAGS if type(event) is MAP_START else SEQ_TAGS):
        fail(event, f"unsupported YAML tag {quote(tag)}")


class _Merge:
    __slots__ = ()


MERGE: Any = _Merge()  # mapping_key's answer for a merge key `<<`


def mapping_key(event: Any) -> Any:
    """The string of a mapping key event, or MERGE for a merge key; YamlError otherwise."""
    kind = type(event)
    if kind is SCALAR:
        if event.value == "<<" and event.tag is None and event.implicit[0]:
            return MERGE
        value = scalar(event)
        if type(value) is str:
            return value
        if value is None:
            what = "null"
        elif type(value) is int:
            what = f"{event.value} (an integer)"
        else:
            what = f"{event.value} (a YAML {value.kind})"  # type: ignore[attr-defined]
        fail(event, f"mapping key {what} is not a string")
    if kind is ALIAS:
        raise Aliased
    fail(event, "a mapping key must be a string, not a mapping or list")


def merge_sources(get: Get, fill: Callable[[], None]) -> None:
    """Read the value of a merge key `<<`: `fill()` reads the pairs of each mapping merged.

    go-yaml v2 in strict mode sets merged keys one by one, so a key present on both sides is
    a duplicate (which makes the order of a list of mappings matter only to the message).
    """
    value = get()
    if type(value) is MAP_START:
        check_tag(value)
        fill()
        return
    if type(value) is SEQ_START:
        check_tag(value)
        while True:
            item = get()
            if type(item) is SEQ_END:
                return
            if type(item) is not MAP_START:
                break
            check_tag(item)
            fill()
        value = item
    if type(value) is ALIAS:
        raise Aliased
    fail(value, "the value of a merge key '<<' must be a mapping or a list of mappings")


def _expanding(get: Get) -> Iterator[Any]:
    """The events of `get` with each alias replaced by the events of its anchored node."""
    anchors: dict[str, tuple[list[Any], int]] = {}
    recording: list[list[Any]] = []  # [anchor, events, depth] of anchored nodes not yet ended
    budget = _ALIAS_BUDGET
    while True:
        event = get()
        kind = type(event)
        if kind is ALIAS:
            found = anchors.get(event.anchor)
            if found is None:
                fail(event, f"unknown YAML alias *{event.anchor}")
            events, nodes = found
            budget -= nodes
            if budget < 0:
                fail(event, "too many YAML alias expansions (more than 1,000,000 nodes)")
            for open_node in recording:
                open_node[1].extend(events)
            yield from events
            continue
        for open_node in recording:
            open_node[1].append(event)
        if kind is MAP_START or kind is SEQ_START:
            for open_node in recording:
                open_node[2] += 1
            if event.anchor is not None:
                recording.append([event.anchor, [event], 1])
        elif kind is MAP_END or kind is SEQ_END:
            for open_node in recording:
                open_node[2] -= 1
            while recording and recording[-1][2] == 0:
                anchor, events, _ = recording.pop()
                anchors[anchor] = (events, sum(type(e) not in (MAP_END, SEQ_END) for e in events))
        elif kind is SCALAR and event.anchor is not None:
            anchors[event.anchor] = ([event], 1)
        yield event


def _has_slash_escape(data: bytes | str) -> bool:
    return (b"\\/" in data) if isinstance(data, bytes) else ("\\/" in data)


def slash_escape_error(data: bytes | str) -> str | None:
    """Where a double-quoted scalar uses the `\\/` escape, which libyaml 0.2.2+ accepts but
    go-yaml v2 (the reference's decoder) rejects ("found unknown escape character")."""
    if not _has_slash_escape(data):
        return None
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        text = text.removeprefix("\ufeff")
        get_token: Any = LOADER(text).get_token
        while True:
            token = get_token()
            if type(token) is yaml.StreamEndToken:
                return None
            if type(token) is yaml.ScalarToken and token.style == '"':
                start, end = token.start_mark, token.end_mark
                for escape in re.finditer(r"\\(.)", text[start.index : end.index], re.S):
                    if escape.group(1) == "/":
                        return (
                            f"{_at(start)}: unknown escape "
                            "\\/ in a double-quoted string (the reference library's YAML "
                            "decoder rejects it; write / alone)"
                        )
    except (UnicodeDecodeError, yaml.YAMLError):
        return None  # the parse proper reports what is wrong


def _one_line(message: str) -> str:
    # PyYAML's messages span lines ("\n  in <byte string>, position 106"); ours are one line.
    return " ".join(message.split())


def read_document(data: bytes | str, read: Callable[[Get, Any], T]) -> T | None:
    """`read(get, root_event)` on the single document of `data`; None when there is none.

    A second document is an error unless it is empty. YAML errors (the parser's and the
    reader's) raise YamlError; the reader's own exceptions pass through.
    """
    escape_error = slash_escape_error(data)
    if escape_error is not None:
        raise YamlError(escape_error)
    try:
        try:
            return _document(LOADER(data).get_event, read)
        except Aliased:
            return _document(_expanding(LOADER(data).get_event).__next__, read)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{_at(mark)}: " if mark is not None else ""
        raise YamlError(f"{where}{_one_line(error.problem or str(error))}") from None
    except yaml.YAMLError as error:
        raise YamlError(_one_line(str(error))) from None
    except RecursionError:
        raise YamlError("nested too deeply") from None


def _document(get: Get, read: Callable[[Get, Any], T]) -> T | None:
    get()  # StreamStart
    if type(get()) is ev.StreamEndEvent:
        return None
    try:
        value = read(get, get())
    except (Aliased, YamlError, yaml.YAMLError):
        raise
    except Exception:
        # The reader's own error; but a document that is not YAML at all is the bigger news.
        while type(get()) is not ev.StreamEndEvent:
            pass
        raise
    get()  # DocumentEnd
    while type(get()) is ev.DocumentStartEvent:
        second = get()
        empty = type(second) is SCALAR and second.tag is None and second.implicit[0]
        if not (empty and second.value in _NULL):
            fail(
                second,
                "a second YAML document: a CDI spec file holds exactly one "
                "(the reference library silently ignores all but the first)",
            )
        get()  # DocumentEnd
    return value


def _any(get: Get, event: Any) -> object:
    """The node that starts with `event` as plain data."""
    kind = type(event)
    if kind is SCALAR:
        return scalar(event)
    if kind is MAP_START:
        check_tag(event)
        mapping: dict[str, object] = {}
        _pairs(get, mapping, False)
        return mapping
    if kind is SEQ_START:
        check_tag(event)
        items = []
        while type(item := get()) is not SEQ_END:
            items.append(_any(get, item))
        return items
    if kind is ALIAS:
        raise Aliased
    fail(event, "unexpected YAML event")


def _pairs(get: Get, mapping: dict[str, object], merging: bool) -> None:
    while type(key := get()) is not MAP_END:
        name = mapping_key(key)
        if name is MERGE:
            merge_sources(get, lambda: _pairs(get, mapping, True))
            continue
        if name in mapping:
            fail(key, duplicate_key(name, merging))
        mapping[name] = _any(get, get())


def duplicate_key(name: str, merging: bool) -> str:
    """The message for a key given twice in one mapping."""
    return f"duplicate key {quote(name)}" + (" (from the merge key '<<')" if merging else "")


def load_yaml(data: bytes | str) -> object:
    """The single document of `data` as plain data (see module doc); YamlError if bad."""
    return read_document(data, _any)
