"""Load and dump CDI specs, strictly: YAML (libyaml, event level) and JSON.

Loading = parse -> model (`cdi.yamlfast` straight from libyaml events for the common case;
otherwise `cdi.yamlload` or json to plain data, then `cdi.schema.spec_from_data`) ->
`cdi.validate.validate_spec`. Both roads accept the same documents and build equal specs;
the plain-data road is the definition and gives the precise error messages.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from cdi.dump import dump_data, dump_spec, edits_to_data, spec_to_data, yaml_string
from cdi.errors import SpecError
from cdi.names import quote
from cdi.schema import describe, spec_from_data
from cdi.spec import Spec
from cdi.validate import validate_spec
from cdi.yamlfast import Unusual, parse_spec_fast
from cdi.yamlload import YamlError, load_yaml

__all__ = [
    "FORMATS",
    "decode",
    "describe",
    "dump_data",
    "dump_spec",
    "edits_to_data",
    "guess_format",
    "load_spec",
    "parse_spec",
    "spec_from_data",
    "spec_to_data",
    "yaml_string",
]

FORMATS = ("yaml", "json")


class _DuplicateKey(Exception):
    pass


class _NotJson(Exception):
    pass


def _not_json_constant(name: str) -> object:
    # Python's json accepts NaN and Infinity; JSON does not (and YAML reads them as strings).
    raise _NotJson(f"{name} is not a JSON value")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"duplicate key {quote(key)}")
            seen.add(key)
    return result


def decode(data: bytes | str, source: str, fmt: str | None = None) -> object:
    """Parse YAML or JSON into plain data (no schema); SpecError on syntax errors."""
    if fmt == "json" or (fmt is None and guess_format(source) == "json"):
        _refuse_go_yaml_escapes(data, source)
        try:
            return json.loads(
                data, object_pairs_hook=_json_object, parse_constant=_not_json_constant
            )
        except _DuplicateKey as error:
            raise SpecError(source, f"invalid JSON: {error}") from None
        except _NotJson as error:
            reason = f"invalid JSON: {error}"
        except json.JSONDecodeError as error:
            reason = f"invalid JSON: line {error.lineno}, column {error.colno}: {error.msg}"
        except UnicodeDecodeError as error:
            reason = f"invalid JSON: not UTF-8 text ({error.reason})"
        if fmt == "json":
            raise SpecError(source, reason)
        # The reference reads `.json` files with its YAML decoder, so YAML content is fine.
        try:
            return load_yaml(data)
        except YamlError:
            raise SpecError(source, reason) from None
    fmt = fmt or "yaml"
    if fmt != "yaml":
        raise SpecError(source, f"unknown spec format {quote(fmt)} (yaml or json)")
    try:
        return load_yaml(data)
    except YamlError as error:
        raise SpecError(source, f"invalid YAML: {error}") from None


# A \uD800-\uDFFF or \/ escape that is not itself escaped (an even run of backslashes
# before it): valid JSON, but the reference reads JSON with go-yaml v2, which rejects both.
_GO_YAML_BAD_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\(?:u[dD][89a-fA-F][0-9a-fA-F]{2}|/)")


def _refuse_go_yaml_escapes(data: bytes | str, source: str) -> None:
    r"""JSON allows `\ud83d\ude00` pairs and `\/`, but the reference reads JSON with its YAML
    decoder, which rejects both: such a file would work here and fail in containerd."""
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    if "\\" not in text:
        return
    match = _GO_YAML_BAD_ESCAPE.search(text)
    if match is not None:
        line = text.count("\n", 0, match.start()) + 1
        escape = "\\" + match.group().lstrip("\\")
        raise SpecError(
            source,
            f"invalid JSON: line {line}: escape {escape} (the reference library decodes JSON "
            "with a YAML decoder, which rejects it; write the character itself)",
        )


def guess_format(source: str) -> str:
    """`json` for a `.json` name, else `yaml` (the reference decodes both with one decoder)."""
    return "json" if source.endswith(".json") else "yaml"


def parse_spec(data: bytes | str, source: str, fmt: str | None = None) -> Spec:
    """Decode and fully validate a spec; SpecError (naming `source`) when anything is wrong."""
    spec = None
    if (fmt or guess_format(source)) == "yaml":
        # Unusual: the general road below decides, and words any error.
        with contextlib.suppress(Unusual):
            spec = parse_spec_fast(data)
    if spec is None:
        spec = spec_from_data(decode(data, source, fmt), source)
    validate_spec(spec, source)
    return spec


def load_spec(path: str) -> Spec:
    """Read, decode and validate the spec file at `path` (format from the extension)."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise SpecError(path, f"cannot read the file: {error.strerror or error}") from None
    return parse_spec(data, path)
