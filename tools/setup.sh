#!/usr/bin/env bash
# Installs the Debian packages tractor-c needs to build and test, and only
# those that are missing: on a machine that has them all it does nothing
# (no apt-get update, no network).  Run as root (or with sudo available).
set -euo pipefail

# libclang-rt-dev: clang's sanitizer and libFuzzer runtimes (only a
# Recommends of clang, which --no-install-recommends would skip).
# iproute2: the `ip` program, with which the multi-host tests make their
# network namespaces, veth pairs and bridge (tests/support/netns.h); a
# minimal image lacks it, and those tests would only skip.
# libsodium-dev: the MAC of the channels' challenge-response (HMAC-SHA-512-256,
# constant-time verify) and fresh nonces from the OS (transport/auth.h).
# python3: the layering check (ctest "layers", tools/layers.py), which
# CMake leaves out where there is no interpreter.
PKGS=(cmake make gcc clang libclang-rt-dev pkg-config libck-dev libprotobuf-c-dev
      protobuf-c-compiler libcriterion-dev iproute2 libsodium-dev python3)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
echo "tools/setup.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
