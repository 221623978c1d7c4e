"""cdi.hook.sysos: the os functions the hook uses, without importing os."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cdi.hook import sysos

paths = st.text(alphabet="/.ab", max_size=12)


@given(paths, st.lists(paths, max_size=3))
def test_path_functions_agree_with_posixpath(p: str, more: list[str]) -> None:
    assert sysos.path.normpath(p) == posixpath.normpath(p)
    assert sysos.path.split(p) == posixpath.split(p)
    assert sysos.path.dirname(p) == posixpath.dirname(p)
    assert sysos.path.basename(p) == posixpath.basename(p)
    assert sysos.path.isabs(p) == posixpath.isabs(p)
    assert sysos.path.join(p, *more) == posixpath.join(p, *more)


def test_system_calls_are_os_own(tmp_path: Path) -> None:
    assert sysos.open is os.open and sysos.fork is os.fork and sysos._exit is os._exit
    assert sysos.SEEK_SET == os.SEEK_SET
    assert sysos.path.isdir(str(tmp_path)) and not sysos.path.isdir(str(tmp_path / "x"))
    assert not sysos.path.isdir("bad\0path")
