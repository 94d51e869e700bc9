#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for trying submit.sh and
# for the test of crates/cli/tests/slurm.rs:
#
#   SLURM_TEST_DIR=/tmp/slurm bash deploy/slurm/cluster.sh start
#   export SLURM_CONF=/tmp/slurm/slurm.conf   # for sbatch, squeue, ...
#   SLURM_TEST_DIR=/tmp/slurm bash deploy/slurm/cluster.sh stop
#
# It runs Debian's slurm-wlm and munge (`apt-get install -y slurm-wlm
# munge`) as root, with everything (munge key, slurm.conf, state, spool,
# logs, pids, sockets) under $SLURM_TEST_DIR, so nothing in /etc is touched
# and no systemd is needed. The node has this machine's CPUs and memory
# (`slurmd -C`) and two GPUs in name only, so that jobs asking for
# --gres=gpu:1 are scheduled (and run on the CPU).
#
# Settings, from the environment:
#   SLURM_TEST_DIR   the cluster's folder (default: $TMPDIR/netdissect-slurm)
#   SLURM_TEST_PORT  slurmctld's port; slurmd takes the next (default 6817)
set -euo pipefail

dir=${SLURM_TEST_DIR:-${TMPDIR:-/tmp}/netdissect-slurm}
[[ $dir == /* ]] || dir=$PWD/$dir # compared with /proc's absolute paths
port=${SLURM_TEST_PORT:-6817}
export SLURM_CONF=$dir/slurm.conf
socket=$dir/munge/munge.socket
daemons=(slurmd slurmctld munged)

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

need_tools() {
    local tool
    for tool in munged mungekey slurmctld slurmd sinfo scontrol; do
        command -v "$tool" >/dev/null ||
            die "$tool not found: install Debian's slurm-wlm and munge (apt-get install -y slurm-wlm munge)"
    done
    [[ $(id -u) == 0 ]] || die "run as root: slurmd starts jobs as their users"
}

# munged insists on a private key and folders no other user can write.
start_munge() {
    mkdir -p "$dir/munge"
    chmod 0700 "$dir/munge"
    if [[ ! -s $dir/munge/munge.key ]]; then
        mungekey --create --keyfile="$dir/munge/munge.key" --force
    fi
    chmod 0600 "$dir/munge/munge.key"
    munged --force --socket="$socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed"
}

# The node line is `slurmd -C`'s: this machine's real CPUs and memory.
write_conf() {
    local host node
    host=$(hostname -s)
    node=$(slurmd -C | head -n 1)
    node=${node#NodeName=* }
    mkdir -p "$dir/state" "$dir/spool/$host" "$dir/log"
    # Plain processes, no cgroups: a container may not give us any.
    # cred_expire also sets how long a requeued job waits before it runs
    # again (120 s by default; 5 s is the least). Then only a scheduling
    # pass starts it: one a second, not Slurm's 30 to 60 s, keeps the
    # fault tests short.
    cat >"$SLURM_CONF" <<EOF
ClusterName=netdissect-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket=$socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/$host
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=600
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 $node Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # Two GPUs in name only: Slurm wants a device file for each, and
    # without cgroups it confines nothing, so any two will do.
    printf 'NodeName=%s Name=gpu File=%s\n' "$host" /dev/null "$host" /dev/zero \
        >"$dir/gres.conf"
}

# Waits up to 60 s for `sinfo` to show the node idle.
wait_idle() {
    local i state
    for ((i = 0; i < 120; i++)); do
        state=$(sinfo -h -N -o %t 2>/dev/null || true)
        case $state in
        idle)
            echo "cluster.sh: node $(hostname -s) idle; export SLURM_CONF=$SLURM_CONF"
            return
            ;;
        inval* | drain* | down*) break ;;
        esac
        sleep 0.5
    done
    tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    die "the node is not idle (state '${state:-none}'): logs in $dir/log"
}

start() {
    need_tools
    if running; then die "already running in $dir (stop it first)"; fi
    mkdir -p "$dir"
    start_munge
    write_conf
    # -c: a fresh controller, forgetting the jobs of an earlier start.
    slurmctld -c
    slurmd
    wait_idle
}

# Whether process $1 runs: a zombie (a daemon that ended but that nobody
# reaped, as in a container without init) does not.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# The pid of each of our daemons that is alive, from its pid file.
pids() {
    local name file pid
    for name in "${daemons[@]}"; do
        file=$dir/$name.pid
        [[ $name == munged ]] && file=$dir/munge/munged.pid
        pid=$(cat "$file" 2>/dev/null || true)
        if [[ -n $pid ]] && alive "$pid"; then echo "$pid"; fi
    done
}

running() { [[ -n $(pids) ]]; }

# Jobs first, while slurmd can still end them; then the daemons; then any
# job process that outlived them (slurmd leaves its jobs running).
stop() {
    cancel_jobs
    stop_daemons
    kill_strays
}

# Cancels every job and waits up to 10 s (KillWait is 5 s) for them to end.
cancel_jobs() {
    local i ids
    running || return 0
    mapfile -t ids < <(squeue -h -o %A 2>/dev/null || true)
    ((${#ids[@]})) || return 0
    scancel "${ids[@]}" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        [[ -z $(squeue -h 2>/dev/null) ]] && return 0
        sleep 0.25
    done
}

# TERM first; KILL what is left after 10 s.
stop_daemons() {
    local i list
    mapfile -t list < <(pids)
    ((${#list[@]})) || return 0
    kill "${list[@]}" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        running || return 0
        sleep 0.25
    done
    mapfile -t list < <(pids)
    kill -KILL "${list[@]}" 2>/dev/null || true
}

# Kills this cluster's slurmstepd processes (they run in $dir/log) and all
# their descendants, found through /proc: procps may not be installed.
kill_strays() {
    local file line pid ppid queue=() found=() more=()
    local -A kids=()
    for file in /proc/[0-9]*/stat; do
        { read -r line <"$file"; } 2>/dev/null || continue
        pid=${line%% *}
        ppid=${line##*) }
        ppid=${ppid#* }
        kids[${ppid%% *}]+=" $pid"
        if [[ $line == *"(slurmstepd)"* && $(readlink "/proc/$pid/cwd") == "$dir"/* ]]; then
            queue+=("$pid")
        fi
    done
    while ((${#queue[@]})); do
        pid=${queue[0]}
        queue=("${queue[@]:1}")
        found+=("$pid")
        read -ra more <<<"${kids[$pid]:-}"
        queue+=("${more[@]}")
    done
    if ((${#found[@]})); then kill -KILL "${found[@]}" 2>/dev/null || true; fi
}

status() {
    if ! running; then
        echo "cluster.sh: not running ($dir)"
        return 3
    fi
    sinfo -N
    squeue
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: cluster.sh start|stop|status (SLURM_TEST_DIR=$dir)" ;;
esac
