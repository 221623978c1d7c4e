"""Load CDI specs: YAML or JSON text straight into the model, strictly, in one pass.

The reference decodes both formats with go-yaml v2 (a JSON file is read as YAML) and then
matches keys as Go's encoding/json does: the exact key first, else case-insensitively. Unknown
keys, two keys for one field, wrong types and out-of-range numbers are errors here; an explicit
null means "not set" (Go leaves the zero value). One reader does all of it over the parser's
events (`cdi.yaml11`), building the attrs objects as it goes, with field tables derived from
the model's declarations (`cdi.spec`). Errors name the file, the field path, the value and
where it is (line, column). `parse_spec` then applies every rule (`cdi.validate`).
"""

from __future__ import annotations

import os
from typing import Any

from cdi import yaml11
from cdi.errors import SpecError, describe, quote
from cdi.files import read_regular_file
from cdi.spec import (
    SPEC_FORMATS,
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    IntelRdt,
    Mount,
    Spec,
    Wire,
    declared,
)
from cdi.validate import validate_spec
from cdi.yaml11 import (
    ALIAS,
    MAP_END,
    MAP_START,
    MERGE,
    NON_STRING_WORDS,
    NUMBER_START,
    SCALAR,
    SEQ_END,
    SEQ_START,
    Aliased,
    Get,
    Yaml11Scalar,
    YamlError,
    resolve_plain,
    scalar,
)

# How a field is read (from its declaration).
_STR, _INT, _BOOL, _STRS, _UINTS, _MAP, _OBJ, _OBJS = range(8)
_RANGES = {Wire.INT64: (-(1 << 63), (1 << 63) - 1), Wire.UINT32: (0, (1 << 32) - 1)}
# What error messages call a mapping of each class.
_NOUNS = {
    Spec: "the spec",
    Device: "a device",
    ContainerEdits: "containerEdits",
    DeviceNode: "a device node",
    Mount: "a mount",
    Hook: "a hook",
    IntelRdt: "intelRdt",
}


class _Schema:
    """A model class as the reader sees it: key -> (attribute, how to read, argument)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.what = _NOUNS[cls]
        self.fields: dict[str, tuple[str, int, Any]] = {}
        # Set after reading when left out or null: required strings ("", as Go leaves them)
        # and nested objects that are never None.
        fixups: list[tuple[str, object]] = []
        for item in declared(cls):
            field = item.field
            self.fields[field.key] = (item.attr, *_reader(field.wire, field.many, field.of))
            if item.required:
                fixups.append((item.attr, ""))
            elif field.wire is Wire.OBJECT and not field.many and item.default is not None:
                fixups.append((item.attr, item.default))
        self.fixups = tuple(fixups)
        self.folded = {key.lower(): key for key in self.fields}
        # Errors inside a device say which device by its name, once the name is known.
        self.label = "name" if cls is Device else None


def _reader(wire: Wire, many: bool, of: type | None) -> tuple[int, Any]:
    if wire is Wire.OBJECT:
        return (_OBJS if many else _OBJ), _Schema(of)  # type: ignore[arg-type]
    if many:
        return (_UINTS, None) if wire is Wire.UINT32 else (_STRS, None)
    if wire is Wire.STRING:
        return _STR, None
    if wire is Wire.BOOL:
        return _BOOL, None
    if wire is Wire.STRING_MAP:
        return _MAP, None
    return _INT, (*_RANGES[wire], wire.value)


_SPEC = _Schema(Spec)


class _Bad(Exception):
    """A value that does not fit its field; `path` and `where` grow as it propagates up."""

    def __init__(self, reason: str, event: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event = event
        self.path = ""  # the field path below `where`, e.g. `.containerEdits.env[1]`
        self.where: str | None = None  # set by the device list: `device "x"` or `devices[3]`
        self.label: str | None = None  # the name of the device being read, once known


def _located(value: Any, key: Any) -> Any:
    """The event an error about mapping value `value` points at: its key when the value is
    empty (`{a: }`), since libyaml and PyYAML's pure parser place an empty flow value at
    different columns, but agree on where its key is."""
    return key if type(value) is SCALAR and not value.value and value.implicit[0] else value


class _Reader:
    """Reads one document's events into the model."""

    def __init__(self, get: Get, json: bool) -> None:
        self.get = get
        self.json = json

    # ------------------------------------------------------------------- scalars, slow paths

    def describe(self, event: Any) -> str:
        """The value of `event` as an error message shows it."""
        kind = type(event)
        if kind is SCALAR:
            return describe(scalar(event), self.json)
        if kind is ALIAS:
            raise Aliased
        return "a mapping" if kind is MAP_START else "a list"

    def expected(self, what: str, event: Any) -> _Bad:
        hint = ""
        if type(event) is SCALAR and what == Wire.STRING.value:
            value = scalar(event)
            if type(value) is int or isinstance(value, Yaml11Scalar):
                hint = f" (quote it: {quote(event.value)})"
        return _Bad(f"expected {what}, got {self.describe(event)}{hint}", event)

    def string(self, event: Any) -> str | None:
        """A string value; None for null."""
        if type(event) is SCALAR:
            value = scalar(event)
            if type(value) is str or value is None:
                return value
        raise self.expected(Wire.STRING.value, event)

    def integer(self, event: Any, low: int, high: int, what: str) -> int | None:
        """An integer value in [low, high]; None for null."""
        if type(event) is SCALAR:
            value = scalar(event)
            if value is None:
                return None
            if type(value) is int:
                if low <= value <= high:
                    return value
                raise _Bad(f"{value} is out of range for {what} ({low} to {high})", event)
        raise self.expected(what, event)

    def boolean(self, event: Any) -> bool | None:
        """A boolean value (any YAML 1.1 spelling); None for null."""
        if type(event) is SCALAR:
            value = scalar(event)
            if value is None:
                return None
            if isinstance(value, Yaml11Scalar) and value.kind == "boolean":
                return bool(value.value)
        raise self.expected(Wire.BOOL.value, event)

    def start(self, event: Any, kind: type, what: str) -> bool:
        """True at the start of a `kind` collection, False at null; _Bad otherwise."""
        if type(event) is kind:
            yaml11.check_tag(event)
            return True
        if type(event) is SCALAR and scalar(event) is None:
            return False
        raise self.expected(what, event)

    # ----------------------------------------------------------------------------- lists

    def strings(self, event: Any) -> tuple[str, ...] | None:
        if not self.start(event, SEQ_START, "a list of strings"):
            return None
        get = self.get
        items: list[str] = []
        while True:
            item = get()
            if type(item) is SCALAR and item.tag is None:
                text = item.value
                if not item.implicit[0] or (
                    text and text[0] not in NUMBER_START and text not in NON_STRING_WORDS
                ):
                    items.append(text)
                    continue
            elif type(item) is SEQ_END:
                return tuple(items)
            try:
                value = self.string(item)
                if value is None:
                    raise self.expected(Wire.STRING.value, item)
            except _Bad as bad:
                bad.path = f"[{len(items)}]"
                raise
            items.append(value)

    def uints(self, event: Any) -> tuple[int, ...] | None:
        what = Wire.UINT32.value
        if not self.start(event, SEQ_START, "a list of unsigned 32-bit integers"):
            return None
        low, high = _RANGES[Wire.UINT32]
        get = self.get
        items: list[int] = []
        while type(item := get()) is not SEQ_END:
            try:
                # A null item is Go's zero value, 0, as in the reference (ignored at injection).
                items.append(self.integer(item, low, high, what) or 0)
            except _Bad as bad:
                bad.path = f"[{len(items)}]"
                raise
        return tuple(items)

    def objects(self, event: Any, schema: _Schema) -> tuple[Any, ...] | None:
        if not self.start(event, SEQ_START, f"a list of {schema.what[2:]}s"):
            return None
        get = self.get
        items: list[Any] = []
        append = items.append
        while type(item := get()) is not SEQ_END:
            try:
                value = self.object(item, schema)
                if value is None:
                    raise self.expected(f"a mapping ({schema.what})", item)
                append(value)
            except _Bad as bad:
                if schema.label is None:
                    bad.path = f"[{len(items)}]{bad.path}"
                elif bad.where is None:
                    label = bad.label
                    bad.where = f"device {quote(label)}" if label else f"devices[{len(items)}]"
                raise
        return tuple(items)

    # -------------------------------------------------------------------------- mappings

    def string_map(self, event: Any) -> dict[str, str] | None:
        if not self.start(event, MAP_START, Wire.STRING_MAP.value):
            return None
        result: dict[str, str] = {}
        self.string_pairs(result, False)
        return result

    def string_pairs(self, result: dict[str, str], merging: bool) -> None:
        get = self.get
        while type(key := get()) is not MAP_END:
            name = yaml11.mapping_key(key)
            if name is MERGE:
                yaml11.merge_sources(get, lambda: self.string_pairs(result, True))
                continue
            if name in result:
                yaml11.fail(key, yaml11.duplicate_key(name, merging))
            value = get()
            text = self.string(value)
            if text is None:
                bad = self.expected(Wire.STRING.value, value)
                bad.event = _located(value, key)
                bad.path = f"[{quote(name)}]"
                raise bad
            result[name] = text

    def object(self, event: Any, schema: _Schema) -> Any:
        """The model object of the mapping that starts with `event`; None for null."""
        if (type(event) is not MAP_START or event.tag is not None) and not self.start(
            event, MAP_START, f"a mapping ({schema.what})"
        ):
            return None
        kwargs: dict[str, Any] = {}
        try:
            self.fields(kwargs, schema, False, None)
        except _Bad as bad:
            if schema.label is not None:
                label = kwargs.get(schema.label)
                bad.label = label if type(label) is str else None
            raise
        for attr, zero in schema.fixups:
            if kwargs.get(attr) is None:
                kwargs[attr] = zero
        return schema.cls(**kwargs)

    def fields(
        self, kwargs: dict[str, Any], schema: _Schema, merging: bool, folded: dict[str, str] | None
    ) -> dict[str, str] | None:
        """Read the pairs of a mapping into `kwargs` (null values as None) up to its end.

        `folded` records keys matched case-insensitively (attribute -> key as written), to
        word a field given twice; it is returned, and shared with merged mappings.
        """
        get = self.get
        table = schema.fields
        while True:
            key = get()
            if type(key) is SCALAR and key.tag is None and key.value in table:
                name = key.value  # a plain or quoted word: that string
                attr, how, arg = table[name]
            elif type(key) is MAP_END:
                return folded
            else:
                name = yaml11.mapping_key(key)
                if name is MERGE:

                    def merged() -> None:
                        nonlocal folded
                        folded = self.fields(kwargs, schema, True, folded)

                    yaml11.merge_sources(get, merged)
                    continue
                exact = name if name in table else schema.folded.get(name.lower())
                if exact is None:
                    raise _Bad(
                        f"unknown field {quote(name)} in {schema.what} (known: {', '.join(table)})",
                        key,
                    )
                attr, how, arg = table[exact]
                if exact != name:
                    folded = folded or {}
                    folded[attr] = name
            if attr in kwargs:
                if folded is not None and attr in folded:  # this key or the first one
                    raise _Bad(
                        f"field {quote(name)} given twice (keys match case-insensitively)", key
                    )
                yaml11.fail(key, yaml11.duplicate_key(name, merging))
            value = get()
            try:
                if how is _STR:
                    # The hottest lines of a load: a plain or quoted string.
                    if type(value) is SCALAR and value.tag is None:
                        text = value.value
                        if (
                            not value.implicit[0]
                            or (
                                text
                                and text[0] not in NUMBER_START
                                and text not in NON_STRING_WORDS
                            )
                            or type(resolve_plain(text)) is str
                        ):
                            kwargs[attr] = text
                            continue
                    kwargs[attr] = self.string(value)
                elif how is _INT:
                    if type(value) is SCALAR and value.tag is None and value.implicit[0]:
                        text = value.value
                        if text.isdigit() and text.isascii() and text[0] != "0" and len(text) < 10:
                            kwargs[attr] = int(text)  # < 10 digits: in range for both kinds
                            continue
                    kwargs[attr] = self.integer(value, *arg)
                elif how is _STRS:
                    kwargs[attr] = self.strings(value)
                elif how is _OBJS:
                    kwargs[attr] = self.objects(value, arg)
                elif how is _OBJ:
                    kwargs[attr] = self.object(value, arg)
                elif how is _UINTS:
                    kwargs[attr] = self.uints(value)
                elif how is _MAP:
                    kwargs[attr] = self.string_map(value)
                else:
                    kwargs[attr] = self.boolean(value)
            except _Bad as bad:
                bad.event = _located(bad.event, key) if bad.event is value else bad.event
                if bad.where is None:
                    bad.path = f".{name}{bad.path}"
                raise

    # -------------------------------------------------------------------------- the spec

    def spec(self, root: Any) -> Spec | None:
        """The Spec of the document whose root node starts with `root`; None if empty."""
        if type(root) is not MAP_START:
            if type(root) is SCALAR and scalar(root) is None:
                return None
            raise _Bad(f"the top level must be a mapping, got {self.describe(root)}", root)
        spec: Spec = self.object(root, _SPEC)
        return spec


def decode_spec(data: bytes | str, source: str) -> Spec:
    """The Spec in YAML or JSON `data`, not validated; SpecError naming `source` if it
    cannot be read (syntax, unknown or duplicate keys, wrong types)."""
    json = SPEC_FORMATS.get(os.path.splitext(source)[1]) == "json"
    try:
        spec = yaml11.read_document(data, lambda get, root: _Reader(get, json).spec(root))
    except YamlError as error:
        raise SpecError(source, f"invalid {'JSON' if json else 'YAML'}: {error}") from None
    except _Bad as bad:
        path = bad.path.lstrip(".")
        where = f"{bad.where}: {path}" if bad.where and path else bad.where or path
        reason = f"{bad.reason} ({yaml11.position(bad.event)})"
        raise SpecError(source, reason, where) from None
    if spec is None:
        raise SpecError(source, "no spec data (empty file or empty YAML document)")
    return spec


def parse_spec(data: bytes | str, source: str) -> Spec:
    """Decode and fully validate a spec; SpecError (naming `source`) when anything is wrong."""
    spec = decode_spec(data, source)
    validate_spec(spec, source)
    return spec


def load_spec(path: str) -> Spec:
    """Read (a regular file only: `cdi.files`), decode and validate the spec file at `path`."""
    try:
        data = read_regular_file(path)
    except OSError as error:
        raise SpecError(path, f"cannot read the file: {error.strerror or error}") from None
    return parse_spec(data, path)
