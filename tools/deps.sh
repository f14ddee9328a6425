#!/usr/bin/env bash
# Installs, with apt, whatever of actiond's build and test dependencies is
# missing on a Debian 12 machine.  Sourced by tools/test and tools/run.
ad_install_deps() {
  local pkgs=(meson ninja-build pkg-config gcc libc6-dev libwebsockets-dev libjansson-dev
              libsodium-dev libpq-dev libcurl4-openssl-dev ca-certificates libssl-dev
              openssl curl systemd "$@")
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
