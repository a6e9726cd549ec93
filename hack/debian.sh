#!/usr/bin/env bash
# Debian packages the scripts install, held against the known-good list hack/debian-packages.txt
# (the Go tools are pinned in hack/versions.env, the Python tree in uv.lock; this is the same for
# apt). Debian's mirrors serve only a suite's newest version, so a version cannot be pinned at
# install time: every install prints what it got and fails when that is not the recorded one.
#
#   hack/debian.sh install SCOPE PKG...   apt-get install what is missing (as root), then check
#   hack/debian.sh check SCOPE PKG...     print the installed versions; exit 1 unless known-good
#   hack/debian.sh record SCOPE PKG...    write the installed versions into the list (after testing them)
#   hack/debian.sh check-image SCOPE IMAGE PKG...   the same, for packages inside a Docker image
#
# Scripts source it and call debian_install / debian_check / debian_check_image.
# SCOPE is `host` (this machine) or `image-base` (the debootstrapped base of the images).
set -euo pipefail
debian_list=${EXPORTJOBS_DEBIAN_LIST:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/debian-packages.txt}

_debian_log() { printf '[debian] %s\n' "$*" >&2; }

# The known-good version of package $2 in scope $1 (empty when none is recorded).
debian_known() {
  awk -v s="$1" -v p="$2" '$1 == s && $2 == p { print $3 }' "$debian_list"
}

# Reads "package version" lines on stdin; prints each and returns 1 if any is not known-good.
_debian_verify() {
  local scope=$1 bad=0 pkg version known
  while read -r pkg version; do
    pkg=${pkg%%:*}
    known=$(debian_known "$scope" "$pkg")
    if [ -z "$version" ]; then
      _debian_log "$scope $pkg: not installed"; bad=1
    elif [ "$version" = "$known" ]; then
      _debian_log "$scope $pkg $version (known-good)"
    elif [ -z "$known" ]; then
      _debian_log "$scope $pkg $version: no known-good version in hack/debian-packages.txt"; bad=1
    else
      _debian_log "$scope $pkg $version is not the known-good $known"; bad=1
    fi
  done
  if [ "$bad" = 1 ]; then
    _debian_log "error: test the versions above, then record them: hack/debian.sh record $scope <package>..."
    return 1
  fi
}

_debian_query() {
  local pkg
  for pkg in "$@"; do
    printf '%s %s\n' "$pkg" "$(dpkg-query -W -f '${db:Status-Status} ${Version}' "$pkg" 2>/dev/null |
      awk '$1 == "installed" { print $2 }')"
  done
}

debian_check() {
  local scope=$1; shift
  _debian_query "$@" | _debian_verify "$scope"
}

debian_check_image() {
  local scope=$1 image=$2 installed; shift 2
  installed=$(docker run --rm --network none --entrypoint dpkg-query "$image" \
    -W -f '${Package} ${db:Status-Status} ${Version}\n')
  local pkg
  for pkg in "$@"; do
    printf '%s %s\n' "$pkg" "$(awk -v p="$pkg" '$1 == p && $2 == "installed" { print $3 }' <<<"$installed")"
  done | _debian_verify "$scope"
}

debian_install() {
  local scope=$1 missing=() pkg; shift
  for pkg in "$@"; do
    dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { _debian_log "error: ${missing[*]} missing (as root: apt-get install -y ${missing[*]})"; return 1; }
    _debian_log "installing ${missing[*]}"
    # Another script (the real node's, an image build) may hold dpkg's lock: wait, do not fail.
    local apt=(apt-get -o DPkg::Lock::Timeout=600)
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "${missing[@]}" >/dev/null; then
      "${apt[@]}" update >/dev/null
      DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "${missing[@]}" >/dev/null
    fi
  fi
  debian_check "$scope" "$@"
}

debian_record() {
  local scope=$1 pkg version tmp; shift
  for pkg in "$@"; do
    version=$(dpkg-query -W -f '${Version}' "$pkg")
    tmp=$(mktemp)
    awk -v s="$scope" -v p="$pkg" -v v="$version" '
      $1 == s && $2 == p { printf "%-10s %-27s %s\n", s, p, v; done = 1; next } { print }
      END { if (!done) printf "%-10s %-27s %s\n", s, p, v }' "$debian_list" >"$tmp"
    cat "$tmp" >"$debian_list" && rm -f "$tmp"
    _debian_log "recorded $scope $pkg $version"
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case ${1:-} in
    install) shift; debian_install "$@" ;;
    check) shift; debian_check "$@" ;;
    check-image) shift; debian_check_image "$@" ;;
    record) shift; debian_record "$@" ;;
    *) _debian_log "error: unknown command '${1:-}' (install|check|check-image|record)"; exit 1 ;;
  esac
fi
