"""Regenerate (or check) the committed protobuf modules in nri_plugin/protocol/gen/.

    python -m nri_plugin.protocol.genproto            # rewrite gen/*_pb2.py(i) from specs/nri
    python -m nri_plugin.protocol.genproto --check    # exit 1 if gen/ is not current

Only grpcio-tools' bundled protoc is used, so the output does not depend on a system protoc.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPEC_ROOT = REPO / "specs"
PROTOS = ("nri/ttrpc.proto", "nri/api.proto")
GEN_DIR = Path(__file__).resolve().parent / "gen"
GEN_INIT = '"""Generated protobuf modules; regenerate with `make proto`. Do not edit."""\n'
# Lines that only record which protoc/protobuf produced a file; a different grpcio-tools
# release changes them without changing a single message.
VERSION_MARKERS = (
    "Protobuf Python Version:",
    "_runtime_version.",
    "NO CHECKED-IN PROTOBUF GENCODE",
)


class GenprotoError(Exception):
    """protoc failed, or a source .proto is missing."""


def generate(out_dir: Path, protos: tuple[str, ...] = PROTOS) -> dict[str, str]:
    """Run protoc on `protos` (under specs/) into `out_dir`; return {name in gen/: content}."""
    # grpcio-tools is a development dependency only, hence the late import.
    import grpc_tools  # type: ignore[import-untyped]
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    for proto in protos:
        if not (SPEC_ROOT / proto).is_file():
            raise GenprotoError(f"missing {SPEC_ROOT / proto}")
    args = [
        "protoc",
        f"-I{SPEC_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise GenprotoError(f"protoc failed: {' '.join(args)}")
    files = {"__init__.py": GEN_INIT}
    for proto in protos:
        stem = Path(proto).with_suffix("")
        for ext in ("_pb2.py", "_pb2.pyi"):
            produced = out_dir / f"{stem}{ext}"
            files[produced.name] = produced.read_text(encoding="utf-8")
    return files


def normalized(text: str) -> str:
    """Content without the protoc version stamps (see VERSION_MARKERS)."""
    return "\n".join(
        line for line in text.splitlines() if not any(m in line for m in VERSION_MARKERS)
    )


def stale_files(gen_dir: Path = GEN_DIR, protos: tuple[str, ...] = PROTOS) -> list[str]:
    """Names of files in gen/ that differ from what protoc produces now (or are missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp), protos)
    stale = []
    for name, content in sorted(fresh.items()):
        path = gen_dir / name
        if not path.is_file() or normalized(path.read_text(encoding="utf-8")) != normalized(
            content
        ):
            stale.append(name)
    return stale


def write(gen_dir: Path = GEN_DIR, protos: tuple[str, ...] = PROTOS) -> list[str]:
    """Regenerate gen/; returns the names of the files written."""
    gen_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp), protos)
    for name, content in fresh.items():
        target = gen_dir / name
        tmp_path = target.with_name(f".{name}.tmp")
        tmp_path.write_text(content, encoding="utf-8")
        tmp_path.replace(target)
    return sorted(fresh)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_files()
            if stale:
                print(f"stale in {GEN_DIR}: {', '.join(stale)}; run `make proto`", file=sys.stderr)
                return 1
            print(f"{GEN_DIR} is current")
            return 0
        for name in write():
            print(f"wrote {GEN_DIR / name}")
    except GenprotoError as exc:
        print(f"genproto: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
