#!/usr/bin/env bash
# A small sweep end to end on a real Slurm (SLURM_CONF; .ci/run starts one with
# slurm_local.sh): `groklens sweep slurm` submits a 2-task array and a collect job
# after it; shard 0 is killed midway by a requeue and must continue its runs from their
# checkpoints; the collect job must find every run finished, each trained exactly once
# per epoch. Without a cluster it says so and passes, unless GROKLENS_REQUIRE_SLURM=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! sinfo -h >/dev/null 2>&1; then
    if [[ "${GROKLENS_REQUIRE_SLURM:-0}" == 1 ]]; then
        echo "check_slurm_sweep.sh: no Slurm answers (SLURM_CONF=${SLURM_CONF:-unset})" >&2
        exit 1
    fi
    echo "check_slurm_sweep.sh: skipped, no Slurm cluster here (.ci/run starts one: scripts/slurm_local.sh)"
    exit 0
fi
bin="$PWD/target/release/groklens"
work="$(mktemp -d /tmp/groklens-slurm.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cat > "$work/sweep.toml" <<'EOF'
p = 23
exponents = [[2, 2], [1, 1]]
seed = "1..2"
frac_train = 0.5
epochs = 3000
checkpoint_every = 100
EOF
dir="$work/sweep"
"$bin" sweep plan "$work/sweep.toml" --out "$dir"
read -r train collect < <("$bin" sweep slurm "$dir" --shards 2 --stack 2 -- --time=20:00)
first="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["runs"][0]["id"])' "$dir/sweep.json")"

waited=0
# A whole optimizer state (not the .partial written before its rename) of the second
# checkpoint: by then every run in shard 0's stack has its first checkpoint whole.
until ls "$dir/runs/$first/optimizer/" 2>/dev/null | grep -x 'epoch_[0-9]*\.safetensors' | grep -qvx 'epoch_000099\.safetensors'; do
    sleep 0.5; waited=$((waited + 1))
    (( waited < 600 )) || { echo "check_slurm_sweep.sh: shard 0 never wrote a checkpoint" >&2; squeue >&2; exit 1; }
done
scontrol requeue "${train}_0"
echo "check_slurm_sweep.sh: requeued shard 0 (job ${train}_0) after its second checkpoint"

state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -1 | cut -d= -f2; }
waited=0
while :; do
    s="$(state "$collect")"
    [[ "$s" == COMPLETED ]] && break
    case "$s" in FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY)
        echo "check_slurm_sweep.sh: the collect job ended $s" >&2; cat "$dir"/slurm/logs/* >&2; exit 1;;
    esac
    sleep 1; waited=$((waited + 1))
    (( waited < 900 )) || { echo "check_slurm_sweep.sh: the sweep did not end in 15 minutes" >&2; squeue >&2; exit 1; }
done

log="$(ls "$dir"/slurm/logs/train-"${train}"_0.out)"
python3 - "$dir" "$log" <<'EOF'
import csv, json, re, sys
d, log = sys.argv[1], sys.argv[2]
results = json.load(open(f"{d}/results.json"))
states = [r["state"] for r in results["runs"]]
assert states == ["finished"] * 4, states
for r in results["runs"]:
    rows = list(csv.DictReader(open(f"{d}/runs/{r['id']}/losses.csv")))
    assert [int(x["epoch"]) for x in rows] == list(range(3000)), r["id"]
# Started once from scratch, then after the requeue from checkpoints: as one stack, or,
# when the requeue fell between its runs' checkpoint writes, as stacks of their own, each
# from its own last whole checkpoint.
starts = [int(e) for e in re.findall(r"shard 0/2: training \d+ run\(s\) of p = 23 from epoch (\d+)", open(log).read())]
assert len(starts) >= 2 and starts[0] == 0 and all(s > 0 for s in starts[1:]), f"shard 0 started from epochs {starts}"
assert "report.html" in " ".join(__import__("os").listdir(d))
print(f"check_slurm_sweep.sh: 4 runs finished; shard 0 requeued and continued from epochs {starts[1:]}")
EOF
