"""Strict loading (YAML and JSON) and dumping, with the reference's recorded verdicts."""

from __future__ import annotations

import json

import pytest

from cdi import codec, dump
from cdi.errors import SpecError
from cdi.spec import ContainerEdits, Device, DeviceNode, Hook, IntelRdt, Mount, Spec
from cdi.yaml11 import YamlError, load_yaml

MINIMAL = """\
cdiVersion: "0.3.0"
kind: vendor.com/device
devices:
  - name: dev0
    containerEdits:
      env: [A=1]
"""


def load(text: str, source: str = "/etc/cdi/x.yaml") -> Spec:
    return codec.parse_spec(text.encode(), source)


def error_of(text: str, source: str = "/etc/cdi/x.yaml") -> str:
    with pytest.raises(SpecError) as caught:
        load(text, source)
    return str(caught.value)


def test_minimal_yaml() -> None:
    spec = load(MINIMAL)
    assert spec == Spec(
        "0.3.0",
        "vendor.com/device",
        devices=[Device("dev0", ContainerEdits(env=["A=1"]))],
    )
    assert spec.vendor == "vendor.com"
    assert spec.cls == "device"


def test_every_field_yaml() -> None:
    text = """\
---
cdiVersion: v0.7.0
kind: vendor.com/dev.class
annotations: {example.com/a: "1"}
devices:
  - name: "0"
    annotations: {b: x}
    containerEdits:
      deviceNodes:
        - {path: /dev/x, hostPath: /dev/y, type: c, major: 1, minor: 3, fileMode: 0666,
           permissions: rw, uid: 1, gid: 2}
      hooks:
        - {hookName: createContainer, path: /bin/h, args: [h, a], env: [E=1], timeout: 5}
      mounts:
        - {hostPath: /a, containerPath: /b, options: [ro, bind], type: bind}
      intelRdt: {closID: c1, l3CacheSchema: L3, memBwSchema: MB, enableCMT: on, enableMBM: no}
      additionalGids: [44, 105]
containerEdits:
  env: [X=]
"""
    spec = load(text)
    device = spec.devices[0]
    assert device.annotations == {"b": "x"}
    edits = device.container_edits
    assert edits.device_nodes == (DeviceNode("/dev/x", "/dev/y", "c", 1, 3, 0o666, "rw", 1, 2),)
    assert edits.hooks == (Hook("createContainer", "/bin/h", ["h", "a"], ["E=1"], 5),)
    assert edits.mounts == (Mount("/a", "/b", ["ro", "bind"], "bind"),)
    assert edits.intel_rdt == IntelRdt("c1", "L3", "MB", True, False)
    assert edits.additional_gids == (44, 105)
    assert spec.container_edits.env == ("X=",)
    for fmt in ("yaml", "json"):
        assert codec.parse_spec(dump.dump_spec(spec, fmt), f"x.{fmt}") == spec


def test_json_loads_and_round_trips() -> None:
    data = {
        "cdiVersion": "0.5.0",
        "kind": "vendor.com/device",
        "devices": [
            {
                "name": "0",
                "containerEdits": {"deviceNodes": [{"path": "/dev/a", "hostPath": "/dev/b"}]},
            }
        ],
    }
    spec = load(json.dumps(data), "/etc/cdi/x.json")
    assert spec.devices[0].container_edits.device_nodes[0].host_path == "/dev/b"
    assert json.loads(dump.dump_spec(spec, "json")) == data


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        # unknown field, with the place and the known fields
        (
            MINIMAL.replace("env: [A=1]", "deviceNode: []"),
            ['device "dev0": containerEdits', 'unknown field "deviceNode"', "deviceNodes"],
        ),
        (MINIMAL + "cdiVersion: 0.3.0\n", ['duplicate key "cdiVersion"', "line 7"]),
        (MINIMAL.replace('"0.3.0"', "0.5"), ["cdiVersion", "YAML float 0.5", 'quote it: "0.5"']),
        (MINIMAL.replace("dev0", "on"), ["devices[0]: name", "YAML boolean on"]),
        (MINIMAL.replace("dev0", "y"), ["YAML boolean y"]),
        (MINIMAL.replace("dev0", "0"), ["expected a string, got integer 0", 'quote it: "0"']),
        (MINIMAL.replace("dev0", "2024-01-02"), ["YAML timestamp 2024-01-02"]),
        (
            MINIMAL.replace("env: [A=1]", "deviceNodes: [{path: /dev/x, major: '1'}]"),
            ['device "dev0": containerEdits.deviceNodes[0].major', 'got string "1"'],
        ),
        (
            MINIMAL.replace("env: [A=1]", "deviceNodes: [{path: /dev/x, uid: -1}]"),
            ["deviceNodes[0].uid", "-1 is out of range"],
        ),
        (
            MINIMAL.replace("env: [A=1]", "deviceNodes: [{path: /dev/x, fileMode: 1.5}]"),
            ["fileMode", "YAML float 1.5"],
        ),
        (
            MINIMAL.replace("env: [A=1]", "env: [A=1, 5]"),
            ["containerEdits.env[1]", "integer 5"],
        ),
        (
            MINIMAL.replace("env: [A=1]", "env: A=1"),
            ["containerEdits.env", 'expected a list of strings, got string "A=1"'],
        ),
        ("", ["no spec data"]),
        ("---\n", ["no spec data"]),
        ("- a\n", ["top level must be a mapping"]),
        (MINIMAL + "---\nkind: x\n", ["second YAML document", "line 8"]),
        ("a: [\n", ["invalid YAML", "line"]),
        (MINIMAL.replace("kind:", "kind: !!binary YQ==\nx:"), ["unsupported YAML tag"]),
        ("? [a]\n: b\n", ["mapping key must be a string"]),
        ("1: b\n", ["mapping key 1 (an integer) is not a string"]),
        (MINIMAL.replace("cdiVersion", "CDIVersion") + "cdiversion: 0.3.0\n", ["given twice"]),
        (MINIMAL + "<<: {a: b}\n", ['unknown field "a"']),
        (MINIMAL + '"<<": {a: b}\n', ['unknown field "<<"']),
        (MINIMAL + "<<: {kind: b}\n", ["duplicate key \"kind\" (from the merge key '<<')"]),
        (MINIMAL + "<<: [a]\n", ["merge key '<<' must be a mapping or a list of mappings"]),
    ],
)
def test_yaml_decode_errors(text: str, fragments: list[str]) -> None:
    message = error_of(text)
    assert message.startswith("/etc/cdi/x.yaml: ")
    for fragment in fragments:
        assert fragment in message, message


def test_yaml_11_typing_follows_go_yaml_v2() -> None:
    # go-yaml v2 has no sexagesimal integers, so 0:1 is a string; 0666 is octal.
    spec = load(
        MINIMAL.replace("dev0", "0:1")
        .replace('"0.3.0"', "v0.5.0")
        .replace(
            "env: [A=1]", "deviceNodes: [{path: /dev/x, fileMode: 0666, major: 0x10, minor: 1_0}]"
        )
    )
    node = spec.devices[0].container_edits.device_nodes[0]
    assert spec.devices[0].name == "0:1"
    assert (node.file_mode, node.major, node.minor) == (0o666, 16, 10)


def test_case_insensitive_keys_and_nulls() -> None:
    spec = load(
        'CDIVERSION: "0.7.0"\nKind: vendor.com/device\nDevices:\n'
        "  - NAME: dev0\n    containerEdits: {additionalGIDs: [1], env: ~, hooks: null}\n"
    )
    assert spec.devices[0].container_edits.additional_gids == (1,)
    assert spec.devices[0].container_edits.env == ()


def test_aliases_are_expanded() -> None:
    spec = load(
        'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices:\n'
        "  - name: a\n    containerEdits: &e {env: [A=1]}\n"
        "  - name: b\n    containerEdits: *e\n"
    )
    assert spec.devices[0].container_edits == spec.devices[1].container_edits


def test_merge_keys_as_go_yaml_v2() -> None:
    spec = load(
        'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices:\n'
        "  - name: a\n    containerEdits: &e {env: [A=1]}\n"
        "  - name: b\n    containerEdits:\n"
        "      <<: [*e, {hooks: [{hookName: poststop, path: /x}]}]\n"
        "      deviceNodes: [{path: /dev/x}]\n"
    )
    edits = spec.devices[1].container_edits
    assert (edits.env, len(edits.hooks), len(edits.device_nodes)) == (("A=1",), 1, 1)


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    bomb = "\n".join(lines) + "\n"
    with pytest.raises(YamlError, match="too many YAML alias expansions"):
        load_yaml(bomb)
    # A spec is read by its schema: nothing gets expanded before the first unknown field ...
    assert 'unknown field "a0"' in error_of(bomb)
    # ... and once aliases are expanded, the budget holds there too.
    aliased = MINIMAL.replace("env: [A=1]", "env: &e [A=1]") + "containerEdits: {env: *e}\n"
    assert "too many YAML alias expansions" in error_of(aliased + bomb)


def test_json_errors() -> None:
    message = error_of('{"kind": "a", "kind": "b"}', "/x.json")
    assert 'invalid JSON: line 1, column 15: duplicate key "kind"' in message
    assert "invalid JSON: line 2, column 1: did not find expected node" in error_of("{", "/x.json")
    assert "no spec data" in error_of("", "/x.json")
    with pytest.raises(SpecError, match=r"invalid JSON: .*incomplete UTF-16 character"):
        codec.parse_spec(b"\xff\xfe\xfa", "/x.json")
    # NaN is not JSON; read as YAML (as the reference does) it is the string "NaN"
    nan = load(
        '{"cdiVersion": "0.3.0", "kind": "a.com/bb",'
        ' "devices": [{"name": NaN, "containerEdits": {"env": ["A=1"]}}]}',
        "/x.json",
    )
    assert nan.devices[0].name == "NaN"
    # like the reference, a .json file may hold YAML
    assert load(MINIMAL, "/x.json").devices[0].name == "dev0"
    message = error_of('{"cdiVersion": 0.5, "kind": "a.com/bb"}', "/x.json")
    assert "cdiVersion: expected a string, got number 0.5" in message
    message = error_of(
        '{"cdiVersion": "0.3.0", "kind": "a.com/bb", "devices": [{"name": "d",'
        ' "containerEdits": {"deviceNodes": [{"path": "/x", "major": true}]}}]}',
        "/x.json",
    )
    assert 'device "d": containerEdits.deviceNodes[0].major' in message
    assert "boolean true" in message


def test_invalid_utf8() -> None:
    with pytest.raises(SpecError, match="invalid YAML"):
        codec.parse_spec(b"kind: \xff\xfe\xfa", "/x.yaml")


def test_load_spec_missing_file(tmp_path: object) -> None:
    with pytest.raises(SpecError, match="cannot read the file"):
        codec.load_spec(f"{tmp_path}/nothing.yaml")


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("0", '"0"'),
        ("on", '"on"'),
        ("Y", '"Y"'),
        ("0o17", '"0o17"'),
        ("1e5", '"1e5"'),
        ("0:1", '"0:1"'),
        ("2001-12-14", '"2001-12-14"'),
        ("", '""'),
        ("a: b", '"a: b"'),
        ("--link", '"--link"'),
        ("x:", '"x:"'),
        ("a#b", '"a#b"'),
        ("tab\there", '"tab\\there"'),
        ("\x7f\x85", '"\\x7f\\x85"'),
        ("/dev/nvidia0", "/dev/nvidia0"),
        (
            "../card1::/dev/dri/by-path/pci-0000:07:00.0-card",
            "../card1::/dev/dri/by-path/pci-0000:07:00.0-card",
        ),
        ("NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_VISIBLE_DEVICES=void"),
    ],
)
def test_yaml_string_quoting(value: str, written: str) -> None:
    assert dump.yaml_string(value) == written


def test_dump_layout() -> None:
    spec = Spec(
        "0.5.0",
        "vendor.com/device",
        devices=[Device("0", ContainerEdits(device_nodes=[DeviceNode("/dev/x", major=0)]))],
        container_edits=ContainerEdits(env=["A=1"]),
    )
    assert dump.dump_spec(spec) == (
        "---\n"
        'cdiVersion: "0.5.0"\n'
        "kind: vendor.com/device\n"
        "devices:\n"
        '  - name: "0"\n'
        "    containerEdits:\n"
        "      deviceNodes:\n"
        "        - path: /dev/x\n"
        "          major: 0\n"
        "containerEdits:\n"
        "  env:\n"
        "    - A=1\n"
    )


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("on", "boolean"),
        ("n", "boolean"),
        ("OFF", "boolean"),
        ("0.5", "float"),
        ("1e5", "float"),
        ("08", "float"),  # not octal, but a float for go-yaml v2
        (".inf", "float"),
        ("99999999999999999999", "float"),  # beyond uint64
        ("2001-12-14", "timestamp"),
        ("1e400", "str"),  # Go's ParseFloat overflows, so go-yaml keeps the string
        ("0:1", "str"),
        ("--link", "str"),
        ("1.2.3", "str"),
        ("0x", "str"),
        ("0666", "int"),
        ("0o17", "int"),
        ("0b101", "int"),
        ("-0x1F", "int"),
        ("1_000", "int"),
        ("18446744073709551615", "int"),  # uint64 max
        ("", "null"),
        ("~", "null"),
    ],
)
def test_plain_scalar_typing(text: str, kind: str) -> None:
    from cdi.yaml11 import Yaml11Scalar, resolve_plain

    value = resolve_plain(text)
    if kind == "str":
        assert value == text
    elif kind == "int":
        assert type(value) is int
    elif kind == "null":
        assert value is None
    else:
        assert isinstance(value, Yaml11Scalar) and value.kind == kind


def test_escapes_the_reference_rejects() -> None:
    # libyaml 0.2.2+ accepts the \/ escape, go-yaml v2 (the reference's decoder) does not
    message = error_of(MINIMAL.replace("kind: vendor.com/device", 'kind: "vendor.com\\/device"'))
    assert "line 2, column 7: unknown escape \\/" in message
    # an escaped backslash before / is fine, and so is \/ outside double quotes
    ok = MINIMAL.replace("env: [A=1]", "env: [\"A=\\\\/\", 'B=\\/', C=\\/]")
    assert load(ok).devices[0].container_edits.env == ("A=\\/", "B=\\/", "C=\\/")
    assert "escape \\/" in error_of('{"kind": "a\\/b"}', "/x.json")
    message = error_of('{"kind": "\\ud83d\\ude00"}', "/x.json")
    assert "line 1, column 13: found invalid Unicode character escape code" in message


def test_messages_stay_on_one_line() -> None:
    message = error_of(b"kind: \xff\n".decode("latin-1"))
    assert "\n" not in message
    with pytest.raises(SpecError) as caught:
        codec.parse_spec(b"kind: \xff\n", "/x.yaml")
    assert "\n" not in str(caught.value) and "invalid YAML" in str(caught.value)
    message = error_of(MINIMAL.replace("dev0", '"a\\nb"'))
    assert "\n" not in message and 'invalid device name "a\\nb"' in message


def test_null_list_items() -> None:
    text = MINIMAL.replace("env: [A=1]", "env: [A=1]\n      additionalGids: [~, 5]")
    spec = load(text.replace('"0.3.0"', '"0.7.0"'))
    assert spec.devices[0].container_edits.additional_gids == (0, 5)
    for field in ("deviceNodes: [~]", "hooks: [~]", "mounts: [null]", "env: [A=1, ~]"):
        message = error_of(MINIMAL.replace("env: [A=1]", field))
        assert "got null" in message and "[" in message, message
