"""Regenerate (or check) specs/kubelet/api.proto and the committed modules in gen/.

    python -m device_plugin.api.genproto            # refresh the .proto, then gen/*_pb2.py(i)
    python -m device_plugin.api.genproto --check    # exit 1 if gen/ is not current

The .proto is kubelet's official v1beta1 device-plugin API (Debian's
golang-github-kubernetes-kubelet-dev, `k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto`)
with the gogoproto options taken out: they only steer Go code generation, and field names and
numbers stay as they are. The official file is found through $KUBELET_PROTO or the KUBELET_PROTO
line of tests/e2e/install.sh's env file; without it the committed .proto is kept.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from nri_plugin.protocol import genproto

PROTO = "kubelet/api.proto"
PROTO_PATH = genproto.SPEC_ROOT / PROTO
GEN_DIR = Path(__file__).resolve().parent / "gen"
IN_PACKAGE = "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto"
E2E_ENV = Path(os.environ.get("GPU_CDI_E2E_PREFIX", "/opt/gpu-cdi-e2e")) / "env"
HEADER = (
    "// kubelet's device-plugin API v1beta1, from Debian's golang-github-kubernetes-kubelet-dev\n"
    f"// ({IN_PACKAGE}) with the gogoproto options removed.\n"
    "// Regenerate with `make proto`; tests/device_plugin/test_api.py compares it with the\n"
    "// official file field by field. Do not edit.\n"
)
_GOGO_FIELD_OPTION = re.compile(r"\s*\[\(gogoproto\.[^\]]*\]")


def strip_gogo(text: str) -> str:
    """The .proto without gogoproto's import, file options and field options."""
    lines = []
    for line in text.splitlines():
        if re.match(r"\s*(import\s+\"github.com/gogo/|option\s+\(gogoproto\.)", line):
            continue
        lines.append(_GOGO_FIELD_OPTION.sub("", line))
    return "\n".join(lines) + "\n"


def official_proto() -> Path | None:
    """The official api.proto named by $KUBELET_PROTO or install.sh's env file, if present."""
    given = os.environ.get("KUBELET_PROTO")
    if given is None and E2E_ENV.is_file():
        for line in E2E_ENV.read_text(encoding="utf-8").splitlines():
            if line.startswith("KUBELET_PROTO="):
                given = line.partition("=")[2].strip()
    return Path(given) if given and Path(given).is_file() else None


def refresh_proto(official: Path) -> bool:
    """Rewrite specs/kubelet/api.proto from the official file; True when it changed."""
    text = HEADER + strip_gogo(official.read_text(encoding="utf-8"))
    if PROTO_PATH.is_file() and PROTO_PATH.read_text(encoding="utf-8") == text:
        return False
    PROTO_PATH.parent.mkdir(parents=True, exist_ok=True)
    tmp = PROTO_PATH.with_name(f".{PROTO_PATH.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(PROTO_PATH)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = genproto.stale_files(GEN_DIR, (PROTO,))
            if stale:
                print(f"stale in {GEN_DIR}: {', '.join(stale)}; run `make proto`", file=sys.stderr)
                return 1
            print(f"{GEN_DIR} is current")
            return 0
        official = official_proto()
        if official is None:
            print(f"no official {IN_PACKAGE} (KUBELET_PROTO): keeping {PROTO_PATH}")
        elif refresh_proto(official):
            print(f"wrote {PROTO_PATH} from {official}")
        for name in genproto.write(GEN_DIR, (PROTO,)):
            print(f"wrote {GEN_DIR / name}")
    except genproto.GenprotoError as exc:
        print(f"genproto: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
