#!/usr/bin/env bash
# THE FLOOR: the same remote work as the tool, driven by nothing but OpenSSH and bash.
#
#   floor.sh status|status-min SSH_CONFIG SCRIPTS_DIR OUT_DIR
#       one `ssh HOST bash -s < SCRIPTS_DIR/status/HOST.sh` per host, all hosts in parallel
#       (status-min: only the essential reads, see hostscripts.status_script)
#   floor.sh start SSH_CONFIG SCRIPTS_DIR OUT_DIR
#       a no-op start-all by hand: one master connection per host (ControlMaster), then
#       phase 1 (every host: preflight; app host: lock + converge), phase 2 (workers: Redis
#       from the worker, converge, probe, record), phase 3 (app host: record + unlock)
#
# Scripts are written by hostscripts.py; each host's output lands in OUT_DIR/<phase>-<host>.out.
# Exit status: 0 when every host's script exited 0.
set -u
mode=$1 cfg=$2 dir=$3 out=$4
mkdir -p "$out"
ssh_opts=(-F "$cfg" -T -o BatchMode=yes)

run_parallel() {  # run_parallel PHASE_DIR PREFIX [extra ssh options...]
  local phase=$1 prefix=$2; shift 2
  local pids=() names=() f h rc=0
  for f in "$phase"/*.sh; do
    [ -e "$f" ] || continue
    h=$(basename "$f" .sh)
    ssh "${ssh_opts[@]}" "$@" ${cp:+-S "$cp/$h"} "$h" bash -s < "$f" > "$out/$prefix-$h.out" 2>&1 &
    pids+=($!) names+=("$h")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { echo "floor: ${names[$i]} failed in $prefix (see $out/$prefix-${names[$i]}.out)" >&2; rc=1; }
  done
  return $rc
}

case "$mode" in
  status|status-min)
    cp=
    run_parallel "$dir/$mode" "$mode"
    ;;
  start)
    cp=$(mktemp -d /tmp/cfab-floor-cp.XXXXXX)
    hosts=()
    for f in "$dir"/start/1/*.sh; do hosts+=("$(basename "$f" .sh)"); done
    close_masters() {
      for h in "${hosts[@]}"; do ssh "${ssh_opts[@]}" -S "$cp/$h" -O exit "$h" 2>/dev/null & done
      wait
      rm -rf "$cp"
    }
    trap close_masters EXIT
    for h in "${hosts[@]}"; do  # master connections, in parallel; -f returns once logged in
      # ControlPersist bounded: a master that missed its `-O exit` still goes away by itself
      ssh "${ssh_opts[@]}" -M -S "$cp/$h" -o ControlPersist=30 -fN "$h" &
    done
    wait
    rc=0
    run_parallel "$dir/start/1" start1 && run_parallel "$dir/start/2" start2 && run_parallel "$dir/start/3" start3 || rc=1
    exit $rc
    ;;
  *) echo "usage: floor.sh status|status-min|start SSH_CONFIG SCRIPTS_DIR OUT_DIR" >&2; exit 2 ;;
esac
