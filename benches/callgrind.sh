#!/usr/bin/env bash
# Instructions per `pgbench` transaction spent in pgsplit (user space, callgrind), for one or more pgsplit builds
# against the same throwaway PostgreSQL: counts that do not depend on how busy the machine is, so builds compare
# to the instruction. Usage:
#
#   benches/callgrind.sh target/release/pgsplit [/path/to/another/pgsplit ...]
#
# For each build and workload: pgsplit runs under callgrind in front of the leader (8 server connections), a
# warm-up opens the pool, the counters are zeroed, pgbench runs a fixed number of transactions, and the dump's
# total divided by that number is printed. CALLGRIND_WORKLOAD="-S -M simple -c 1 -t 5000" runs one workload only;
# CALLGRIND_KEEP=DIR keeps each dump there (named after the build's checkout and the workload) for callgrind_annotate. Needs PostgreSQL's server binaries, pgbench and valgrind. Starts only
# processes it stops again, by PID; everything lives under a temporary directory removed at the end.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 PGSPLIT_BINARY [PGSPLIT_BINARY ...]" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
work=$(mktemp -d /tmp/pgsplit-callgrind.XXXXXX)
chmod 755 "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_port=$(free_port)
proxy_port=$(free_port)
admin_port=$(free_port)
cleanup() {
    [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null || true
    as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$(id -u)" -eq 0 ]; then chown postgres "$work"; fi
# Over TCP the server asks for SCRAM, as pgsplit's `server.auth_methods` requires by default; setup goes over the
# socket.
as_pg "$pgbin/initdb" -D "$work/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
    -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
psql -h "$work" -p "$pg_port" -U postgres -q -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE app OWNER app"
pgbench -i -q -s 1 -h "$work" -p "$pg_port" -U app app 2>/dev/null

cat >"$work/proxy.toml" <<EOF
[proxy]
listen = "127.0.0.1:$proxy_port"
admin_listen = "127.0.0.1:$admin_port"
workers = 1
[[users]]
name = "app"
password = "app"
auth = "trust"
[leader]
host = "127.0.0.1"
port = $pg_port
max_connections = 8
EOF

bench() { PGPASSWORD=app pgbench -n -h 127.0.0.1 -p "$proxy_port" -U app "$@" app >"$work/pgbench.log" 2>&1 || { cat "$work/pgbench.log" "$work/vg.log" >&2; return 1; }; }

printf '%-40s %-28s %12s\n' build workload instructions/txn
workloads=("-S -M simple -c 16 -j 2 -t 1000" "-S -M simple -c 1 -t 5000" "-S -M extended -c 1 -t 5000"
    "-b tpcb-like -M simple -c 16 -j 2 -t 200")
if [ -n "${CALLGRIND_WORKLOAD:-}" ]; then workloads=("$CALLGRIND_WORKLOAD"); fi
for binary in "$@"; do
    for workload in "${workloads[@]}"; do
        read -r -a args <<<"$workload"
        clients=$(sed -n 's/.*-c \([0-9]*\).*/\1/p' <<<"$workload")
        per_client=$(sed -n 's/.*-t \([0-9]*\).*/\1/p' <<<"$workload")
        out="$work/cg.out"
        valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" run -c "$work/proxy.toml" 2>"$work/vg.log" &
        proxy_pid=$!
        for _ in $(seq 200); do
            (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break
            sleep 0.1
        done
        read -r -a warm <<<"${workload/-t $per_client/-t 50}"
        bench "${warm[@]}"
        callgrind_control -z "$proxy_pid" >/dev/null 2>&1
        bench "${args[@]}"
        callgrind_control -d "$proxy_pid" >/dev/null 2>&1
        kill -INT "$proxy_pid"
        wait "$proxy_pid" 2>/dev/null || true
        proxy_pid=
        # The dump taken after zeroing is the one with the highest number; its totals line holds the count.
        dump=$(ls "$out".* 2>/dev/null | sort -t. -k3 -n | tail -n 1)
        total=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$dump" | head -n 1)
        printf '%-40s %-28s %12d\n' "$binary" "$workload" $((total / (clients * per_client)))
        if [ -n "${CALLGRIND_KEEP:-}" ]; then
            mkdir -p "$CALLGRIND_KEEP"
            cp "$dump" "$CALLGRIND_KEEP/$(basename "$(dirname "$(dirname "$(dirname "$binary")")")")-$(tr -c 'a-z0-9' '_' <<<"$workload").out"
        fi
        rm -f "$out" "$out".*
    done
done
