#!/usr/bin/env bash
# The seed preset's speed on a GPU: digitlab.fastfit, Keras defaults (model.fit) and a plain
# PyTorch loop, each 3 seeds, one JSON line per run on stdout (and in $OUT/gpu.jsonl if set).
#
# On a fresh machine with network:   bash benchmarks/gpu.sh
#   installs CUDA JAX (the project's `cuda` extra, jax[cuda12]) and Keras if missing.
# On the lent machine (no network; its image has CUDA JAX and PyTorch but not Keras): carry
#   wheels in .whl/ (keras, namex, optree for its Python) and the MNIST .npz that
#   `benchmarks/run_all.py` writes (benchmarks/out/mnist.npz), e.g. DATA=benchmarks/out/mnist.npz.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATA=${DATA:-benchmarks/out/mnist.npz}
SEEDS=${SEEDS:-"0 1 2"}

if ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  echo "installing CUDA JAX" >&2
  "$PY" -m pip install -q "jax[cuda12]>=0.6"
fi
if ! "$PY" -c "import keras" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    "$PY" -m pip install -q "keras>=3.10"
  fi
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
if [ ! -f "$DATA" ]; then  # digitlab fetches and verifies MNIST (needs network or its cache)
  "$PY" -c "import numpy as np, sys; from digitlab.data import load_dataset; \
(a, b), (c, d) = load_dataset('mnist'); np.savez(sys.argv[1], x_train=a, y_train=b, x_test=c, y_test=d)" "$DATA"
fi
"$PY" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" >&2
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >&2 || true

log=${OUT:+$OUT/gpu.jsonl}
for seed in $SEEDS; do
  for loop in fastfit fit; do
    "$PY" benchmarks/bench_fastfit.py --loop "$loop" --seed "$seed" --data "$DATA" \
      $([ "$seed" = "${SEEDS%% *}" ] && echo --inference) | tee -a "${log:-/dev/null}"
  done
  if "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    "$PY" benchmarks/bench_torch.py --device cuda --seed "$seed" --data "$DATA" \
      | tail -1 | tee -a "${log:-/dev/null}"
  fi
done
