"""One road from YAML to the model, on two parsers: libyaml (PyYAML's C loader) and PyYAML's
pure-Python parser, the fallback when PyYAML was built without libyaml. On any document, even a
hostile one, both give an equal Spec or both refuse it (with the same message unless the
parsers word a syntax error differently); nothing but SpecError ever comes out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdi import codec, dump, yaml11
from cdi.errors import SpecError
from cdi.spec import ContainerEdits, Device, DeviceNode, Hook, IntelRdt, Mount, Spec, declared
from cdi.yaml11 import load_yaml
from tests.cdi.test_roundtrip import specs


def outcome(text: str) -> Spec | str:
    try:
        return codec.decode_spec(text, "x.yaml")
    except SpecError as error:
        return str(error)
    except Exception as error:  # any other exception is a bug
        raise AssertionError(f"decoding crashed on {text!r}") from error


@pytest.fixture
def pure_python() -> Iterator[None]:
    """Read with PyYAML's pure-Python parser, as where PyYAML has no libyaml."""
    saved = yaml11.LOADER
    yaml11.LOADER = yaml.BaseLoader
    try:
        yield
    finally:
        yaml11.LOADER = saved


def check_parsers(text: str) -> None:
    with_libyaml = outcome(text)
    saved = yaml11.LOADER
    yaml11.LOADER = yaml.BaseLoader
    try:
        pure = outcome(text)
    finally:
        yaml11.LOADER = saved
    if isinstance(with_libyaml, str) and isinstance(pure, str):
        if "invalid YAML" not in with_libyaml:
            assert pure == with_libyaml
    else:
        assert pure == with_libyaml, text


@settings(max_examples=100, deadline=None)
@given(specs)
def test_dumped_specs_load_on_both_parsers(spec: Spec) -> None:
    check_parsers(dump.dump_spec(spec))


def test_libyaml_is_used_when_present() -> None:
    assert yaml11.LOADER is yaml.CBaseLoader


def test_pure_python_parser(pure_python: None) -> None:
    text = (
        'cdiVersion: "0.7.0"\nkind: vendor.com/device\ndevices:\n'
        "  - name: a\n    containerEdits: &e {env: [A=1], additionalGids: [5]}\n"
        "  - name: b\n    containerEdits: *e\n"
    )
    spec = codec.parse_spec(text, "x.yaml")
    edits = ContainerEdits(env=["A=1"], additional_gids=[5])
    assert spec.devices == (Device("a", edits), Device("b", edits))
    assert load_yaml("a: [1, on, x]\n") == {"a": [1, yaml11.resolve_plain("on"), "x"]}
    with pytest.raises(SpecError) as caught:
        codec.parse_spec("kind: [\n", "x.yaml")
    assert str(caught.value).startswith("x.yaml: invalid YAML: line 2, column 1:")


def test_every_field_on_both_parsers() -> None:
    spec = Spec(
        "0.7.0",
        "vendor.com/device",
        annotations={"a": "b"},
        devices=[
            Device(
                "d",
                ContainerEdits(
                    ["A=1"],
                    [DeviceNode("/dev/x", "/dev/y", "c", 1, 2, 0o666, "rw", 3, 4)],
                    [Hook("createContainer", "/bin/h", ["h"], ["E=1"], 5)],
                    [Mount("/a", "/b", ["ro"], "bind")],
                    IntelRdt("c", "L3", "MB", True, False),
                    [44],
                ),
                annotations={"x": "y"},
            )
        ],
    )
    check_parsers(dump.dump_spec(spec))
    assert codec.decode_spec(dump.dump_spec(spec), "x.yaml") == spec


# Raw YAML tokens, most of them troublemakers in some position.
SCALARS = [
    "x",
    '"x"',
    "'x y'",
    "/dev/x",
    "0",
    '"0"',
    "195",
    "0666",
    "08",
    "-1",
    "+5",
    "4294967296",
    "9223372036854775808",
    "on",
    "y",
    "~",
    "null",
    "",
    "1.5",
    "0x1F",
    "0o17",
    "1_000",
    "0:1",
    "2001-01-01",
    "!!int 3",
    "!!str 5",
    "!!bool yes",
    "! z",
    "&a v",
    "*a",
    ".inf",
    "A=1",
    "createContainer",
    "c",
    "rwm",
    '"\\u00e9"',
]


def key_strategy(table: dict[str, object]) -> st.SearchStrategy[str]:
    keys = list(table)
    return st.one_of(
        st.sampled_from(keys),
        st.sampled_from(keys).map(str.upper),
        st.sampled_from(keys).map(lambda key: f'"{key}"'),
        st.sampled_from(keys).map(lambda key: f"!!str {key}"),
        st.sampled_from(["unknown", "on", "0", "<<", "? [a]"]),
    )


scalar = st.sampled_from(SCALARS)


def flow_list(item: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(item, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")


def flow_map(table: dict[str, object], value: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(key_strategy(table), value).map(lambda kv: f"{kv[0]}: {kv[1]}")
    return st.lists(pair, max_size=6).map(lambda pairs: "{" + ", ".join(pairs) + "}")


def keys(cls: type) -> dict[str, object]:
    return {item.field.key: None for item in declared(cls)}


value = st.one_of(scalar, flow_list(scalar))
node = flow_map(keys(DeviceNode), value)
hook = flow_map(keys(Hook), value)
mount = flow_map(keys(Mount), value)
rdt = flow_map(keys(IntelRdt), value)
edits_value = st.one_of(value, flow_list(node), flow_list(hook), flow_list(mount), rdt)
edits = flow_map(keys(ContainerEdits), edits_value)
device = flow_map(keys(Device), st.one_of(scalar, edits, flow_map({"a": 1}, scalar)))
spec_text = flow_map(
    keys(Spec), st.one_of(scalar, flow_list(device), edits, flow_map({"a": 1}, scalar))
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_text, st.sampled_from(["", "---\n", "--- &top\n"]), st.sampled_from(["", "\n---\n"]))
def test_perturbed_documents(text: str, head: str, tail: str) -> None:
    check_parsers(head + text + tail)


def test_unusual_documents() -> None:
    for text in [
        "cdiVersion: 0.3.0\nkind: a.com/bb\ndevices: []\n",  # plain 0.3.0 is a string
        "cdiVersion: ~\n",
        "CDIVersion: x\n",
        "cdiVersion: x\ncdiVersion: y\n",
        "a: &x b\nc: *x\n",
        "cdiVersion: x\n---\nkind: y\n",
        "{annotations: {a: }}",  # an empty flow value: the parsers place it differently
        "cdiVersion: 0.7.0\nkind: a.com/b\nannotations: {a: , b: c}\n",
    ]:
        check_parsers(text)
