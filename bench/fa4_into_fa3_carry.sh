#!/usr/bin/env bash
# The repository grew past the room the full CuTe DSL + FA4 bundle leaves (64 MiB per upload), so
# build the CuTe DSL bundle without FA4 and let FA4 (+ quack + TVM FFI, ~2.4 MB) travel with FA3:
#   WITH_FA4=0 bash ../shared/device/cute-bundle.sh && bash ../shared/device/fa3-bundle.sh
#   bash bench/fa4_into_fa3_carry.sh          # adds fa4.tar.xz to .device-carry-fa3 and unpacks it there
# Call A (carry .device-carry) then has CuTe DSL only (our kernel launches through DLPack, no TVM FFI);
# call B (carry .device-carry-fa3) adds FA3, FA4, quack and TVM FFI. Used for bench/p1g_device.sh.
set -euo pipefail
C=${HOME}/.cache/avo-device-bundle/cute-${CUTE_VER:-4.8.1}-fa4-${FA4_VER:-4.0.0b36}
D=${1:-.device-carry-fa3}
[ -f "$D/activate.sh" ] || { echo "no $D/activate.sh: run ../shared/device/fa3-bundle.sh first" >&2; exit 1; }
S=$(mktemp -d)
for w in "$C"/whl/flash_attn_4-*.whl "$C"/whl/quack_kernels-*.whl "$C"/whl/apache_tvm_ffi-*.whl; do (cd "$S" && unzip -q -o "$w"); done
rm -rf "$S"/tvm_ffi/3rdparty "$S"/tvm_ffi/src
tar -C "$S" -cf - . | xz -9e -T2 > "$D/fa4.tar.xz"
rm -rf "$S"
grep -q fa4.tar.xz "$D/activate.sh" || cat >> "$D/activate.sh" <<'ACT'
# FA4 + quack + TVM FFI travel here (bench/fa4_into_fa3_carry.sh)
if [ -f "$_b/fa4.tar.xz" ] && [ ! -f /tmp/site/.avo-fa4-ok ]; then
  mkdir -p /tmp/site && tar -C /tmp/site -xJf "$_b/fa4.tar.xz" && touch /tmp/site/.avo-fa4-ok
fi
ACT
echo "$D: $(du -sh "$D" | cut -f1)"
