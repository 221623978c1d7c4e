"""Reading ld.so.conf as ldconfig does (glob, includes, directory lines) and ldconfig's listing."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cdi.hook.ldconf import LdConf, glob, match
from cdi.hook.ldconfig import parse_listing
from cdi.hook.rootfs import Rootfs

names = st.text(alphabet="abc.-!^]", min_size=0, max_size=6)
patterns = st.text(alphabet="abc.*?[]!-^", min_size=0, max_size=7)


@given(names, patterns)
def test_match_agrees_with_fnmatch_without_escapes(name: str, pattern: str) -> None:
    # Python's fnmatch and fnmatch(3) agree on *, ?, [...] and [!...] for one component.
    assert match(name, pattern) == fnmatch.fnmatchcase(name, pattern)


def test_match_escapes_and_brackets() -> None:
    assert match("a*b", "a\\*b") and not match("axb", "a\\*b")
    assert match("x.conf", "[!.]*.conf") and not match(".x.conf", "[!.]*.conf")
    assert match("b", "[a-c]") and not match("d", "[a-c]")
    assert match("]", "[]]") and match("[", "[") and not match("a", "[")


def test_glob_sorts_skips_hidden_and_non_directories(tmp_path: Path) -> None:
    conf_d = tmp_path / "etc/ld.so.conf.d"
    conf_d.mkdir(parents=True)
    for name in ("b.conf", "a.conf", ".hidden.conf", "c.txt"):
        (conf_d / name).write_text("")
    (tmp_path / "etc/x.d").write_text("a file where the pattern wants a directory")
    with Rootfs(str(tmp_path)) as root:
        assert glob(root, "/etc/ld.so.conf.d/*.conf") == [
            "/etc/ld.so.conf.d/a.conf",
            "/etc/ld.so.conf.d/b.conf",
        ]
        assert glob(root, "/etc/*.d/a.conf") == ["/etc/ld.so.conf.d/a.conf"]
        assert glob(root, "/nonexistent/*.conf") == []


def test_ldconf_reads_directories_as_ldconfig_does(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "ld.so.conf.d").mkdir(parents=True)
    (etc / "ld.so.conf").write_text(
        "# comment\n"
        "  /opt/a/   \n"
        "/opt/b=libc6 # a type suffix and a comment\n"
        "hwcap 1 nosegneg\n"
        "include ld.so.conf.d/*.conf /etc/missing.conf\n"
        "include /etc/ld.so.conf.d\n"  # a directory: nothing to read
        "include /etc/ld.so.conf/x.conf\n"  # through a file: cannot be opened, skipped
    )
    (etc / "ld.so.conf.d/one.conf").write_text("/opt/c\ninclude /etc/ld.so.conf.d/two.conf\n")
    (etc / "ld.so.conf.d/two.conf").write_text("/opt/d\n")
    (etc / "ld.so.conf.d/ours.conf").write_text("/opt/not-counted\n")
    with Rootfs(str(tmp_path)) as root:
        conf = LdConf(root, "/etc/ld.so.conf", skip=frozenset({"ours.conf"}))
    assert conf.dirs == ["/opt/a", "/opt/b", "/opt/c", "/opt/d"]
    # two.conf is included twice (by one.conf and the glob): read once, counted twice.
    assert conf.files == [
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d/one.conf",
        "/etc/ld.so.conf.d/two.conf",
    ]


def test_listing_gives_links_per_directory() -> None:
    text = (
        "\tstray -> line before any directory\n"
        "/usr/lib/x86_64-linux-gnu: (from /etc/ld.so.conf.d/00-nvcr-gpu-cdi.conf:1)\n"
        "\tlibnvidia-egl-gbm.so.1 -> libnvidia-egl-gbm.so.1.1.1\n"
        "\tlibcuda.so.1 -> libcuda.so.550.163.01\n"
        "\tevil.so -> ../../etc/passwd\n"  # a forged line (SONAMEs can hold newlines)
        "\t../escape.so -> libx.so\n"
        "/lib:\n"
        "\tlibz.so.1 -> libz.so.1.2.13\n"
        "/usr/lib/glibc-hwcaps/x86-64-v3: (hwcap: x86-64-v3)\n"
        "\tlibm.so.6 -> libm.so.6\n"
        "ldconfig: some warning\n"
        "\tlibafter.so -> libafter.so.1\n"
    )
    assert parse_listing(text) == {
        "/usr/lib/x86_64-linux-gnu": [
            ("libnvidia-egl-gbm.so.1", "libnvidia-egl-gbm.so.1.1.1"),
            ("libcuda.so.1", "libcuda.so.550.163.01"),
        ],
        "/lib": [("libz.so.1", "libz.so.1.2.13")],
        "/usr/lib/glibc-hwcaps/x86-64-v3": [("libm.so.6", "libm.so.6")],
    }
