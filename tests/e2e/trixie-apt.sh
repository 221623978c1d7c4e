#!/usr/bin/env bash
# Compatibility name for `debian-apt.sh trixie ...` (tests/e2e/debian-apt.sh has the code):
# sourcing it gives trixie_download / trixie_unpack / trixie_version / trixie_apt.
HERE_TRIXIE_APT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/debian-apt.sh
. "$HERE_TRIXIE_APT/debian-apt.sh"
TRIXIE_DIR=$(debian_dir trixie)
trixie_apt() { debian_apt trixie "$@"; }
trixie_download() { debian_download trixie "$@"; }
trixie_unpack() { debian_unpack trixie "$@"; }
trixie_version() { debian_version trixie "$@"; }
if [ "${BASH_SOURCE[0]}" = "$0" ]; then exec bash "$HERE_TRIXIE_APT/debian-apt.sh" trixie "$@"; fi
