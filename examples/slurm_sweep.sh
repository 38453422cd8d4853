#!/usr/bin/env bash
# A shape sweep over many GPU nodes with Slurm: one array task per shard, then one job that merges the shards.
#
#   sbatch --array=0-7 examples/slurm_sweep.sh                      # 8 shards, one GPU each
#   SHAPES=shapes/sweep.yml FORMATS=all sbatch --array=0-31 examples/slurm_sweep.sh
#
# Each array task runs `fp4bench run --shard I/N`: a deterministic, cost-balanced share of the same case plan
# (every task computes the same split from the same shape file, kernels and formats). The last task to
# finish is not special: a separate job, submitted once by task 0 with a dependency on the whole array,
# runs `fp4bench merge`, which refuses shards from different GPU models or fp4bench commits. The merged
# document is what `fp4bench report` and `fp4bench compare` read.
#SBATCH --job-name=fp4bench-sweep
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=02:00:00
#SBATCH --output=results/slurm-%A_%a.out
set -euo pipefail

SHAPES=${SHAPES:-shapes/task.yml}
FORMATS=${FORMATS:-nvfp4,mxfp4}
OUT=${OUT:-results/sweep-${SLURM_ARRAY_JOB_ID}}
: "${SLURM_ARRAY_TASK_ID:?submit as a job array: sbatch --array=0-N examples/slurm_sweep.sh}"
COUNT=${SLURM_ARRAY_TASK_COUNT}
INDEX=$((SLURM_ARRAY_TASK_ID + 1))
mkdir -p "$OUT"

if [ "$SLURM_ARRAY_TASK_ID" = 0 ]; then
    # The merge job waits for every shard (afterany: a shard with failing cases still has results to merge).
    sbatch --dependency="afterany:${SLURM_ARRAY_JOB_ID}" --job-name=fp4bench-merge --gres=gpu:0 \
        --output="$OUT/merge.out" \
        --wrap="fp4bench merge $OUT/shard-*.json -o $OUT/all.json && fp4bench report $OUT/all.json"
fi

# Exit 1 (a case failed) must not hide the results: they are in the JSON either way.
fp4bench run --shapes "$SHAPES" --format "$FORMATS" --shard "$INDEX/$COUNT" \
    --json "$OUT/shard-$INDEX.json" --quiet || [ $? -eq 1 ]
