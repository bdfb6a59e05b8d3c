#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for testing sweeps against a real Slurm:
#   bash scripts/slurm_local.sh start STATE_DIR   installs Debian's slurm-wlm and munge if
#                                                 missing (root, apt), starts munged,
#                                                 slurmctld and slurmd, waits for the node
#   bash scripts/slurm_local.sh stop STATE_DIR    stops them
# Clients find the cluster through SLURM_CONF=STATE_DIR/slurm.conf.
set -euo pipefail
action="${1:?start or stop}"
state="$(mkdir -p "${2:?a state folder}" && cd "$2" && pwd)"

# Stops the daemons and waits until they have exited (slurmctld writes its state as it
# goes), so that the state folder can be removed right after.
stop() {
    local pids=()
    for pidfile in "$state"/slurmd.pid "$state"/slurmctld.pid "$state"/munged.pid; do
        [[ -f "$pidfile" ]] && pids+=("$(cat "$pidfile")")
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        (( alive )) || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

if [[ "$action" == stop ]]; then
    stop
    exit 0
fi
[[ "$action" == start ]] || { echo "slurm_local.sh: start or stop, not $action" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    [[ "$(id -u)" == 0 ]] || { echo "slurm_local.sh: installing slurm-wlm and munge needs root" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null; }
fi

mkdir -p "$state"/spool "$state"/ctld "$state"/munge
# Our own munge key and socket, so nothing of the machine's is touched.
if [[ ! -f "$state"/munge/munge.key ]]; then
    dd if=/dev/urandom of="$state"/munge/munge.key bs=1024 count=1 status=none
fi
chmod 700 "$state"/munge
chmod 400 "$state"/munge/munge.key
socket="$state"/munge/munge.socket
munged --force --key-file="$state"/munge/munge.key --socket="$socket" \
    --pid-file="$state"/munged.pid --log-file="$state"/munged.log --seed-file="$state"/munge/seed

cpus="$(nproc)"
memory="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
cat > "$state"/slurm.conf <<EOF
ClusterName=groklens-local
SlurmctldHost=localhost
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
export SLURM_CONF="$state"/slurm.conf
slurmctld -c
slurmd -N localhost
for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "slurm_local.sh: one-node cluster up: SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 1
done
echo "slurm_local.sh: the node did not come up; logs in $state" >&2
sinfo >&2 || true
tail -5 "$state"/slurmctld.log "$state"/slurmd.log >&2 || true
stop
exit 1
