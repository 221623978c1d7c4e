#!/usr/bin/env bash
# Build tests/conformance/main.go ("cdi-reference") against the reference CDI Go library
# exactly as Debian trixie packages it (golang-tags.cncf-container-device-interface-dev
# 0.8.0: the library build inside trixie's containerd 1.7 and podman 5.4).
#
#   bash tests/conformance/build.sh        # called by `make fixtures`
#
# Output: ${GPU_CDI_CACHE:-<repo>/.cache}/conformance/cdi-reference (+ .stamp).
# Idempotent and fast when nothing changed: the stamp is a hash of main.go, this script and
# the names/versions of the cached .deb files; if it matches, nothing runs (no apt, no Go).
# Only Debian packages are downloaded, through a separate trixie apt configuration (system
# apt sources are never touched). Go >= 1.21 is taken from $GO, PATH or /usr/lib/go-*; if
# none exists, golang-1.24-go is unpacked from trixie into the cache. Builds in GOPATH mode
# with GOPROXY=off, so nothing but the unpacked -dev packages is compiled in.
#
# Environment: GPU_CDI_CACHE (cache root), GO (a go binary), TRIXIE_DIR (apt state for
# trixie, see tests/e2e/trixie-apt.sh), GPU_CDI_REFRESH=1 (re-download the packages).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE_ROOT=${GPU_CDI_CACHE:-$REPO/.cache}
OUT=$CACHE_ROOT/conformance
BIN=$OUT/cdi-reference
STAMP=$BIN.stamp
DEBS=$OUT/debs
GODIR=$OUT/go
EXPECTED_CDI_UPSTREAM=0.8.0

# The -dev packages whose GOPATH trees (usr/share/gocode/src) main.go's imports need.
PKGS=(
  golang-tags.cncf-container-device-interface-dev   # tags.cncf.io/container-device-interface
  golang-github-opencontainers-specs-dev            # github.com/opencontainers/runtime-spec
  golang-github-opencontainers-runtime-tools-dev    # runtime-tools/generate (pkg/cdi uses it)
  golang-gocapability-dev                           # github.com/syndtr/gocapability
  golang-github-fsnotify-fsnotify-dev               # github.com/fsnotify/fsnotify
  golang-k8s-sigs-yaml-dev                          # sigs.k8s.io/yaml (+ its goyaml.v2 fork)
  golang-golang-x-mod-dev                           # golang.org/x/mod/semver
  golang-golang-x-sys-dev                           # golang.org/x/sys/unix
  golang-github-xeipuuv-gojsonschema-dev            # schema package
  golang-github-xeipuuv-gojsonreference-dev
  golang-github-xeipuuv-gojsonpointer-dev
)
GO_PKGS=(golang-1.24-go golang-1.24-src)

log() { printf 'conformance/build.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have_all_debs() {
  local p
  for p in "${PKGS[@]}"; do
    compgen -G "$DEBS/${p}_*.deb" >/dev/null || return 1
  done
}

stamp_key() {
  # Package names+versions are in the .deb file names; main.go and this script decide the rest.
  {
    sha256sum "$HERE/main.go" "$HERE/build.sh" | cut -d' ' -f1
    (cd "$DEBS" && ls -1 -- *.deb)
  } | sha256sum | cut -d' ' -f1
}

if [[ "${GPU_CDI_REFRESH:-0}" != 1 && -x "$BIN" && -f "$STAMP" ]] && have_all_debs \
  && [[ "$(cat "$STAMP")" == "$(stamp_key)" ]]; then
  log "up to date: $BIN"
  exit 0
fi

mkdir -p "$OUT"

# ------------------------------------------------------------ trixie packages
# tests/e2e/trixie-apt.sh is the project's one implementation of "download trixie .debs
# through a separate apt configuration" (it never touches the system's apt sources).
# shellcheck source=../e2e/trixie-apt.sh
source "$REPO/tests/e2e/trixie-apt.sh"

if [[ "${GPU_CDI_REFRESH:-0}" == 1 ]] || ! have_all_debs; then
  log "downloading ${#PKGS[@]} trixie -dev packages"
  rm -rf "$DEBS.new"
  trixie_download "$DEBS.new" "${PKGS[@]}"
  rm -rf "$DEBS"
  mv "$DEBS.new" "$DEBS"
fi
have_all_debs || die "missing .deb files in $DEBS"

cdi_deb=$(compgen -G "$DEBS/golang-tags.cncf-container-device-interface-dev_*.deb" | head -n1)
CDI_VERSION=$(dpkg-deb -f "$cdi_deb" Version)
[[ "$CDI_VERSION" == "$EXPECTED_CDI_UPSTREAM"-* ]] \
  || die "trixie's CDI library is $CDI_VERSION, the harness targets $EXPECTED_CDI_UPSTREAM"

ROOT=$OUT/root
rm -rf "$ROOT"
mkdir -p "$ROOT"
for deb in "$DEBS"/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done

# ------------------------------------------------------------ Go toolchain
go_ok() { # a go binary of version >= 1.21
  local v
  [[ -n "$1" && -x "$1" ]] || return 1
  v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go}
  [[ "${v%%.*}" -gt 1 ]] || { local minor=${v#1.}; [[ "${minor%%[^0-9]*}" -ge 21 ]]; }
}

find_go() {
  local c
  if [[ -n "${GO:-}" ]]; then
    go_ok "$GO" && { echo "$GO"; return 0; }
    die "GO=$GO is not a Go >= 1.21"
  fi
  for c in "$(command -v go 2>/dev/null || true)" \
    $(ls -1d /usr/lib/go-*/bin/go 2>/dev/null | sort -rV) \
    "$GODIR"/usr/lib/go-*/bin/go; do
    go_ok "$c" && { echo "$c"; return 0; }
  done
  return 1
}

if ! GOBIN=$(find_go); then
  log "no Go >= 1.21 found: unpacking ${GO_PKGS[*]} from trixie into $GODIR"
  rm -rf "$GODIR" "$OUT/godebs"
  trixie_download "$OUT/godebs" "${GO_PKGS[@]}"
  mkdir -p "$GODIR"
  for deb in "$OUT"/godebs/*.deb; do dpkg-deb -x "$deb" "$GODIR"; done
  rm -rf "$OUT/godebs"
  GOBIN=$(find_go) || die "no usable Go after unpacking ${GO_PKGS[*]}"
fi
log "using $("$GOBIN" version) ($GOBIN)"

# ------------------------------------------------------------ build (GOPATH mode, offline)
SRC=$OUT/src/cdi-reference
rm -rf "$SRC"
mkdir -p "$SRC" "$OUT/gocache" "$OUT/gopath"
cp "$HERE/main.go" "$SRC/"
(
  cd "$SRC"
  export GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off CGO_ENABLED=0
  export GOPATH="$ROOT/usr/share/gocode:$OUT/gopath" GOCACHE="$OUT/gocache"
  unset GOROOT
  # `go vet` would double a cold build's time; run it on request (GPU_CDI_VET=1).
  if [[ "${GPU_CDI_VET:-0}" == 1 ]]; then "$GOBIN" vet .; fi
  "$GOBIN" build -trimpath -o "$BIN.tmp" \
    -ldflags "-X main.libraryVersion=$CDI_VERSION" .
)

# ------------------------------------------------------------ smoke test
T=$(mktemp -d)
trap 'rm -rf "$T" "$BIN.tmp"' EXIT
printf 'cdiVersion: "0.3.0"\nkind: example.com/device\ndevices:\n- name: dev0\n  containerEdits:\n    env: [A=1]\n' >"$T/ok.yaml"
printf 'cdiVersion: "0.3.0"\nkind: example.com/device\ndevices:\n- name: "bad name"\n  containerEdits:\n    env: [A=1]\n' >"$T/bad.yaml"
"$BIN.tmp" validate "$T/ok.yaml" | grep -q '"ok": true' || die "smoke test: valid spec rejected"
"$BIN.tmp" validate "$T/bad.yaml" | grep -q '"ok": false' || die "smoke test: bad spec accepted"
mv -f "$BIN.tmp" "$BIN"
stamp_key >"$STAMP"
log "built $BIN ($("$BIN" version | tr '\n' ' '))"
