"""Validation rules and the minimum required version, with the reference's recorded verdicts."""

from __future__ import annotations

import pytest

from cdi import codec
from cdi.errors import SpecError
from cdi.spec import ContainerEdits, Device, DeviceNode, Hook, IntelRdt, Mount, Spec
from cdi.validate import validate_spec
from cdi.version import minimum_version

EDITS = ContainerEdits(env=["A=1"])


def spec(version: str = "0.3.0", kind: str = "vendor.com/device", **kwargs: object) -> Spec:
    devices = kwargs.pop("devices", [Device("dev0", EDITS)])
    return Spec(version, kind, devices=devices, **kwargs)  # type: ignore[arg-type]


def check(value: Spec) -> str:
    with pytest.raises(SpecError) as caught:
        validate_spec(value, "/etc/cdi/x.yaml")
    return str(caught.value)


def edits_error(edits: ContainerEdits, version: str = "0.7.0") -> str:
    return check(spec(version, devices=[Device("dev0", edits)]))


def test_valid() -> None:
    validate_spec(spec(), "x")
    validate_spec(spec("v0.5.0"), "x")
    validate_spec(spec(devices=[]), "x")  # 0.8.0 accepts a spec without devices


@pytest.mark.parametrize(
    ("version", "fragment"),
    [
        ("0.9.0", 'invalid cdiVersion "0.9.0"'),
        ("1.0.0", 'invalid cdiVersion "1.0.0"'),
        ("0.5", 'invalid cdiVersion "0.5"'),
        ("", 'invalid cdiVersion ""'),
        ("0.2.0", 'cdiVersion "0.2.0" is too old: needs at least 0.3.0'),
    ],
)
def test_versions(version: str, fragment: str) -> None:
    message = check(spec(version))
    assert message.startswith("/etc/cdi/x.yaml: cdiVersion: ")
    assert fragment in message


@pytest.mark.parametrize(
    ("value", "required", "reason"),
    [
        (spec(devices=[Device("0", EDITS)]), "0.5.0", 'device name "0" not starting with a letter'),
        (
            spec(devices=[Device("d", ContainerEdits(device_nodes=[DeviceNode("/a", "/b")]))]),
            "0.5.0",
            'device "d": containerEdits.deviceNodes[0].hostPath "/b"',
        ),
        (
            spec(container_edits=ContainerEdits(mounts=[Mount("/a", "/b", type="bind")])),
            "0.4.0",
            'containerEdits.mounts[0].type "bind"',
        ),
        (spec(annotations={"a": "b"}), "0.6.0", "annotations"),
        (
            spec(devices=[Device("d", EDITS, annotations={"a": "b"})]),
            "0.6.0",
            'device "d": annotations',
        ),
        (spec(kind="vendor.com/dev.ice"), "0.6.0", "'.' in class \"dev.ice\""),
        (
            spec(container_edits=ContainerEdits(intel_rdt=IntelRdt())),
            "0.7.0",
            "containerEdits.intelRdt",
        ),
        (
            spec(devices=[Device("d", ContainerEdits(additional_gids=[5]))]),
            "0.7.0",
            'device "d": containerEdits.additionalGids',
        ),
    ],
)
def test_minimum_version(value: Spec, required: str, reason: str) -> None:
    assert minimum_version(value) == required
    message = check(value)
    assert f"needs at least {required} ({reason} needs it)" in message
    import attrs

    validate_spec(attrs.evolve(value, version=required), "x")


def test_minimum_version_floor() -> None:
    assert minimum_version(spec("0.8.0")) == "0.3.0"


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("device", 'kind: invalid kind "device": expected "vendor/class"'),
        ("/device", "invalid kind"),
        ("1vendor.com/device", 'invalid vendor "1vendor.com": must start with a letter'),
        ("vendor.com/g", 'invalid class "g": must be at least 2 characters'),
        ("v/gpu", 'invalid vendor "v": must be at least 2 characters'),
        ("vendor.com/gpu/x", "invalid character '/'"),
    ],
)
def test_kind(kind: str, fragment: str) -> None:
    assert fragment in check(spec("0.6.0", kind))


def test_device_name_message_shape() -> None:
    assert check(spec(devices=[Device("gpu 0", EDITS)])) == (
        '/etc/cdi/x.yaml: device "gpu 0": invalid device name "gpu 0": invalid character '
        "' ' (allowed: letters, digits, '_', '.', ':', '-' inside)"
    )
    assert "must start with a letter or digit" in check(
        spec("0.5.0", devices=[Device("-gpu0", EDITS)])
    )


def test_device_rules() -> None:
    assert "empty device edits" in check(spec(devices=[Device("d")]))
    message = check(spec(devices=[Device("d", EDITS), Device("d", EDITS)]))
    assert 'duplicate device name "d"' in message
    message = check(spec("0.6.0", devices=[Device("d", EDITS, annotations={"bad key!": "v"})]))
    assert 'device "d": annotations: invalid annotation key "bad key!"' in message
    assert "invalid annotation key" in check(spec("0.6.0", annotations={"a b": "c"}))


@pytest.mark.parametrize(
    ("edits", "where", "fragment"),
    [
        (
            ContainerEdits(env=["=novar"]),
            "containerEdits.env",
            'invalid environment variable "=novar"',
        ),
        (ContainerEdits(env=["A"]), "containerEdits.env", "must be NAME=value"),
        (
            ContainerEdits(device_nodes=[DeviceNode("dev/x")]),
            "containerEdits.deviceNodes[0].path",
            'invalid device node path "dev/x": must be an absolute path',
        ),
        (
            ContainerEdits(device_nodes=[DeviceNode("/dev/x", host_path="x")]),
            "deviceNodes[0].hostPath",
            "absolute",
        ),
        (
            ContainerEdits(device_nodes=[DeviceNode("/dev/x", type="x")]),
            "deviceNodes[0].type",
            'device "/dev/x": invalid type "x"',
        ),
        (
            ContainerEdits(device_nodes=[DeviceNode("/dev/x", permissions="rwx")]),
            "deviceNodes[0].permissions",
            'invalid permissions "rwx"',
        ),
        (
            ContainerEdits(hooks=[Hook("preStart", "/bin/x")]),
            "hooks[0].hookName",
            'invalid hook name "preStart"',
        ),
        (ContainerEdits(hooks=[Hook("prestart", "x")]), "hooks[0].path", "absolute"),
        (
            ContainerEdits(hooks=[Hook("poststop", "/x", env=["B"])]),
            "hooks[0].env",
            'invalid environment variable "B"',
        ),
        (ContainerEdits(mounts=[Mount("", "/b")]), "mounts[0].hostPath", "empty hostPath"),
        (ContainerEdits(mounts=[Mount("/a", "")]), "mounts[0].containerPath", "absolute"),
        (
            ContainerEdits(intel_rdt=IntelRdt(clos_id="a/b")),
            "intelRdt.closID",
            'invalid closID "a/b"',
        ),
        (ContainerEdits(intel_rdt=IntelRdt(clos_id="..")), "intelRdt.closID", "invalid closID"),
        (
            ContainerEdits(intel_rdt=IntelRdt(clos_id="c" * 4096)),
            "intelRdt.closID",
            "shorter than 4096",
        ),
    ],
)
def test_edit_rules(edits: ContainerEdits, where: str, fragment: str) -> None:
    message = edits_error(edits)
    assert f'device "dev0": {where}' in message or where in message
    assert fragment in message
    # the same rules apply to spec-level edits
    assert fragment in check(spec("0.7.0", container_edits=edits))


def test_accepted_edge_values() -> None:
    ok = ContainerEdits(
        env=["A="],
        device_nodes=[DeviceNode("/dev/x", type="", permissions=""), DeviceNode("/d", type="p")],
        hooks=[Hook("prestart", "/x", timeout=-5), Hook("startContainer", "/x", timeout=0)],
        mounts=[Mount("tmpfs", "/tmp", type="tmpfs")],
        intel_rdt=IntelRdt(clos_id=""),
    )
    validate_spec(spec("0.7.0", devices=[Device("d", ok)]), "x")


def test_bad_yaml_file_reports_file_device_field_value_rule() -> None:
    text = (
        'cdiVersion: "0.3.0"\nkind: vendor.com/device\ndevices:\n'
        "  - name: d\n    containerEdits:\n      hooks: [{hookName: preStart, path: /x}]\n"
    )
    with pytest.raises(SpecError) as caught:
        codec.parse_spec(text, "/etc/cdi/bad.yaml")
    assert str(caught.value).startswith(
        '/etc/cdi/bad.yaml: device "d": containerEdits.hooks[0].hookName: '
        'invalid hook name "preStart" (one of '
    )


def test_minimum_version_agrees_with_the_reasons() -> None:
    from hypothesis import given, settings

    from cdi.version import KNOWN_VERSIONS, minimum_requirement, version_requirements
    from tests.cdi.test_roundtrip import specs

    @settings(max_examples=300, deadline=None)
    @given(specs)
    def check(value: Spec) -> None:
        versions = ["0.3.0"] + [version for version, _ in version_requirements(value)]
        highest = max(versions, key=KNOWN_VERSIONS.__getitem__)
        assert minimum_version(value) == highest
        required, why = minimum_requirement(value)
        assert required == highest and (why == "") == (highest == "0.3.0")

    check()
