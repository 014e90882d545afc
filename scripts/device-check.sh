#!/usr/bin/env bash
# Check the trainer on this machine's accelerator: tiny-qwen3 and random-qwen3-0.6b, full-weight
# and LoRA, ~50 steps each, by hand and through a registry worker (scripts/device_check.py says
# what is printed). For a machine where JAX (with CUDA, for a GPU) is already installed: it uses
# PYTHON, else .venv/bin/python when that imports jax, else python3. What that Python lacks is
# installed into it: the project (`pip install -e .`, Django and the rest, no JAX) and the tunix
# extra's pins minus jax/jaxlib (the machine's own JAX stays).
#
#   scripts/device-check.sh [--cpu] [--quick] [--steps 50] [--dry-run] [--keep]
#
# On a machine without a GPU: `scripts/device-check.sh --cpu --quick` (tiny model, a few steps).
set -euo pipefail
cd "$(dirname "$0")/.."

py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import jax' 2>/dev/null; then
    py=.venv/bin/python
  else
    py=python3
  fi
fi

for arg in "$@"; do
  case "$arg" in
    -h|--help|--dry-run) exec "$py" scripts/device_check.py "$@" ;;
  esac
done

if ! "$py" -c 'import jax' 2>/dev/null; then
  echo "error: $py cannot import jax: install JAX for this machine first" \
    "(a GPU: pip install -e '.[gpu]'; the CPU: pip install -e '.[tunix]')" >&2
  exit 2
fi
# Found, not imported: some of these read Django's settings when imported.
has() {
  "$py" -c 'import importlib.util, sys; sys.exit(not all(importlib.util.find_spec(m) for m in sys.argv[1:]))' "$@"
}
if ! has django ninja django_tasks django_tasks_db yaml; then
  "$py" -m pip install --quiet -e .
fi
if ! has tunix qwix orbax safetensors sentencepiece; then
  mapfile -t pins < <("$py" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    extra = tomllib.load(f)["project"]["optional-dependencies"]["tunix"]
for pin in extra:
    if pin.split("[")[0].split("=")[0].strip() not in ("jax", "jaxlib"):
        print(pin)
PY
)
  "$py" -m pip install --quiet "${pins[@]}"
fi
"$py" -c 'import jax; print("jax", jax.__version__, jax.devices())'
exec "$py" scripts/device_check.py "$@"
