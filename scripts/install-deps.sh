#!/usr/bin/env bash
# Installs fragile's build and test dependencies from Debian packages.
# Usage: sudo scripts/install-deps.sh   (root: no sudo needed)
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
packages=(
  build-essential cmake ninja-build pkg-config
  libeigen3-dev libxtensor-dev xtl-dev libxsimd-dev
  libboost-math1.74-dev catch2 nlohmann-json3-dev libcli11-dev libfmt-dev
  libbenchmark-dev libthrust-dev libcub-dev libpcre2-dev libomp-dev
  clang libclang-rt-dev
  bible-kjv libopenblas-openmp-dev libxxhash-dev
  gnuplot-nox chromium
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "fragile dependencies installed"
