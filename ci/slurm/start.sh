#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this host, for testing profiles/slurm:
# munged, MariaDB (127.0.0.1 only), slurmdbd, slurmctld and slurmd, one node (this host, its
# real CPUs and memory, two fake GPUs), one default partition, accounting (sacct works) and an
# account with root in it. Needs root and apt (Debian/Ubuntu); no systemd needed.
#
# Idempotent: daemons already running (by their pid files) are left alone; a second call only
# re-checks the cluster. Everything (configs, pid files, logs, databases) lives in one state
# dir, $MP_SLURM_DIR (default /tmp/mp-slurm); the only files outside it are links
# /etc/slurm/{slurm,gres,slurmdbd}.conf -> $MP_SLURM_DIR/etc/, because a job's inner srun finds
# its config only there (stop.sh removes them). So Slurm's tools work without SLURM_CONF:
#
#   ci/slurm/start.sh
#   sinfo; sbatch --wrap hostname; sacct -a
#   ci/slurm/stop.sh            # --purge also deletes the state dir
#
# Settings (environment): MP_SLURM_DIR, MP_SLURM_ACCOUNT (mp-ci), MP_SLURM_PARTITION (gpu),
# MP_SLURM_GPUS (2), MP_SLURM_TIMEOUT (seconds per wait, 120), MP_SLURM_NO_INSTALL=1 (never run
# apt-get), ports MP_SLURM_CTLD_PORT (6817), MP_SLURM_SLURMD_PORT (6818), MP_SLURM_DBD_PORT
# (6819), MP_SLURM_DB_PORT (3307; not 3306, so a distribution MariaDB/MySQL can keep its port).
# Exits non-zero, with the reason on stderr, if the cluster cannot be brought up.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${MP_SLURM_DIR:-/tmp/mp-slurm}"
ACCOUNT="${MP_SLURM_ACCOUNT:-mp-ci}"
PARTITION="${MP_SLURM_PARTITION:-gpu}"
NGPUS="${MP_SLURM_GPUS:-2}"
TIMEOUT="${MP_SLURM_TIMEOUT:-120}"
CTLD_PORT="${MP_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${MP_SLURM_SLURMD_PORT:-6818}"
DBD_PORT="${MP_SLURM_DBD_PORT:-6819}"
DB_PORT="${MP_SLURM_DB_PORT:-3307}"
CLUSTER=mpci
PACKAGES=(munge slurm-wlm slurmctld slurmd slurm-client slurmdbd mariadb-server)

die() { echo "ci/slurm/start.sh: $*" >&2; exit 1; }
log() { echo "ci/slurm/start.sh: $*" >&2; }

# alive PIDFILE: the process named in PIDFILE is running
alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for WHAT CMD...: retry CMD until it succeeds or TIMEOUT seconds pass
wait_for() {
  local what="$1" deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

# tail_log FILE: the end of a daemon's log, for error messages
tail_log() { [[ -f "$1" ]] && { echo "--- last lines of $1:"; tail -n 15 "$1"; } >&2 || true; }

[[ "$(id -u)" == 0 ]] || die "must run as root (starts system daemons)"
[[ "$NGPUS" =~ ^[1-9][0-9]*$ ]] || die "MP_SLURM_GPUS must be a positive integer"

# --- packages ----------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  [[ "${MP_SLURM_NO_INSTALL:-0}" != 1 ]] || die "missing packages: ${missing[*]} (MP_SLURM_NO_INSTALL=1)"
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get"
  log "installing ${missing[*]}"
  mkdir -p "$STATE/log"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
      >"$STATE/log/apt.log" 2>&1; then
    tail -n 20 "$STATE/log/apt.log" >&2
    die "apt-get install failed (full log: $STATE/log/apt.log)"
  fi
fi
for cmd in munged mungekey munge unmunge mariadb-install-db mariadbd mariadb slurmdbd slurmctld \
           slurmd sinfo sacctmgr scontrol; do
  command -v "$cmd" >/dev/null || die "'$cmd' not found after installing ${PACKAGES[*]}"
done

# --- state dir and configs ---------------------------------------------------------------
mkdir -p "$STATE"/{etc,run,log,dev,slurmctld,slurmd,munge,mysql-run}
chmod 755 "$STATE"
export SLURM_CONF="$STATE/etc/slurm.conf"

HOST="$(hostname -s)"
# The node's real topology as slurmd sees it (CPUs, sockets, cores, threads), and its memory
# less 1 GB for the OS and the daemons.
HW="$(slurmd -C)"
NODE_HW="$(grep -oE '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' <<<"$HW" | tr '\n' ' ')"
NCPUS="$(grep -oE 'CPUs=[0-9]+' <<<"$HW" | cut -d= -f2)"
MEM_MB="$(grep -oE 'RealMemory=[0-9]+' <<<"$HW" | cut -d= -f2)"
[[ -n "$NCPUS" && -n "$MEM_MB" ]] || die "cannot read this host's CPUs/memory from 'slurmd -C': $HW"
REAL_MEMORY=$((MEM_MB - 1024))
((REAL_MEMORY >= 1024)) || die "too little memory for a test node (${MEM_MB} MB)"
DEF_MEM_PER_CPU=$((REAL_MEMORY / NCPUS < 1024 ? REAL_MEMORY / NCPUS : 1024))

if [[ ! -s "$STATE/etc/dbpass" ]]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$STATE/etc/dbpass")
fi
DB_PASS="$(cat "$STATE/etc/dbpass")"

render() {  # render TEMPLATE OUTPUT: fill in @NAME@ placeholders
  sed -e "s|@STATE@|$STATE|g" -e "s|@HOST@|$HOST|g" -e "s|@CLUSTER@|$CLUSTER|g" \
      -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
      -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" \
      -e "s|@NODE_HW@|$NODE_HW|g" -e "s|@REAL_MEMORY@|$REAL_MEMORY|g" \
      -e "s|@DEF_MEM_PER_CPU@|$DEF_MEM_PER_CPU|g" -e "s|@NGPUS@|$NGPUS|g" \
      -e "s|@LAST_GPU@|$((NGPUS - 1))|g" -e "s|@PARTITION@|$PARTITION|g" "$1" >"$2.tmp"
  mv "$2.tmp" "$2"
}
render "$HERE/slurm.conf.in" "$STATE/etc/slurm.conf"
render "$HERE/gres.conf.in" "$STATE/etc/gres.conf"
(umask 077; render "$HERE/slurmdbd.conf.in" "$STATE/etc/slurmdbd.conf")
chmod 600 "$STATE/etc/slurmdbd.conf"
for ((i = 0; i < NGPUS; i++)); do touch "$STATE/dev/fakegpu$i"; done
echo "export SLURM_CONF=$SLURM_CONF" >"$STATE/env.sh"

# Slurm's client commands read /etc/slurm/slurm.conf unless SLURM_CONF is set, and the slurm
# executor's job step drops every SLURM_* variable (SLURM_CONF too) before its inner srun: so
# link the configs there as well. A config there that is not such a link is never replaced.
mkdir -p /etc/slurm
for f in slurm.conf gres.conf slurmdbd.conf; do
  link="/etc/slurm/$f"
  if [[ -e "$link" || -L "$link" ]] && [[ "$(readlink "$link")" != "$STATE/etc/$f" ]]; then
    die "$link exists and is not a link to $STATE/etc/$f (another cluster's config, or a" \
        "test cluster with another MP_SLURM_DIR: stop that one first); not replacing it"
  fi
  ln -sfn "$STATE/etc/$f" "$link"
done

# --- munge ---------------------------------------------------------------------------------
MUNGE_SOCKET="$STATE/munge/munge.socket.2"
munge_ok() { munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET"; }
chown munge:munge "$STATE/munge"
chmod 755 "$STATE/munge"   # munged wants the socket dir executable by all
if ! alive "$STATE/munge/munged.pid"; then
  if [[ ! -s "$STATE/munge/munge.key" ]]; then
    mungekey --create --keyfile="$STATE/munge/munge.key" || die "mungekey --create failed"
  fi
  chown munge:munge "$STATE/munge/munge.key"
  chmod 400 "$STATE/munge/munge.key"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  log "starting munged"
  setsid runuser -u munge -- munged --key-file="$STATE/munge/munge.key" \
    --socket="$MUNGE_SOCKET" --pid-file="$STATE/munge/munged.pid" \
    --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed" \
    </dev/null >>"$STATE/log/munged.out" 2>&1 || { tail_log "$STATE/munge/munged.log"; die "munged failed to start"; }
fi
wait_for munge munge_ok || { tail_log "$STATE/munge/munged.log"; die "munge does not answer (munge -n | unmunge)"; }

# --- MariaDB (127.0.0.1:$DB_PORT, own data dir) -----------------------------------------------
DB_SOCKET="$STATE/mysql-run/mariadbd.sock"
sql() { mariadb --no-defaults -S "$DB_SOCKET" -u root "$@"; }
chown mysql:mysql "$STATE/mysql-run"
if ! alive "$STATE/mysql-run/mariadbd.pid"; then
  if [[ ! -d "$STATE/mysql/mysql" ]]; then
    log "initialising MariaDB in $STATE/mysql"
    rm -rf "$STATE/mysql"
    mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" --skip-test-db \
      >"$STATE/log/mariadb-install.log" 2>&1 \
      || { tail_log "$STATE/log/mariadb-install.log"; die "mariadb-install-db failed"; }
  fi
  log "starting mariadbd on 127.0.0.1:$DB_PORT"
  setsid mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --socket="$DB_SOCKET" \
    --pid-file="$STATE/mysql-run/mariadbd.pid" --log-error="$STATE/log/mariadb.log" \
    --skip-name-resolve --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
    </dev/null >>"$STATE/log/mariadb.out" 2>&1 &
fi
wait_for mariadb sql -e "SELECT 1" || { tail_log "$STATE/log/mariadb.log"; die "MariaDB does not answer on $DB_SOCKET"; }
sql <<SQL || die "cannot create the accounting database/user in MariaDB"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL

# --- slurmdbd, cluster, account ------------------------------------------------------------
if ! alive "$STATE/run/slurmdbd.pid"; then
  log "starting slurmdbd"
  setsid slurmdbd </dev/null >>"$STATE/log/slurmdbd.out" 2>&1 \
    || { tail_log "$STATE/log/slurmdbd.log"; die "slurmdbd failed to start"; }
fi
wait_for slurmdbd sacctmgr -n list cluster \
  || { tail_log "$STATE/log/slurmdbd.log"; die "slurmdbd does not answer (sacctmgr list cluster)"; }
# sacctmgr exits 1 with "Nothing new added" when an entity exists: check before adding.
if [[ -z "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster)" ]]; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
fi
if [[ -z "$(sacctmgr -n -P list account "$ACCOUNT" format=account)" ]]; then
  sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" \
    description="motivation-profiles CI" organization=ci >/dev/null \
    || die "sacctmgr add account $ACCOUNT failed"
fi
if [[ -z "$(sacctmgr -n -P list association cluster="$CLUSTER" account="$ACCOUNT" user=root format=user)" ]]; then
  sacctmgr -i add user root account="$ACCOUNT" defaultaccount="$ACCOUNT" cluster="$CLUSTER" \
    >/dev/null || die "sacctmgr add user root to $ACCOUNT failed"
fi

# --- slurmctld, slurmd ---------------------------------------------------------------------
if ! alive "$STATE/run/slurmctld.pid"; then
  log "starting slurmctld"
  setsid slurmctld </dev/null >>"$STATE/log/slurmctld.out" 2>&1 \
    || { tail_log "$STATE/log/slurmctld.log"; die "slurmctld failed to start"; }
fi
wait_for slurmctld scontrol ping \
  || { tail_log "$STATE/log/slurmctld.log"; die "slurmctld does not answer (scontrol ping)"; }
if ! alive "$STATE/run/slurmd.pid"; then
  log "starting slurmd"
  setsid slurmd </dev/null >>"$STATE/log/slurmd.out" 2>&1 \
    || { tail_log "$STATE/log/slurmd.log"; die "slurmd failed to start"; }
fi

# --- wait for the node -------------------------------------------------------------------
node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1; }
deadline=$((SECONDS + TIMEOUT))
resumed=0
while :; do
  state="$(node_state)"
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*|drained*|fail*)
      if ((!resumed)); then
        log "node $HOST is $state; resuming it"
        scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
        resumed=1
      fi ;;
  esac
  if ((SECONDS >= deadline)); then
    tail_log "$STATE/log/slurmd.log"
    tail_log "$STATE/log/slurmctld.log"
    die "node $HOST not idle after ${TIMEOUT}s (state: '${state:-unknown}'; $(sinfo -h -N -o '%N %T %E' 2>&1 | head -n 1))"
  fi
  sleep 1
done

echo "slurm up: cluster $CLUSTER, node $HOST ($NCPUS CPUs, ${REAL_MEMORY} MB, gpu:fake:$NGPUS)" \
  "state $state, partition $PARTITION (default), account $ACCOUNT;" \
  "config /etc/slurm/slurm.conf -> $SLURM_CONF; stop with ci/slurm/stop.sh"
