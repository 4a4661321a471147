#!/usr/bin/env bash
# Train the two LSP recipes on a CUDA GPU (mixed precision, the config's `amp`) and score what
# they produce on the held-out split, as docs/training.md reports them for the CPU:
#
#   bash benchmarks/recipes_gpu.sh [OUT_DIR (runs/gpu)] [LOADER_WORKERS (8)] [RECIPE ...]
#
# Recipes default to lsp_finetune and lsp_imagenet; extra `key=value` settings for every run
# can be given in $TRAIN_OVERRIDES (e.g. "amp_dtype=bfloat16").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu}
workers=${2:-8}
shift $(( $# < 2 ? $# : 2 ))
recipes=("$@")
[ ${#recipes[@]} -gt 0 ] || recipes=(lsp_finetune lsp_imagenet)
# `python` where it exists (a virtual environment), else `python3` (no `python` on many systems)
py=${PYTHON:-$(command -v python || command -v python3)}
gpu=$("$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name(0))")
for recipe in "${recipes[@]}"; do
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$py" -m movenet.cli train "configs/$recipe.yaml" --out "$out/$recipe" device=cuda \
        "data.num_workers=$workers" ${TRAIN_OVERRIDES:-}
    echo "$recipe: trained in $(( $(date +%s) - start )) s on $gpu"
    model="$out/$recipe/final.pt"
    [ -f "$model" ] || model="$out/$recipe/last.pt"
    "$py" benchmarks/lsp_finetune_pck.py --config "configs/$recipe.yaml" --model "$model" --threads 4
done
