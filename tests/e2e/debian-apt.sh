#!/usr/bin/env bash
# Fetch packages of another Debian suite (trixie, sid, ...) on a bookworm machine WITHOUT touching
# the system's apt sources.
#
#   debian-apt.sh SUITE lists                 # make sure SUITE's package lists exist (update once)
#   debian-apt.sh SUITE update                # refresh SUITE's package lists
#   debian-apt.sh SUITE download DIR PKG...   # .deb files into DIR (PKG may be name=version)
#   debian-apt.sh SUITE unpack PREFIX PKG...  # download (cached) + `dpkg -x` into PREFIX
#   debian-apt.sh SUITE version PKG           # candidate version in SUITE
#   debian-apt.sh SUITE opts                  # the apt-get options, one per line
#
# Or source it and call debian_download / debian_unpack / debian_version / debian_apt with the
# suite as first argument.
#
# All apt state of a suite (sources.list, lists, archive cache, downloaded .debs) lives in its
# own directory: $<SUITE>_DIR if set (TRIXIE_DIR, SID_DIR), else $GPU_CDI_APT_CACHE/<suite>
# (default /var/cache/gpu-cdi/<suite>). sources.list is built from the mirror URI this system
# already uses for bookworm, so no host name is hard-coded and a local mirror keeps working.
# `unpack` records what it unpacked in PREFIX/.<suite>-packages (name version per line) and is a
# no-op for packages that record already lists.
# Nothing is installed with dpkg -i: packages are only extracted, so the system stays bookworm.

DEBIAN_KEYRING=${DEBIAN_KEYRING:-${TRIXIE_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}}

_da_log() { printf '[debian-apt] %s\n' "$*" >&2; }
_da_die() { printf '[debian-apt] ERROR: %s\n' "$*" >&2; return 1; }

# debian_dir SUITE: the apt state directory of SUITE.
debian_dir() {
  local var
  var="$(printf '%s' "$1" | tr '[:lower:]-' '[:upper:]_')_DIR"
  printf '%s\n' "${!var:-${GPU_CDI_APT_CACHE:-/var/cache/gpu-cdi}/$1}"
}

debian_opts() {
  local dir
  dir=$(debian_dir "$1")
  printf '%s\n' \
    -o "Dir::Etc::SourceList=$dir/sources.list" \
    -o "Dir::Etc::SourceParts=/dev/null" \
    -o "Dir::Etc::Preferences=/dev/null" \
    -o "Dir::Etc::PreferencesParts=/dev/null" \
    -o "Dir::State::Lists=$dir/lists" \
    -o "Dir::State::Status=$dir/status" \
    -o "Dir::Cache=$dir/cache" \
    -o "APT::Sandbox::User=root" \
    -o "Acquire::Retries=3"
}

# debian_apt SUITE ARGS...: apt-get with SUITE's private configuration.
debian_apt() {
  local opts
  mapfile -t opts < <(debian_opts "$1")
  shift
  apt-get "${opts[@]}" "$@"
}

# The Debian mirror URI this machine uses for bookworm (deb822 .sources or one-line format).
debian_mirror_uri() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # A stanza whose Suites include "bookworm" (not -security) and whose URI is not a security host.
    uri=$(awk '
      BEGIN { RS=""; FS="\n" }
      {
        u=""; s=""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); u=$i }
          if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); s=" " $i " " }
        }
        if (s ~ / bookworm / && u !~ /security/) { split(u, a, " "); print a[1]; exit }
      }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1=="deb" { i=2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                           if ($(i+1)=="bookworm" && $i !~ /security/) { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  echo "http://deb.debian.org/debian"
}

debian_update() {
  local suite=$1 dir
  dir=$(debian_dir "$suite")
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" || return 1
  touch "$dir/status"
  if [ ! -s "$dir/sources.list" ]; then
    [ -f "$DEBIAN_KEYRING" ] || _da_die "missing $DEBIAN_KEYRING (apt-get install debian-archive-keyring)" || return 1
    local uri
    uri=$(debian_mirror_uri)
    echo "deb [signed-by=$DEBIAN_KEYRING] $uri $suite main" >"$dir/sources.list"
    _da_log "wrote $dir/sources.list (mirror $uri)"
  fi
  _da_log "apt-get update ($suite lists in $dir/lists)"
  debian_apt "$suite" update -qq || _da_die "apt-get update for $suite failed (sources: $(cat "$dir/sources.list"))"
}

debian_lists() {
  if compgen -G "$(debian_dir "$1")/lists/*_$1_*Packages*" >/dev/null; then
    return 0
  fi
  debian_update "$1"
}

debian_version() {
  debian_lists "$1" || return 1
  debian_apt "$1" -qq --print-uris download "$2" 2>/dev/null | awk '{print $2}' | head -n1 \
    | sed -E 's/^[^_]+_([^_]+)_[^_]+\.deb$/\1/; s/%3a/:/g'
}

# debian_download SUITE DIR PKG...: .deb files into DIR. Retries once after refreshing the lists,
# because stale lists point at files the mirror no longer has.
debian_download() {
  local suite=$1 dir=$2
  shift 2
  [ $# -gt 0 ] || { _da_die "download: no packages given"; return 1; }
  mkdir -p "$dir" || return 1
  debian_lists "$suite" || return 1
  if ! (cd "$dir" && debian_apt "$suite" download -qq "$@" >/dev/null 2>&1); then
    _da_log "download failed; refreshing $suite lists and retrying"
    debian_update "$suite" || return 1
    (cd "$dir" && debian_apt "$suite" download -qq "$@") \
      || { _da_die "apt-get download $* ($suite) failed"; return 1; }
  fi
  local p name
  for p in "$@"; do
    name=${p%%=*}
    compgen -G "$dir/${name}_*.deb" >/dev/null || { _da_die "no ${name}_*.deb in $dir after download"; return 1; }
  done
}

# debian_unpack SUITE PREFIX PKG...: dpkg -x the packages into PREFIX (downloads cached in
# <suite dir>/debs).
debian_unpack() {
  local suite=$1 prefix=$2
  shift 2
  local record=$prefix/.$suite-packages p name missing=()
  for p in "$@"; do
    name=${p%%=*}
    if [ -f "$record" ] && grep -q "^$name " "$record"; then continue; fi
    missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    _da_log "already unpacked in $prefix: $*"
    return 0
  fi
  local debs
  debs=$(debian_dir "$suite")/debs
  debian_download "$suite" "$debs" "${missing[@]}" || return 1
  mkdir -p "$prefix" || return 1
  local deb
  for p in "${missing[@]}"; do
    name=${p%%=*}
    # Newest file of that name if several versions were cached over time.
    deb=$(printf '%s\n' "$debs/${name}"_*.deb | sort -V | tail -n1)
    dpkg -x "$deb" "$prefix" || { _da_die "dpkg -x $deb $prefix failed"; return 1; }
    printf '%s %s\n' "$name" "$(dpkg-deb -f "$deb" Version)" >>"$record"
    _da_log "unpacked $(basename "$deb") into $prefix"
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  usage() { sed -n '2,11p' "$0" >&2; exit 2; }
  [ $# -ge 2 ] || usage
  suite=$1 cmd=$2
  shift 2
  case "$cmd" in
    lists) debian_lists "$suite" ;;
    update) debian_update "$suite" ;;
    download) [ $# -ge 2 ] || usage; debian_download "$suite" "$@" ;;
    unpack) [ $# -ge 2 ] || usage; debian_unpack "$suite" "$@" ;;
    version) [ $# -eq 1 ] || usage; debian_version "$suite" "$1" ;;
    opts) debian_opts "$suite" ;;
    *) usage ;;
  esac
fi
