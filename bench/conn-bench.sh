#!/usr/bin/env bash
# conn-bench.sh - connection checks: connections per second through
# connect + EHLO + QUIT (no message) with a 100,000-entry client blacklist
# and two DNSBL zones, and the refused path (a blacklisted client), for
# mxguard and for Postfix (blacklist as a cidr: table only, see below).
#
# Run from the repository root as root:   bash bench/conn-bench.sh
# See bench/README.md ("Connection checks"). Everything talks to 127.0.0.1
# (and 127.0.0.66 / 127.0.0.2 as client sources) only; ports are picked
# free, never 25/53/5353.
#
# Knobs (environment):
#   BENCH_CONC="1 20 100"   concurrent client workers
#   BENCH_COUNT=6000        connections per measurement (each run uses
#                           ~COUNT*3 client ports; TIME_WAIT caps this near 25k)
#   BENCH_REPEATS=3         runs per server and concurrency (interleaved)
#   BENCH_ENTRIES=100000    blacklist entries
#   BENCH_ONLY=both         both | postfix | mxguard
#   BENCH_WARMUP=300        ehlo connections before measuring (fills the DNS cache,
#                           starts Postfix's smtpd processes)
#   BENCH_QUIET_WAIT=60     wait up to this long for the machine to be below
#   BENCH_QUIET_MAX=15      this % CPU busy before each run
#   BENCH_CARGO_WAIT=900    before each run wait up to this long while a cargo/rustc
#                           runs (recorded as cargo_running in the CSV if still busy)
#   BENCH_KEEP=0            1: keep the temp dir /tmp/mxconn-*
#   MXGUARD_BIN=            use this binary instead of `cargo build --release`
#   MXGUARD_LOG=info        RUST_LOG of mxguard
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BENCH=$REPO/bench
export PATH="$PATH:/usr/sbin:/sbin"

BENCH_CONC=${BENCH_CONC:-"1 20 100"}
BENCH_COUNT=${BENCH_COUNT:-6000}
BENCH_REPEATS=${BENCH_REPEATS:-3}
BENCH_ENTRIES=${BENCH_ENTRIES:-100000}
BENCH_ONLY=${BENCH_ONLY:-both}
BENCH_WARMUP=${BENCH_WARMUP:-300}
BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-60}
BENCH_QUIET_MAX=${BENCH_QUIET_MAX:-15}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_CARGO_WAIT=${BENCH_CARGO_WAIT:-900}

log() { printf '[conn-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; FAILED=1; exit 1; }
cb() { python3 "$BENCH/conn-bench.py" "$@"; }
procstats() { python3 "$BENCH/procstats.py" "$@"; }
want() { [[ $BENCH_ONLY == both || $BENCH_ONLY == "$1" ]]; }

FAILED=0
WORK=""
PF_MASTER=""
MX_PID=""
DNS_PID=""

[[ $EUID -eq 0 ]] || die "run as root (the private Postfix instance needs it)"
case $BENCH_ONLY in both|postfix|mxguard) ;; *) die "BENCH_ONLY must be both, postfix or mxguard";; esac

stop_postfix() {
    [[ -n $PF_MASTER ]] || return 0
    local snap
    snap=$(procstats snapshot "$PF_MASTER" 2>/dev/null || true)
    postfix -c "$PF_ETC" stop >/dev/null 2>&1 || kill -TERM "$PF_MASTER" 2>/dev/null || true
    # shellcheck disable=SC2086
    procstats wait-gone --timeout 15 $snap || log "warning: Postfix processes had to be killed"
    PF_MASTER=""
}

stop_mxguard() {
    [[ -n $MX_PID ]] || return 0
    kill -TERM "$MX_PID" 2>/dev/null || true
    wait "$MX_PID" 2>/dev/null || true
    MX_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    stop_mxguard
    stop_postfix
    if [[ -n $DNS_PID ]]; then kill -TERM "$DNS_PID" 2>/dev/null; wait "$DNS_PID" 2>/dev/null; fi
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $rc -ne 0 || $FAILED -ne 0 || $BENCH_KEEP == 1 ]]; then
            log "kept $WORK for inspection"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if want postfix; then
    command -v postfix >/dev/null || die "postfix missing (apt-get install postfix, debconf: No configuration)"
fi
if want mxguard; then
    if [[ -n ${MXGUARD_BIN:-} ]]; then
        BIN=$MXGUARD_BIN
    else
        log "building mxguard (cargo build --release)"
        cargo build --release >&2 || die "cargo build --release failed"
        BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/mxguard
    fi
    [[ -x $BIN ]] || die "mxguard binary $BIN not found"
fi

WORK=$(mktemp -d /tmp/mxconn-XXXXXX)
chmod 755 "$WORK"
mkdir -p "$BENCH/results"
STAMP=$(date +%Y%m%d-%H%M%S)
CSV=$BENCH/results/conn-bench-$STAMP.csv
SUMMARY=$BENCH/results/conn-bench-$STAMP.md
if want mxguard; then
    mkdir -p "$WORK/bin"
    cp "$BIN" "$WORK/bin/mxguard"      # a rebuild by someone else must not swap it
    BIN=$WORK/bin/mxguard
fi

# a free port for both TCP and UDP on 127.0.0.1
free_port() {
    local p
    for _ in $(seq 50); do
        p=$(procstats free-port)
        if python3 -c "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',int(sys.argv[1])))" "$p" 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    return 1
}

wait_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 600; i++)); do
        [[ -e /proc/$pid ]] || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# ------------------------------------------------------------- the lists and the DNS
log "work dir $WORK; generating a $BENCH_ENTRIES-entry blacklist"
cb genlist "$WORK" --entries "$BENCH_ENTRIES" >/dev/null
chmod 644 "$WORK"/blacklist.*
DNS_PORT=$(free_port) || die "no free port"
# python3 directly (not through cb), so that DNS_PID is the responder itself
python3 "$BENCH/conn-bench.py" dns --port "$DNS_PORT" --zone bl1.test --zone bl2.test --listed 127.0.0.2 \
    --stats "$WORK/dns-stats.json" --ready "$WORK/dns.ready" >"$WORK/dns.log" 2>&1 &
DNS_PID=$!
for _ in $(seq 50); do [[ -s $WORK/dns.ready ]] && break; sleep 0.1; done
[[ -s $WORK/dns.ready ]] || die "DNS responder did not start ($WORK/dns.log)"
log "DNS responder on 127.0.0.1:$DNS_PORT (zones bl1.test, bl2.test; 127.0.0.2 listed)"

# ------------------------------------------------------------- Postfix
PF=$WORK/postfix
PF_ETC=$PF/etc
PF_QUEUE=$PF/queue
PF_LOG=$PF/maillog

pf_start() {
    rm -rf "$PF"
    mkdir -p "$PF_ETC" "$PF_QUEUE" "$PF/data"
    chown postfix "$PF/data"
    PF_PORT=$(free_port)
    cat >"$PF_ETC/main.cf" <<EOF
# Private benchmark instance (bench/conn-bench.sh); the system Postfix is untouched.
queue_directory = $PF_QUEUE
data_directory = $PF/data
maillog_file = $PF_LOG
maillog_file_prefixes = /var, /dev/stdout, /tmp
syslog_name = postfix-mxconn
alias_maps =
alias_database =
biff = no
myhostname = mx.example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
compatibility_level = 3.6
mydestination =
mynetworks = 127.0.0.1/32
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:$PF_ETC/vmailbox
# The connection checks: the same 100k list as mxguard's blacklist_file,
# checked at connect time (smtpd_delay_reject = no; the default would only
# evaluate it at RCPT TO, which this work never reaches). No
# reject_rbl_client: Postfix's resolver only talks to port 53.
smtpd_client_restrictions = check_client_access cidr:$WORK/blacklist.cidr
smtpd_delay_reject = no
# No reverse lookup (127.0.0.66 would go to the system resolver, off the loopback).
smtpd_peername_lookup = no
# As mxguard's [limits] below: no per-client connection limit.
smtpd_client_connection_count_limit = 0
smtpd_relay_restrictions =
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
disable_vrfy_command = yes
EOF
    echo "u1@example.test example.test/u1/" >"$PF_ETC/vmailbox"
    cat >"$PF_ETC/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n -     n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    postfix -c "$PF_ETC" check >&2 || die "postfix check failed"
    local t0=$EPOCHREALTIME
    postfix -c "$PF_ETC" start >&2 2>&1 || { tail -20 "$PF_LOG" >&2; die "postfix start failed"; }
    for _ in $(seq 100); do [[ -s $PF_QUEUE/pid/master.pid ]] && break; sleep 0.1; done
    PF_MASTER=$(tr -d ' \n' <"$PF_QUEUE/pid/master.pid" 2>/dev/null || true)
    [[ -n $PF_MASTER ]] || die "Postfix master did not write its pid file"
    wait_port "$PF_PORT" "$PF_MASTER" || { tail -30 "$PF_LOG" >&2; die "Postfix did not start"; }
    START_MS=$(python3 -c "print(round(($EPOCHREALTIME-$t0)*1000))")
    SRV_PID=$PF_MASTER
    SRV_PORT=$PF_PORT
}

# ------------------------------------------------------------- mxguard
MX=$WORK/mxguard
MX_LOG=$WORK/mxguard.log

mx_start() {
    rm -rf "$MX"
    mkdir -p "$MX/data"
    MX_PORT=$(free_port)
    cat >"$MX/mxguard.toml" <<EOF
# Written by bench/conn-bench.sh
[server]
hostname = "mx.example.test"
data_dir = "$MX/data"

[[listener]]
address = "127.0.0.1:$MX_PORT"
role = "mx"

[domains]
local = ["example.test"]

[[account]]
address = "u1@example.test"

[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]

[access]
blacklist_file = "$WORK/blacklist.txt"

[[dnsbl]]
zone = "bl1.test"

[[dnsbl]]
zone = "bl2.test"

# One client address opens up to 100 sessions at once here; the default
# connections_per_ip (20) would refuse most of them.
[limits]
max_connections = 10000
connections_per_ip = 10000
EOF
    echo "=== $(date '+%F %T') start on port $MX_PORT" >>"$MX_LOG"
    local t0=$EPOCHREALTIME
    RUST_LOG="${MXGUARD_LOG:-info}" "$BIN" serve --config "$MX/mxguard.toml" >>"$MX_LOG" 2>&1 &
    MX_PID=$!
    wait_port "$MX_PORT" "$MX_PID" || { tail -30 "$MX_LOG" >&2; die "mxguard did not start"; }
    START_MS=$(python3 -c "print(round(($EPOCHREALTIME-$t0)*1000))")
    SRV_PID=$MX_PID
    SRV_PORT=$MX_PORT
}

# ------------------------------------------------------------- runs
servers=()
want postfix && servers+=(postfix)
want mxguard && servers+=(mxguard)
log "raw results $CSV"
for ((rep = 1; rep <= BENCH_REPEATS; rep++)); do
    for conc in $BENCH_CONC; do
        for srv in "${servers[@]}"; do
            # Someone's build would take most of the 2 cores: wait for it.
            waited=0
            while pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null; do
                ((waited == 0)) && log "cargo/rustc running: waiting (up to ${BENCH_CARGO_WAIT}s)"
                ((waited < BENCH_CARGO_WAIT)) || break
                sleep 5; waited=$((waited + 5))
            done
            busy_cargo=$(pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null && echo yes || echo no)
            [[ $busy_cargo == no ]] || log "warning: cargo/rustc still running: this run is noisy"
            if [[ $BENCH_QUIET_WAIT != 0 ]]; then
                procstats quiet --max-busy "$BENCH_QUIET_MAX" --wait "$BENCH_QUIET_WAIT" >/dev/null ||
                    log "warning: machine busy before this run"
            fi
            if [[ $srv == postfix ]]; then pf_start; else mx_start; fi
            log "$srv started in $START_MS ms (port $SRV_PORT), conc $conc, rep $rep"
            labels=(--label "start_ms=$START_MS" --label "cargo_running=$busy_cargo" --label "cargo_wait_s=$waited")
            # warm-up: DNS cache (mxguard), smtpd processes (Postfix)
            cb client --port "$SRV_PORT" --conc "$conc" --count "$BENCH_WARMUP" --mode ehlo >/dev/null ||
                die "warm-up failed"
            cb client --port "$SRV_PORT" --conc "$conc" --count 20 --mode refused --source 127.0.0.66 >/dev/null ||
                die "refused warm-up failed"
            m=(--server "$srv" --server-pid "$SRV_PID" --port "$SRV_PORT" --conc "$conc" --count "$BENCH_COUNT"
               --rep "$rep" --csv "$CSV" "${labels[@]}")
            cb measure "${m[@]}" --mode ehlo --source 127.0.0.1 || die "measurement failed"
            cb measure "${m[@]}" --mode refused --source 127.0.0.66 || die "measurement failed"
            if [[ $srv == mxguard ]]; then
                cb measure "${m[@]}" --mode dnsbl-refused --source 127.0.0.2 || die "measurement failed"
                stop_mxguard
            else
                stop_postfix
            fi
        done
    done
done

log "DNS queries received (all runs): $(cat "$WORK/dns-stats.json")"
{
    echo "Medians; $(date '+%F %T'), $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src crates || echo '+changes'), $BENCH_ENTRIES-entry blacklist, $BENCH_COUNT connections per measurement"
    echo
    cb summarize "$CSV"
    echo
    echo "DNS queries received by the test DNS server over all runs: $(cat "$WORK/dns-stats.json")"
} | tee "$SUMMARY"
