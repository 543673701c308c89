#!/usr/bin/env bash
# A real single-node Slurm for the tests marked `slurm`, on a clean Debian/Ubuntu machine as root,
# without systemd or cgroups: munge, MariaDB + slurmdbd (sacct, which submitit reads), slurmctld,
# slurmd. Idempotent.
#   bash .ci/slurm.sh up      # install (apt) if needed, configure, start; waits until a job runs
#   bash .ci/slurm.sh down    # stop the daemons (the packages and the database stay)
set -euo pipefail
CLUSTER=avo-ci
PASS=avo-ci-not-secret
HOST=$(hostname -s)
LOG=/var/log/slurm

down() {
  for d in slurmd slurmctld slurmdbd; do pkill -x "$d" 2>/dev/null || true; done
  mysqladmin shutdown 2>/dev/null || pkill -x mariadbd 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
}

wait_for() {  # wait_for SECONDS COMMAND...: until the command succeeds
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "slurm.sh: gave up waiting for: $*" >&2; return 1
}

up() {
  [ "$(id -u)" = 0 ] || { echo "slurm.sh: run as root" >&2; exit 2; }
  if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm slurmdbd munge mariadb-server
  fi
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOG" /run/munge /var/log/munge /run/mysqld
  chown munge:munge /run/munge /var/log/munge 2>/dev/null || true
  chown mysql:mysql /run/mysqld 2>/dev/null || true
  [ -s /etc/munge/munge.key ] || { (mungekey -c 2>/dev/null || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null); }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || sudo -u munge /usr/sbin/munged 2>/dev/null || runuser -u munge -- /usr/sbin/munged
  wait_for 20 munge -n

  if ! pgrep -x mariadbd >/dev/null; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
    (mariadbd --user=mysql >"$LOG/mariadb.log" 2>&1 &)
  fi
  wait_for 60 mysqladmin ping
  mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$PASS';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 2048 ))
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# What a cluster user meets: SIGTERM on requeue/preemption, SIGKILL KillWait seconds later.
KillWait=30
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$PASS
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
  pgrep -x slurmdbd >/dev/null || slurmdbd
  wait_for 60 sacctmgr -n list cluster
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  pgrep -x slurmctld >/dev/null || slurmctld
  wait_for 60 scontrol ping
  pgrep -x slurmd >/dev/null || slurmd
  wait_for 60 bash -c "sinfo -h -o %T | grep -qE 'idle|mix|alloc'"
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  wait_for 60 srun -t 1 -N1 true
  wait_for 60 bash -c "sacct -n -X -o JobID | grep -q ."
  echo "slurm.sh: up ($CLUSTER on $HOST, $cpus CPUs; sacct works)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: bash .ci/slurm.sh up|down" >&2; exit 2 ;;
esac
