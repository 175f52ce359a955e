#!/usr/bin/env bash
# Install a fast BLAS for MLX's CPU backend on Linux (the mlx-cpu wheel links a slow reference BLAS).
# tinygpt_mlx loads it automatically at import. macOS uses Accelerate: nothing to do.
set -u
[ "$(uname -s)" = "Linux" ] || exit 0
for lib in /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0 \
           /usr/lib64/libopenblasp.so.0 /usr/lib64/libopenblas.so.0; do
  [ -e "$lib" ] && exit 0
done
if command -v apt-get >/dev/null 2>&1; then
  install=(apt-get install -y -qq libopenblas0-pthread)
  update=(apt-get update -qq)
elif command -v dnf >/dev/null 2>&1; then
  install=(dnf install -y -q openblas)
  update=(true)
else
  echo "install_blas: no apt-get or dnf; install OpenBLAS yourself or set TINYGPT_BLAS=/path/to/libopenblas.so" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "install_blas: need root to run: ${install[*]} (training will be ~30x slower without it)" >&2
  exit 0
fi
echo "install_blas: ${install[*]}"
"${sudo[@]}" "${update[@]}" >/dev/null 2>&1 || true
"${sudo[@]}" "${install[@]}" >/dev/null || echo "install_blas: install failed; MLX will use its slow reference BLAS" >&2
exit 0
