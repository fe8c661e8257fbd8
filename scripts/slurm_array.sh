#!/usr/bin/env bash
# One tempo-lens experiment config as a Slurm array job, one shard per task, then the merge.
#
# Submit (outside Slurm): the array of N tasks and a merge job that starts once every task succeeded:
#
#     scripts/slurm_array.sh CONFIG OUT [N]          # N shards, default 4
#
# Each task i runs `tempo-lens run CONFIG --out OUT --shard i/N` into OUT/shard-i-of-N (written
# atomically); the merge job runs `tempo-lens merge OUT`, which checks that every shard is present and
# intact and replaces the shard folders by one experiment folder. `tempo-lens analyze` and
# `load_experiment(OUT)` read OUT either way. Resubmitting after a failure reruns only the shards
# that have no complete folder yet.
#
# Or submit the array yourself and the merge by hand:
#
#     JOB=$(sbatch --parsable --array=0-7 scripts/slurm_array.sh CONFIG OUT)
#     sbatch --dependency=afterok:$JOB --wrap "tempo-lens merge OUT"
#
# Environment (exported to the jobs, as sbatch does by default):
#   TEMPO_LENS    the command (default: tempo-lens; e.g. "/path/.venv/bin/tempo-lens" if no venv is active)
#   MODEL         overrides the config's model (a name or a directory every node can read)
#   SBATCH_ARGS   extra sbatch options for the array, e.g. "--partition=gpu --gres=gpu:1 --time=2:00:00"
#   MERGE_ARGS    sbatch options for the merge job (default "--mem=16G --time=1:00:00"; it reads every array)
#
#SBATCH --job-name=tempo-lens
#SBATCH --array=0-3
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=4:00:00
#SBATCH --output=slurm-%x-%A_%a.out

set -euo pipefail

TEMPO_LENS=${TEMPO_LENS:-tempo-lens}

usage() {
    echo "usage: $0 CONFIG OUT [N]   (submits N shard tasks and the merge; N defaults to 4)" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
CONFIG=$1
OUT=$2

if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then
    # One array task: shard i of N. N is the array's size unless SHARDS says otherwise.
    N=${SHARDS:-${SLURM_ARRAY_TASK_COUNT:?not an array job: SLURM_ARRAY_TASK_COUNT is unset}}
    I=$SLURM_ARRAY_TASK_ID
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}   # torch would count the node's cores
    if [[ -f "$OUT/shard-$I-of-$N/metadata.json" ]]; then
        echo "shard $I/$N already complete in $OUT/shard-$I-of-$N; nothing to do"
        exit 0
    fi
    exec $TEMPO_LENS run "$CONFIG" --out "$OUT" --shard "$I/$N" ${MODEL:+--model "$MODEL"}
fi

# Outside Slurm: submit the array, then the merge that waits for it.
N=${3:-4}
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "error: N must be a positive integer, got '$N'" >&2; exit 2; }
[[ -f "$CONFIG" ]] || { echo "error: no config file $CONFIG" >&2; exit 2; }
# shellcheck disable=SC2086  # SBATCH_ARGS is a list of options
ARRAY_JOB=$(sbatch --parsable ${SBATCH_ARGS:-} --array="0-$((N - 1))" --export=ALL,SHARDS="$N" "$0" "$CONFIG" "$OUT")
ARRAY_JOB=${ARRAY_JOB%%;*}   # "jobid;cluster" on multi-cluster set-ups
# shellcheck disable=SC2086
MERGE_JOB=$(sbatch --parsable ${MERGE_ARGS:---mem=16G --time=1:00:00} --job-name=tempo-lens-merge --dependency="afterok:$ARRAY_JOB" \
    --output="slurm-%x-%j.out" --wrap "$TEMPO_LENS merge $(printf '%q' "$OUT")")
echo "submitted array job $ARRAY_JOB ($N shards of $CONFIG into $OUT) and merge job ${MERGE_JOB%%;*} (after all succeed)"
