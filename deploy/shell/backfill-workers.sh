#!/usr/bin/env bash
# Run an encmigrate backfill with N workers on this host: one `migrate-data` to start the
# run (chunks sized for the whole fleet), then N `migrate-data --join` processes, each
# restarted after a transient failure only (docs/fleet.md). Run it on as many hosts as
# you like, against the same database: they share the work through its chunk table.
#
#   ENCMIGRATE_DATABASE_URL=... ENCMIGRATE_KEYRING_FILE=... \
#     deploy/shell/backfill-workers.sh 4 --batch-size 1000
#
# The first argument is the number of workers here; the rest go to every migrate-data.
# Environment: ENCMIGRATE (the command, default `encmigrate`), FLEET_WORKERS (workers of
# the whole fleet, to size the chunks; default: this host's N), RESTARTS (per worker,
# default 5), RESTART_DELAY (seconds, default 10), and the usual ENCMIGRATE_* settings.
#
# Exit codes (docs/architecture.md section 8): 4 (database error after retries) and a
# worker killed by a signal other than INT/TERM (137: OOM killer) are transient and
# restarted; 1 (rows that could not be encrypted), 2 (usage or plan), 3 (keys),
# 5 (refused) and 70 (a bug) would fail again and are not. The script exits with the
# first non-zero code of its workers, 0 when all of them finished the work.
# Ctrl-C (or SIGTERM) reaches every worker as a Ctrl-C: each stops after its batch.
set -u
set -m  # each worker in a process group of its own, which a Ctrl-C is forwarded to

usage() {
    echo "usage: $0 WORKERS [migrate-data options...]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
case $1 in '' | *[!0-9]* | 0) usage ;; esac
workers=$1
shift
encmigrate=${ENCMIGRATE:-encmigrate}
fleet=${FLEET_WORKERS:-$workers}
restarts=${RESTARTS:-5}
delay=${RESTART_DELAY:-10}

transient() {
    case $1 in
        4) return 0 ;;                      # database error after the retries
        130 | 143) return 1 ;;              # interrupted, terminated: we were asked to stop
        *) [ "$1" -gt 128 ] && return 0 ;;  # killed by a signal (137: OOM killer)
    esac
    return 1
}

worker() {
    local index=$1 attempt=0 code
    shift
    while :; do
        $encmigrate --json migrate-data --join "$@"
        code=$?
        if [ "$code" -eq 0 ] || ! transient "$code" || [ "$attempt" -ge "$restarts" ]; then
            echo "worker $index: exit $code" >&2
            return "$code"
        fi
        attempt=$((attempt + 1))
        echo "worker $index: exit $code (transient), restart $attempt of $restarts in ${delay}s" >&2
        sleep "$delay"
    done
}

# The start: a second start while the run is live is refused (5): it joins that run.
$encmigrate migrate-data --workers "$fleet" --max-batches 1 "$@"
code=$?
if [ "$code" -ne 0 ] && [ "$code" -ne 5 ]; then
    echo "start: exit $code" >&2
    exit "$code"
fi

pids=()
stop() {
    trap '' INT TERM
    for pid in "${pids[@]}"; do
        kill -INT -- "-$pid" 2>/dev/null
    done
}
trap stop INT TERM
for index in $(seq 1 "$workers"); do
    worker "$index" "$@" &
    pids+=($!)
done

status=0
for pid in "${pids[@]}"; do
    while :; do
        wait "$pid"
        code=$?
        # wait returns >128 when a trapped signal interrupts it: wait again.
        kill -0 "$pid" 2>/dev/null || break
    done
    [ "$status" -eq 0 ] && status=$code
done
exit "$status"
