#!/usr/bin/env bash
# Installs the build tree into a scratch prefix and builds the README's
# example against it: with pkg-config (tractor.pc), against libtractor.a
# without LTO (gcc and clang), and with CMake's find_package(tractor).
# Every program must run and print the right sum.
# Usage: check_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD=$1
SRC=$2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

cmake --install "$BUILD" --prefix "$TMP/prefix" >/dev/null
LIBDIR=$(ls -d "$TMP"/prefix/lib*/pkgconfig | head -1 | xargs dirname)
test -e "$LIBDIR/libtractor.so.0" || { echo "missing SONAME link libtractor.so.0"; exit 1; }

# pkg-config consumer.
export PKG_CONFIG_PATH="$LIBDIR/pkgconfig"
cc -std=gnu11 -Wall -Werror "$SRC/examples/counter.c" -o "$TMP/counter_pc" \
   $(pkg-config --cflags --libs tractor)
LD_LIBRARY_PATH="$LIBDIR" "$TMP/counter_pc" | grep -qx 'sum = 45'

# The static library, linked without LTO by both compilers: with LTO on
# (TR_LTO: optimised gcc builds, the normal CI build too) its objects carry
# machine code besides gcc's LTO bytecode, so neither gcc -fno-lto nor
# clang needs the bytecode.
PRIV=$(pkg-config --static --libs tractor | sed 's/-ltractor\b//')
for c in gcc clang; do
  command -v "$c" >/dev/null || continue
  extra=
  [ "$c" = gcc ] && extra=-fno-lto
  "$c" -std=gnu11 -Wall -Werror $extra "$SRC/examples/counter.c" -o "$TMP/counter_static_$c" \
     $(pkg-config --cflags tractor) "$LIBDIR/libtractor.a" $PRIV
  "$TMP/counter_static_$c" | grep -qx 'sum = 45'
done

# CMake consumer.
mkdir -p "$TMP/consumer"
cat >"$TMP/consumer/CMakeLists.txt" <<CMK
cmake_minimum_required(VERSION 3.22)
project(consumer C)
find_package(tractor 0.1 REQUIRED)
add_executable(counter_cmake $SRC/examples/counter.c)
target_link_libraries(counter_cmake PRIVATE tractor::tractor)
CMK
cmake -S "$TMP/consumer" -B "$TMP/consumer/build" \
      -DCMAKE_PREFIX_PATH="$TMP/prefix" >/dev/null
cmake --build "$TMP/consumer/build" >/dev/null
LD_LIBRARY_PATH="$LIBDIR" "$TMP/consumer/build/counter_cmake" | grep -qx 'sum = 45'
# The installed registrar runs from the prefix alone (no LD_LIBRARY_PATH).
env -u LD_LIBRARY_PATH "$TMP/prefix/bin/tractor-registry" --help | grep -q '^usage: tractor-registry' ||
  { echo "the installed tractor-registry does not run from its prefix"; exit 1; }
echo "install check: pkg-config, static (no LTO) and find_package consumers, and tractor-registry, OK"
