#!/usr/bin/env bash
# Installs the Debian packages moe needs (only the missing ones), configures
# once and builds incrementally. Sourced by scripts/run.sh and scripts/test.sh.
set -euo pipefail

MOE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOE_BUILD=${MOE_BUILD_DIR:-$MOE_ROOT/build}
# For a new build dir (MOE_BUILD_DIR): MOE_BUILD_COMPILER=OFF builds the
# runtime and its tests only, without LLVM/MLIR; MOE_ENABLE_CUDA=OFF leaves
# out the CUDA backend; MOE_FUZZ=ON builds with clang, ASan and UBSan, and
# the fuzz targets (test/fuzz); with the compiler, by clang 22 (the LLVM it
# links). MOE_BUILD_TARGETS builds only those targets.
MOE_BUILD_COMPILER=${MOE_BUILD_COMPILER:-ON}
MOE_ENABLE_CUDA=${MOE_ENABLE_CUDA:-ON}
MOE_FUZZ=${MOE_FUZZ:-OFF}
MOE_BUILD_TARGETS=${MOE_BUILD_TARGETS:-}
compiler_packages=(llvm-22-dev llvm-22-tools libmlir-22-dev mlir-22-tools)
compiler_options=(-DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir
                  -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit)
if [ "$MOE_BUILD_COMPILER" != ON ]; then
  compiler_packages=()
  compiler_options=(-DMOE_BUILD_COMPILER=OFF)
fi

packages=(
  cmake ninja-build g++ python3 "${compiler_packages[@]}"
  libflatbuffers-dev flatbuffers-compiler flatbuffers-compiler-dev libfmt-dev
  libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev
  libpcre2-dev libutf8proc-dev
  openmpi-bin # mpirun, for the test of a job in shards over several ranks
)
fuzz_clang=(clang clang++)
if [ "$MOE_FUZZ" = ON ] && [ "$MOE_BUILD_COMPILER" = ON ]; then
  fuzz_clang=(clang-22 clang++-22)
  packages+=(clang-22 libclang-rt-22-dev)
elif [ "$MOE_FUZZ" = ON ]; then
  packages+=(clang)
fi
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if ((${#missing[@]})); then
  echo "moe: installing ${missing[*]}" >&2
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -f "$MOE_BUILD/build.ninja" ]; then
  compilers=()
  [ "$MOE_FUZZ" = ON ] &&
    compilers=(-DCMAKE_C_COMPILER="${fuzz_clang[0]}" -DCMAKE_CXX_COMPILER="${fuzz_clang[1]}")
  cmake -G Ninja -S "$MOE_ROOT" -B "$MOE_BUILD" \
    -DCMAKE_BUILD_TYPE=Release "${compilers[@]}" -DMOE_FUZZ="$MOE_FUZZ" \
    -DMOE_ENABLE_CUDA="$MOE_ENABLE_CUDA" "${compiler_options[@]}" \
    -DPython3_EXECUTABLE=/usr/bin/python3
fi
cmake --build "$MOE_BUILD" ${MOE_BUILD_TARGETS:+--target $MOE_BUILD_TARGETS}
