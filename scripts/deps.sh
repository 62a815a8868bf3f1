#!/usr/bin/env bash
# Installs what xapid needs to build and test on Debian 12 (run as root).
# Only Debian's packages are used; everything else the tests need they
# build themselves.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libmicrohttpd-dev libgnutls28-dev libjson-c-dev libssl-dev libsqlite3-dev
  libcurl4-openssl-dev libpq-dev
  libcmocka-dev python3 python3-pytest
  clang cppcheck clang-format
  libclang-rt-dev llvm  # ASan/UBSan/libFuzzer runtimes, llvm-symbolizer
  nodejs npm ansible python3-os-xenapi
)

missing=()
for p in "${PACKAGES[@]}"; do
  # npm may come with a nodejs build that conflicts with Debian's package
  if [ "$p" = npm ] && command -v npm >/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
    || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
