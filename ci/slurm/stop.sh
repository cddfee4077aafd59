#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by ci/slurm/start.sh: cancel its jobs, then stop
# slurmd, slurmctld, slurmdbd, mariadbd and munged by the pid files in the state dir
# ($MP_SLURM_DIR, default /tmp/mp-slurm), each with a bounded wait (SIGTERM, then SIGKILL).
# Also removes the /etc/slurm/*.conf links into the state dir. Safe to run when nothing is
# running. `--purge` also deletes the state dir (configs, logs, accounting database); by
# default it is kept for the logs, and a later start.sh reuses it.
set -uo pipefail

STATE="${MP_SLURM_DIR:-/tmp/mp-slurm}"
WAIT="${MP_SLURM_STOP_TIMEOUT:-30}"
PURGE=0
for arg in "$@"; do
  case "$arg" in
    --purge) PURGE=1 ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
  esac
done
log() { echo "ci/slurm/stop.sh: $*" >&2; }

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop NAME PIDFILE: SIGTERM, wait up to WAIT seconds, then SIGKILL
stop() {
  local name="$1" pidfile="$2" pid i
  alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid="$(cat "$pidfile")"
  log "stopping $name ($pid)"
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < WAIT * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name ($pid) still running after ${WAIT}s; killing it"
    kill -KILL "$pid" 2>/dev/null
    sleep 0.5
  fi
  rm -f "$pidfile"
  ! kill -0 "$pid" 2>/dev/null
}

status=0
if [[ -f "$STATE/etc/slurm.conf" ]] && alive "$STATE/run/slurmctld.pid"; then
  export SLURM_CONF="$STATE/etc/slurm.conf"
  # Cancel every job of this cluster so that no slurmstepd or job process outlives slurmd.
  jobs="$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
  if [[ -n "${jobs// /}" ]]; then
    log "cancelling jobs $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    for ((i = 0; i < WAIT; i++)); do
      [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
      sleep 1
    done
  fi
fi
stop slurmd "$STATE/run/slurmd.pid" || status=1
stop slurmctld "$STATE/run/slurmctld.pid" || status=1
stop slurmdbd "$STATE/run/slurmdbd.pid" || status=1
stop mariadbd "$STATE/mysql-run/mariadbd.pid" || status=1
stop munged "$STATE/munge/munged.pid" || status=1

# The config links start.sh made under /etc/slurm (only links into this state dir).
for f in slurm.conf gres.conf slurmdbd.conf; do
  if [[ -L "/etc/slurm/$f" && "$(readlink "/etc/slurm/$f")" == "$STATE/etc/$f" ]]; then
    rm -f "/etc/slurm/$f"
  fi
done

if ((PURGE)) && ((status == 0)); then
  rm -rf "$STATE"
fi
((status == 0)) && log "stopped" || log "some daemon could not be stopped"
exit "$status"
