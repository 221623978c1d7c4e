#!/usr/bin/env bash
# Build bench/PROGRAM/main.go against NRI 0.6.1 (the version containerd 1.7.24 is built with)
# from Debian trixie's Go -dev packages. PROGRAM is nri_go_trivial (the default: a no-op plugin
# on containerd's Go stub, the anchor bench/nri.py measures gpu-cdi-nri against) or
# nri_go_runtime (NRI's runtime-side adaptation, containerd's code: bench/nri.py's load generator).
#
#   bash bench/nri_go_trivial/build.sh [PROGRAM]   # prints the binary's path on stdout
#
# Output: ${GPU_CDI_CACHE:-<repo>/.cache}/bench/PROGRAM (+ .stamp). Nothing runs when the
# stamp (main.go, this script, the cached .deb names) matches. Packages come through
# tests/e2e/trixie-apt.sh (a separate apt configuration); GOPATH mode with GOPROXY=off compiles
# nothing but them. Go is $GO or `go` on PATH (tests/e2e/install.sh provides one).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PROG=${1:-nri_go_trivial}
case $PROG in
  nri_go_trivial | nri_go_runtime) ;;
  *) printf 'nri_go_trivial/build.sh: unknown program %s (nri_go_trivial or nri_go_runtime)\n' "$PROG" >&2; exit 2 ;;
esac
SRC=$REPO/bench/$PROG
OUT=${GPU_CDI_CACHE:-$REPO/.cache}/bench
BIN=$OUT/$PROG
DEBS=$OUT/go-debs
# what github.com/containerd/nri/pkg/stub and pkg/adaptation import, all the way down
PKGS=(
  golang-github-containerd-nri-dev golang-github-containerd-ttrpc-dev
  golang-github-kubernetes-cri-api-dev golang-github-opencontainers-specs-dev
  golang-github-sirupsen-logrus-dev golang-github-gogo-protobuf-dev
  golang-github-golang-protobuf-1-5-dev golang-google-protobuf-dev golang-google-grpc-dev
  golang-google-genproto-dev golang-golang-x-sys-dev golang-golang-x-net-dev
  golang-golang-x-text-dev
)

log() { printf 'nri_go_trivial/build.sh (%s): %s\n' "$PROG" "$*" >&2; }

have_all_debs() {
  local p
  for p in "${PKGS[@]}"; do compgen -G "$DEBS/${p}_*.deb" >/dev/null || return 1; done
}

stamp_key() {
  { sha256sum "$SRC/main.go" "$HERE/build.sh" | cut -d' ' -f1; (cd "$DEBS" && ls -1 -- *.deb); } \
    | sha256sum | cut -d' ' -f1
}

if [[ -x "$BIN" && -f "$BIN.stamp" ]] && have_all_debs && [[ "$(cat "$BIN.stamp")" == "$(stamp_key)" ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$OUT"
if ! have_all_debs; then
  # shellcheck source=../../tests/e2e/trixie-apt.sh
  source "$REPO/tests/e2e/trixie-apt.sh"
  log "downloading ${#PKGS[@]} trixie -dev packages"
  rm -rf "$DEBS.new"
  trixie_download "$DEBS.new" "${PKGS[@]}" >&2
  rm -rf "$DEBS"
  mv "$DEBS.new" "$DEBS"
fi

GOBIN=${GO:-$(command -v go || true)}
[[ -x "$GOBIN" ]] || { log "no Go: set GO or run tests/e2e/install.sh"; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for deb in "$DEBS"/*.deb; do dpkg-deb -x "$deb" "$WORK/root"; done
mkdir -p "$WORK/gopath/src/$PROG" "$OUT/gocache"
cp "$SRC/main.go" "$WORK/gopath/src/$PROG/"
(
  cd "$WORK/gopath/src/$PROG"
  export GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off CGO_ENABLED=0
  export GOPATH="$WORK/gopath:$WORK/root/usr/share/gocode" GOCACHE="$OUT/gocache"
  unset GOROOT
  log "building with $("$GOBIN" version)"
  "$GOBIN" build -trimpath -o "$BIN.tmp" .
)
mv -f "$BIN.tmp" "$BIN"
stamp_key >"$BIN.stamp"
echo "$BIN"
