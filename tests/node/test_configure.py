"""`gpu-cdi configure containerd|docker`: only the wanted keys change (checked by a TOML/JSON
reader, not by our own code), comments and order stay, a second run changes nothing, the
runtime itself accepts the result, and every bad file is one line with nothing changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cdi.node import containerd, docker
from cdi.node.configfile import ConfigError
from tests.e2e import paths
from tests.node.support import BIN, gpu_cdi, one_line_error, read_only
from tests.require import need

DATA = Path(__file__).parent / "data"
NRI = 'plugins."io.containerd.nri.v1.nri"'
CRI2 = 'plugins."io.containerd.grpc.v1.cri"'
CRI3 = 'plugins."io.containerd.cri.v1.runtime"'
OURS = "/var/run/gpu-cdi"


def flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted.path: value} of every leaf (plugin ids quoted as in a TOML header)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f'"{key}"' if "." in key else key
        out.update(flat(value, f"{prefix}.{name}" if prefix else name))
    return out


def changed(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What `new` sets differently from `old` (nothing may disappear)."""
    gone = set(old) - set(new)
    assert not gone, f"keys lost: {gone}"
    return {k: v for k, v in new.items() if old.get(k, object()) != v}


def comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#")]


DEBIAN17 = (DATA / "containerd-1.7.24-debian.toml").read_text()
DEFAULT17 = (DATA / "containerd-1.7.24-default.toml").read_text()
DEFAULT21 = (DATA / "containerd-2.1.9-default.toml").read_text()
HAND_V3 = """\
# containerd 2 config, written by hand
version = 3

[plugins]
  # NRI was switched off here
  [plugins."io.containerd.nri.v1.nri"]
    disable = true # off for now
    disable_connections = true

  [plugins."io.containerd.cri.v1.runtime"]
    enable_cdi = false
    cdi_spec_dirs = ["/etc/cdi"]
"""
CONTAINERD_CASES = {
    # name: (text, flags, the leaves that must change and their new values)
    "debian 1.7, NRI only": (DEBIAN17, {}, {f"{NRI}.disable": False}),
    "debian 1.7, CDI too": (
        DEBIAN17,
        {"cdi": True, "spec_dirs": [OURS]},
        {
            f"{NRI}.disable": False,
            f"{CRI2}.enable_cdi": True,
            f"{CRI2}.cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi", OURS],
        },
    ),
    "1.7 default, CDI too": (
        DEFAULT17,
        {"cdi": True, "spec_dirs": ["/var/run/cdi", OURS]},
        {
            f"{NRI}.disable": False,
            f"{CRI2}.enable_cdi": True,
            f"{CRI2}.cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi", OURS],
        },
    ),
    # containerd 2.1's own default: NRI and CDI on already; only our dir is missing
    "2.1 default, CDI too": (DEFAULT21, {"cdi": True}, {}),
    "2.1 default, our dir": (
        DEFAULT21,
        {"spec_dirs": [OURS]},
        {f"{CRI3}.cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi", OURS]},
    ),
    "hand-written v3": (
        HAND_V3,
        {"cdi": True, "spec_dirs": ["/var/run/cdi"]},
        {
            f"{NRI}.disable": False,
            f"{NRI}.disable_connections": False,
            f"{CRI3}.enable_cdi": True,
            f"{CRI3}.cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi"],
        },
    ),
    # containerd 2 has NRI and CDI on by default, reading /etc/cdi and /var/run/cdi
    "bare v3": ("version = 3\n", {"cdi": True, "spec_dirs": ["/etc/cdi"]}, {}),
    "bare v3, our dir": ("version = 3\n", {"spec_dirs": [OURS]},
                         {f"{CRI3}.cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi", OURS]}),
    "dotted keys": (
        'version = 2\nplugins."io.containerd.nri.v1.nri".disable = true  # keep\n',
        {"cdi": True},
        {f"{NRI}.disable": False, f"{CRI2}.enable_cdi": True},
    ),
    "NRI in disabled_plugins": (
        'version = 2\ndisabled_plugins = ["io.containerd.nri.v1.nri", "nope"]\n',
        {},
        {"disabled_plugins": ["nope"], f"{NRI}.disable": False},
    ),
    "empty file": ("", {}, {"version": 2, f"{NRI}.disable": False}),
    "comments only": ("# managed by hand\n", {}, {"version": 2, f"{NRI}.disable": False}),
}  # fmt: skip


@pytest.mark.parametrize("case", CONTAINERD_CASES)
def test_containerd_changes_only_what_is_needed(case: str) -> None:
    text, flags, expected = CONTAINERD_CASES[case]
    edit = containerd.configure(text, "config.toml", **flags)
    assert changed(flat(tomllib.loads(text)), flat(tomllib.loads(edit.text))) == expected
    assert len(edit.changes) == len(expected) - ("version" in expected)
    assert comments(edit.text) == comments(text)
    # The lines that were there are still there, in their order (a round trip, not a rewrite).
    kept = [line for line in edit.text.splitlines() if line in text.splitlines()]
    assert [line for line in text.splitlines() if line in kept] == kept
    again = containerd.configure(edit.text, "config.toml", **flags)
    assert (again.text, again.changes) == (edit.text, ())


def test_new_keys_and_tables_look_like_their_neighbours() -> None:
    edit = containerd.configure(DEBIAN17, "config.toml", cdi=True)
    assert (
        edit.text
        == DEBIAN17.replace(
            '  [plugins."io.containerd.grpc.v1.cri"]\n',
            '  [plugins."io.containerd.grpc.v1.cri"]\n    enable_cdi = true\n',
        )
        + '  [plugins."io.containerd.nri.v1.nri"]\n    disable = false\n'
    )
    fresh = containerd.configure(None, "config.toml", cdi=True)
    assert fresh.text == (
        'version = 2\n\n[plugins."io.containerd.nri.v1.nri"]\ndisable = false\n\n'
        '[plugins."io.containerd.grpc.v1.cri"]\nenable_cdi = true\n'
    )


def test_imported_drop_ins_are_said_to_win() -> None:
    text = 'version = 3\nimports = ["/etc/containerd/conf.d/*.toml"]\n'
    edit = containerd.configure(text, "c.toml", cdi=True)
    assert edit.notes == (
        "note: c.toml imports /etc/containerd/conf.d/*.toml: what those files set wins over "
        "this one (`containerd config dump` shows the result)",
    )


def test_a_changed_list_keeps_its_quoting() -> None:
    edit = containerd.configure(DEFAULT21, "config.toml", spec_dirs=[OURS])
    (line,) = [ln for ln in edit.text.splitlines() if "cdi_spec_dirs" in ln]
    assert line == f"    cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi', '{OURS}']"


def test_disabled_cri_plugin_is_left_alone_and_said() -> None:
    edit = containerd.configure('version = 2\ndisabled_plugins = ["cri"]\n', "c.toml")
    assert tomllib.loads(edit.text)["disabled_plugins"] == ["cri"]
    assert edit.notes == (
        "warning: c.toml: disabled_plugins lists the CRI plugin, left so: NRI and CDI act only "
        "on containers made through CRI (kubelet, crictl)",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 2\n[plugins\n", "c.toml: line 2, column 9: not valid TOML"),
        ('version = 2\nroot = "a"\nroot = "b"\n', "c.toml: line 3, column 11: not valid TOML"),
        ("version = 4\n", "c.toml: version = 4: gpu-cdi edits config versions 2 (containerd 1.7)"),
        ('version = "2"\n', 'c.toml: version = "2": gpu-cdi edits config versions'),
        ("version = true\n", "c.toml: version = true:"),
        ("version = 2.0\n", "c.toml: version = 2.0:"),
        ('version = 2\ndisabled_plugins = "cri"\n', "c.toml: disabled_plugins must be a list"),
        ('[plugins.cri]\nsandbox_image = "x"\n', "c.toml: no `version` key, so containerd reads "
         "it as config version 1"),
        ("version = 2\nplugins = 1\n", "c.toml: plugins = 1: must be a table"),
        ('version = 2\n[plugins]\n"io.containerd.nri.v1.nri" = "on"\n',
         'c.toml: io.containerd.nri.v1.nri = "on": must be a table'),
    ],
)  # fmt: skip
def test_containerd_configs_it_cannot_edit(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        containerd.configure(text, "c.toml", cdi=True)
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


# -- containerd itself reads what we wrote --------------------------------------------------------


# containerd release -> (binary, the configs it is tried with, the CRI table of its dump)
RELEASES = {
    "1.7": (
        paths.containerd_release("1.7").bin / "containerd",
        ("1.7.24-debian", "1.7.24-default"),
        CRI2,
    ),
    "2.1": (
        paths.containerd_release("2.1").bin / "containerd",
        ("1.7.24-debian", "2.1.9-default"),  # sid ships the version-2 file trixie does
        CRI3,
    ),
}


@pytest.mark.parametrize(
    ("release", "name"),
    [(release, name) for release, (_, names, _) in RELEASES.items() for name in names],
)
def test_containerd_reads_the_configured_file(release: str, name: str, tmp_path: Path) -> None:
    binary, _, cri = RELEASES[release]
    need(os.access(binary, os.X_OK), f"{binary} (containerd {release}): {paths.INSTALL_HINT}")
    config = tmp_path / "config.toml"
    config.write_text((DATA / f"containerd-{name}.toml").read_text())
    proc = gpu_cdi(["configure", "containerd", "--config", str(config), "--cdi.spec-dir", OURS])
    assert proc.returncode == 0, proc.stderr
    dump = subprocess.run(
        [str(binary), "--config", str(config), "config", "dump"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert dump.returncode == 0, dump.stderr
    effective = flat(tomllib.loads(dump.stdout))
    assert effective[f"{NRI}.disable"] is False
    assert effective[f"{cri}.enable_cdi"] is True
    assert effective[f"{cri}.cdi_spec_dirs"] == ["/etc/cdi", "/var/run/cdi", OURS]


# -- the command: dry run, backup, mode and owner, errors -----------------------------------------


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(DEBIAN17)
    proc = gpu_cdi(["configure", "containerd", "--config", str(config), "--dry-run"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"--- {config}\n+++ {config} (configured)\n")
    assert '+  [plugins."io.containerd.nri.v1.nri"]\n+    disable = false\n' in proc.stdout
    assert proc.stderr == (
        f"{config}: dry run, nothing written; it would get: NRI enabled "
        "(io.containerd.nri.v1.nri disable = false)\n"
    )
    assert config.read_text() == DEBIAN17
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_write_keeps_a_backup_and_the_files_mode_and_owner(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(DEBIAN17)
    config.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(config, 1234, 5678)
    proc = gpu_cdi(["configure", "containerd", "--config", str(config), "--cdi.enabled"])
    assert proc.returncode == 0, proc.stderr
    (backup,) = [p for p in tmp_path.iterdir() if p.name != "config.toml"]
    assert backup.name.startswith("config.toml.bak-")
    assert backup.read_text() == DEBIAN17
    assert proc.stderr == (
        f"{config}: NRI enabled (io.containerd.nri.v1.nri disable = false); CDI enabled "
        f"(io.containerd.grpc.v1.cri enable_cdi) (the old file is {backup}); restart "
        "containerd (systemctl restart containerd) to apply\n"
    )
    for path in (config, backup):
        info = path.stat()
        assert info.st_mode & 0o7777 == 0o600
        if os.geteuid() == 0:
            assert (info.st_uid, info.st_gid) == (1234, 5678)
    again = gpu_cdi(["configure", "containerd", "--config", str(config), "--cdi.enabled"])
    assert again.stderr == f"{config}: already configured, not rewritten\n"
    assert len(list(tmp_path.iterdir())) == 2  # no second backup


def test_a_symlinked_config_is_edited_where_it_points(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text("version = 2\n")
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    assert gpu_cdi(["configure", "containerd", "--config", str(link)]).returncode == 0
    assert link.is_symlink()
    assert (
        tomllib.loads(real.read_text())["plugins"]["io.containerd.nri.v1.nri"]["disable"] is False
    )


def test_a_missing_config_is_created(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    proc = gpu_cdi(["configure", "containerd", "--config", str(config)])
    assert proc.returncode == 0, proc.stderr
    assert "(new file)" in proc.stderr
    assert config.stat().st_mode & 0o777 == 0o644
    assert tomllib.loads(config.read_text())["version"] == 2


def unchanged(directory: Path, before: dict[str, bytes]) -> None:
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 2\n[plugins\n", "line 2, column 9: not valid TOML"),
        ("version = 9\n", "version = 9: gpu-cdi edits config versions 2"),
        (b"version = 2\n\xff\n", "byte 12 is not UTF-8"),
    ],
)
def test_bad_config_is_one_line_and_nothing_changes(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(text.encode() if isinstance(text, str) else text)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    line = one_line_error(gpu_cdi(["configure", "containerd", "--config", str(config)]), message)
    assert line.startswith(f"gpu-cdi configure containerd: error: {config}: ")
    unchanged(tmp_path, before)


def test_unwritable_or_missing_places_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(DEBIAN17)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    argv = [str(BIN / "gpu-cdi"), "configure", "containerd", "--config", str(config)]
    one_line_error(read_only(tmp_path, argv), f"{config}", "Read-only file system")
    unchanged(tmp_path, before)
    one_line_error(
        gpu_cdi(["configure", "containerd", "--config", str(tmp_path / "etc" / "config.toml")]),
        f"no directory {tmp_path}/etc; nothing written",
    )
    one_line_error(
        gpu_cdi(["configure", "containerd", "--config", str(tmp_path)]),
        f"{tmp_path}: cannot read it: Is a directory",
    )
    one_line_error(
        gpu_cdi(["configure", "docker", "--config", str(config), "--cdi.spec-dir", "cdi"]),
        "--cdi.spec-dir 'cdi': must be an absolute path",
    )
    unchanged(tmp_path, before)


# -- Docker ---------------------------------------------------------------------------------------

DOCKER_CASES = {
    "none yet": (None, [], {"features.cdi": True}),
    "empty": ("", [], {"features.cdi": True}),
    "other settings": (
        '{\n  "log-level": "warn",\n  "features": {"buildkit": true}\n}\n',
        [OURS],
        {"features.cdi": True, "cdi-spec-dirs": ["/etc/cdi", "/var/run/cdi", OURS]},
    ),
    "cdi off, dirs set": (
        '{"features": {"cdi": false}, "cdi-spec-dirs": ["/etc/cdi"]}',
        ["/var/run/cdi"],
        {"features.cdi": True, "cdi-spec-dirs": ["/etc/cdi", "/var/run/cdi"]},
    ),
    "already on": ('{"features": {"cdi": true}}\n', ["/var/run/cdi"], {}),
}


@pytest.mark.parametrize("case", DOCKER_CASES)
def test_docker_changes_only_what_is_needed(case: str) -> None:
    text, dirs, expected = DOCKER_CASES[case]
    edit = docker.configure(text, "daemon.json", dirs)
    old = flat(json.loads(text or "{}"))
    assert changed(old, flat(json.loads(edit.text))) == expected
    assert list(json.loads(edit.text)) == [*json.loads(text or "{}")] + [
        k for k in ("features", "cdi-spec-dirs") if k not in json.loads(text or "{}") and any(
            p.split(".")[0] == k for p in expected)
    ]  # fmt: skip
    again = docker.configure(edit.text, "daemon.json", dirs)
    assert (again.text, again.changes) == (edit.text, ())


def test_docker_keeps_the_files_indentation() -> None:
    edit = docker.configure('{\n\t"debug": true\n}\n', "daemon.json")
    assert edit.text == '{\n\t"debug": true,\n\t"features": {\n\t\t"cdi": true\n\t}\n}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"debug": true,}', "daemon.json: line 1, column 16: not valid JSON"),
        ("[]", "daemon.json: holds a JSON list, Docker wants an object"),
        ('{"features": ["cdi"]}', "daemon.json: features is a JSON list, not an object"),
        ('{"cdi-spec-dirs": "/etc/cdi"}', 'daemon.json: cdi-spec-dirs is "/etc/cdi", not a list'),
    ],
)
def test_docker_configs_it_cannot_edit(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        docker.configure(text, "daemon.json")
    assert str(error.value).startswith(message), str(error.value)


def test_dockerd_accepts_the_configured_file(tmp_path: Path) -> None:
    dockerd = paths.DOCKERD
    need(os.access(dockerd, os.X_OK), f"{dockerd} (sid docker.io): {paths.INSTALL_HINT}")
    config = tmp_path / "daemon.json"
    config.write_text('{\n  "log-level": "warn"\n}\n')
    proc = gpu_cdi(["configure", "docker", "--config", str(config), "--cdi.spec-dir", OURS])
    assert proc.returncode == 0, proc.stderr

    def validate(path: Path) -> subprocess.CompletedProcess[str]:
        argv = [str(dockerd), "--validate", "--userland-proxy=false", "--config-file", str(path)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    assert validate(config).returncode == 0, validate(config).stderr
    # and the check can fail: a value of the wrong type is refused
    bad = tmp_path / "bad.json"
    bad.write_text('{"features": {"cdi": "yes"}}')
    assert "cannot unmarshal string" in validate(bad).stderr


def test_configure_docker_command(tmp_path: Path) -> None:
    config = tmp_path / "daemon.json"
    config.write_text('{"debug": true}')
    proc = gpu_cdi(["configure", "docker", "--config", str(config), "--cdi.enabled"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(config.read_text()) == {"debug": True, "features": {"cdi": True}}
    assert "restart Docker (systemctl restart docker) to apply" in proc.stderr
    (backup,) = tmp_path.glob("daemon.json.bak-*")
    assert backup.read_text() == '{"debug": true}'
