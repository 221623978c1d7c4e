"""Qualified names and the cdi.k8s.io annotation API, against the reference's recorded verdicts."""

from __future__ import annotations

import pytest

from cdi import names
from cdi.errors import AnnotationError, InvalidNameError


@pytest.mark.parametrize(
    "device",
    [
        "nvidia.com/gpu=0",
        "nvidia.com/gpu=all",
        "nvidia.com/gpu=GPU-91b29844-7d06-522d-a40a-588a406a57ba",
        "nvidia.com/gpu=0:1",
        "nvidia.com/mig-1g.10gb=0:0",
        "NVIDIA.COM/GPU=0",
        "nvidia_com/gpu=0",
        "v" + "x" * 299 + "/c" + "y" * 299 + "=" + "z" * 300,
    ],
)
def test_valid_qualified_names(device: str) -> None:
    parsed = names.parse_qualified_name(device)
    assert str(parsed) == device
    assert names.is_qualified_name(device)


@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        ("0", 'unqualified device "0", missing vendor'),
        ("all", "missing vendor"),
        ("/dev/nvidia0", "missing vendor"),
        ("nvidia.com/gpu=", "missing vendor"),
        ("=0", "missing vendor"),
        ("nvidia.com/gpu=0 ", "must end with a letter or digit"),
        ("nvidia.com/gpu=0 1", "invalid character ' '"),
        ("nvidia.com/gpu=-gpu0", 'invalid device name "-gpu0": must start with a letter or digit'),
        ("1vendor.com/gpu=0", 'invalid vendor "1vendor.com": must start with a letter'),
        ("nvidia.com/gpu/x=0", "invalid character '/'"),
        ("nvidia.com/g=0", "at least 2 characters"),
        ("n/gpu=0", "at least 2 characters"),
        ("nvidia.com/gpu=a_", "must end with a letter or digit"),
    ],
)
def test_invalid_qualified_names(device: str, fragment: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        names.parse_qualified_name(device)
    assert fragment in str(caught.value)
    assert not names.is_qualified_name(device)


def test_parse_device_splits_at_first_separators() -> None:
    assert names.parse_device("a.com/b=c=d") == ("a.com", "b", "c=d")
    assert names.parse_device("a.com/b/c=d") == ("a.com", "b/c", "d")
    assert names.parse_device("abc=d") == ("", "", "abc=d")
    assert names.parse_qualifier("vendor.com/class") == ("vendor.com", "class")
    assert names.parse_qualifier("device") == ("", "device")
    assert names.qualified_name("a.com", "b", "c") == "a.com/b=c"


def test_device_name_rules() -> None:
    assert names.device_name_error("0") is None
    assert names.device_name_error("a") is None
    assert names.device_name_error("a:b.c-d_e") is None
    error = names.device_name_error("gpu 0")
    assert error == (
        "invalid device name \"gpu 0\": invalid character ' ' "
        "(allowed: letters, digits, '_', '.', ':', '-' inside)"
    )
    assert names.device_name_error("") == 'invalid device name "": empty'
    assert names.device_name_error("é") is not None


def test_annotation_key() -> None:
    assert names.annotation_key("vendor.gpu", "dev/1") == "cdi.k8s.io/vendor.gpu_dev_1"
    with pytest.raises(AnnotationError, match="invalid plugin name, empty"):
        names.annotation_key("", "x")
    with pytest.raises(AnnotationError, match="invalid deviceID, empty"):
        names.annotation_key("p", "")
    with pytest.raises(AnnotationError, match="too long"):
        names.annotation_key("p" * 40, "d" * 30)
    with pytest.raises(AnnotationError, match=r"invalid name \"_bad_id\", first '_'"):
        names.annotation_key("_bad", "id")
    with pytest.raises(AnnotationError, match="last '_'"):
        names.annotation_key("bad", "id_")
    with pytest.raises(AnnotationError, match="invalid character '!'"):
        names.annotation_key("bad!x", "id")


def test_annotation_value() -> None:
    assert names.annotation_value(["a.com/bb=0", "a.com/bb=1"]) == "a.com/bb=0,a.com/bb=1"
    assert names.annotation_value([]) == ""
    with pytest.raises(AnnotationError, match="missing vendor"):
        names.annotation_value(["a.com/bb=0", "gpu0"])


def test_parse_annotations() -> None:
    keys, devices = names.parse_annotations(
        {
            "cdi.k8s.io/a": "nvidia.com/gpu=0,nvidia.com/gpu=1",
            "other": "x",
            "cdi.k8s.io/": "nvidia.com/gpu=2",
            "CDI.k8s.io/ignored": "not a name",
        }
    )
    assert keys == ["cdi.k8s.io/a", "cdi.k8s.io/"]
    assert devices == ["nvidia.com/gpu=0", "nvidia.com/gpu=1", "nvidia.com/gpu=2"]


@pytest.mark.parametrize(
    ("value", "bad"),
    [("nvidia.com/gpu=0, nvidia.com/gpu=1", " nvidia.com/gpu=1"), ("", ""), ("a.com/bb=0,", "")],
)
def test_one_bad_annotation_device_fails_all(value: str, bad: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        names.parse_annotations({"x": "y", "cdi.k8s.io/k": value})
    assert f'invalid CDI device name "{bad}"' in str(caught.value)
    assert 'annotation "cdi.k8s.io/k"' in str(caught.value)


def test_update_annotations() -> None:
    base = {"cdi.k8s.io/p_d": "x"}
    added = names.update_annotations({}, "p", "e", ["a.com/bb=0"])
    assert added == {"cdi.k8s.io/p_e": "a.com/bb=0"}
    with pytest.raises(AnnotationError, match=r'key "cdi\.k8s\.io/p_d" used'):
        names.update_annotations(base, "p", "d", ["a.com/bb=0"])
    assert base == {"cdi.k8s.io/p_d": "x"}


def test_spec_annotation_keys() -> None:
    assert names.spec_annotation_error({"example.com/key": "v", "Simple_Key.1": ""}) is None
    error = names.spec_annotation_error({"bad key!": "v"})
    assert error is not None and 'invalid annotation key "bad key!"' in error
    assert names.spec_annotation_error({"a/b/c": "v"}) is not None
    assert names.spec_annotation_error({"-x.com/a": "v"}) is not None
    assert names.spec_annotation_error({"x.com/" + "a" * 64: "v"}) is not None
    big = {f"k{i}": "v" * 1000 for i in range(300)}
    error = names.spec_annotation_error(big)
    assert error is not None and "too large" in error
