"""The committed generated modules are what `make proto` produces from specs/nri."""

from __future__ import annotations

import shutil
from pathlib import Path

from nri_plugin.protocol import genproto


def test_committed_gen_is_current() -> None:
    assert genproto.stale_files() == [], "run `make proto` and commit nri_plugin/protocol/gen"


def test_stale_and_missing_files_are_detected(tmp_path: Path) -> None:
    gen = tmp_path / "gen"
    shutil.copytree(genproto.GEN_DIR, gen)
    (gen / "api_pb2.py").write_text("# edited by hand\n", encoding="utf-8")
    (gen / "ttrpc_pb2.pyi").unlink()
    assert genproto.stale_files(gen) == ["api_pb2.py", "ttrpc_pb2.pyi"]


def test_version_stamps_do_not_count_as_changes() -> None:
    text = (genproto.GEN_DIR / "api_pb2.py").read_text(encoding="utf-8")
    bumped = text.replace("# Protobuf Python Version:", "# Protobuf Python Version: 99.0.0 was")
    assert genproto.normalized(bumped) == genproto.normalized(text)


def test_write_then_check_round_trip(tmp_path: Path) -> None:
    written = genproto.write(tmp_path)
    assert written == ["__init__.py", "api_pb2.py", "api_pb2.pyi", "ttrpc_pb2.py", "ttrpc_pb2.pyi"]
    assert genproto.stale_files(tmp_path) == []
    assert genproto.main(["--check"]) == 0
