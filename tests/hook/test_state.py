"""OCI state on stdin and config.json: the fast JSON path and every malformed input."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdi.hook.errors import HookError
from cdi.hook.state import Container, parse_json, read_state, rootfs_path
from tests.hook.helpers import make_bundle

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(json_values)
def test_fast_parser_agrees_with_json_module(value: object) -> None:
    text = json.dumps(value)
    assert parse_json(f" {text}\n".encode(), "x") == json.loads(text)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"{", "stdin: not valid JSON"),
        (b'{"bundle": "/b"} trailing', "not valid JSON (Extra data"),
        (b"\xff\xfe", "not UTF-8"),
        (b"NaN", "not valid JSON"),
    ],
)
def test_bad_json_is_named(data: bytes, needle: str) -> None:
    with pytest.raises(HookError, match=r"OCI state on stdin") as err:
        read_state(io.BytesIO(data))
    assert needle.split(": ")[-1] in str(err.value)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"[1]", "expected a JSON object, got list"),
        (b'{"id": "x"}', "field 'bundle' missing"),
        (b'{"bundle": 7}', "field 'bundle' missing or not a non-empty string"),
        (b'{"bundle": "relative/dir"}', "bundle 'relative/dir' is not an absolute path"),
    ],
)
def test_bad_state_is_named(data: bytes, needle: str) -> None:
    with pytest.raises(HookError, match="OCI state on stdin") as err:
        read_state(io.BytesIO(data))
    assert needle in str(err.value)


def test_root_path_is_relative_to_the_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    assert rootfs_path(str(bundle.path)) == str(bundle.rootfs)


def test_absolute_root_path_is_used_as_is(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, root_path=str(tmp_path / "elsewhere"))
    assert rootfs_path(str(bundle.path)) == str(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (None, "config.json: cannot read: No such file or directory"),
        ("{oops", "config.json: not valid JSON"),
        ('{"root": {}}', "root.path missing"),
        ('{"root": "rootfs"}', "root.path missing"),
        ('{"root": {"path": "nothere"}}', "is not a directory"),
    ],
)
def test_bad_config_json_is_named(tmp_path: Path, config: str | None, needle: str) -> None:
    tmp_path.joinpath("bundle").mkdir()
    if config is not None:
        tmp_path.joinpath("bundle", "config.json").write_text(config)
    with pytest.raises(HookError) as err:
        rootfs_path(str(tmp_path / "bundle"))
    assert needle in str(err.value)
    assert str(tmp_path / "bundle") in str(err.value)


@pytest.mark.parametrize(
    ("linux", "needle"),
    [
        (None, "linux.devices missing"),
        ({"devices": {"path": "/dev/nvidia0"}}, "linux.devices missing"),
        ({"devices": [{"path": "/dev/nvidia0", "type": "c", "minor": 0}, {"type": "c"}]},
         "linux.devices[1]: path missing or relative"),
        ({"devices": [{"path": "dev/nvidia0", "type": "c"}]}, "linux.devices[0]: path missing"),
        ({"devices": [{"path": "/dev/nvidia0", "type": "c", "minor": "0"}]},
         "linux.devices[0] (/dev/nvidia0): bad type or minor"),
        ({"devices": [{"path": "/dev/nvidia0", "type": "c", "minor": True}]}, "bad type or minor"),
    ],
)  # fmt: skip
def test_bad_device_list_is_named(tmp_path: Path, linux: object, needle: str) -> None:
    bundle = make_bundle(tmp_path)
    config: dict[str, object] = {"root": {"path": "rootfs"}}
    if linux is not None:
        config["linux"] = linux
    (bundle.path / "config.json").write_text(json.dumps(config))
    container = Container(str(bundle.path))  # the rootfs alone needs no device list
    with pytest.raises(HookError) as err:
        container.devices()
    assert needle in str(err.value)
    assert str(bundle.path / "config.json") in str(err.value)


def test_device_list_paths_are_normalized(tmp_path: Path) -> None:
    devices = [{"path": "/dev//dri/./card1", "type": "c", "major": 226, "minor": 1}]
    bundle = make_bundle(tmp_path, devices=devices)
    assert Container(str(bundle.path)).device_paths() == {"/dev/dri/card1"}


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink to a fifo"])
def test_config_json_must_be_a_regular_file(tmp_path: Path, kind: str) -> None:
    bundle = make_bundle(tmp_path)
    config = bundle.path / "config.json"
    config.unlink()
    if kind == "fifo":
        os.mkfifo(config)
    elif kind == "directory":
        config.mkdir()
    else:
        os.mkfifo(tmp_path / "fifo")
        config.symlink_to(tmp_path / "fifo")
    with pytest.raises(HookError, match="not a regular file") as err:
        Container(str(bundle.path))  # returns at once: a FIFO is never opened for reading
    assert str(config) in str(err.value)
