#!/usr/bin/env bash
# tarpit-bench.sh - hold 10,000 tarpitted SMTP sessions in mxguard at once, and
# fewer in Postfix (one smtpd process each), and measure what holding costs.
#
# Run from the repository root as root:   bash bench/tarpit-bench.sh
# See bench/README.md ("Tarpit benchmark"). Everything talks to 127.0.0.0/8
# only; ports are picked free, never 25/53/5353. About 8 minutes.
#
# Each session (bench/tarpit-bench.py client, one asyncio process, source
# addresses 127.0.0.2..127.0.0.41, bound before connect) reads the banner,
# says EHLO, MAIL FROM:<a@client.test>, RCPT TO:<u1@example.test> (answered at
# once), then a second RCPT TO whose reply the server delays BENCH_DELAY s:
#   - mxguard: [limits] tarpit_start = 1, tarpit_delay = "60s" (the 2nd RCPT
#     is the first past the start, so it waits 1 x 60 s);
#   - Postfix: the 2nd RCPT is to u2@example.test, and
#     smtpd_recipient_restrictions = check_recipient_access texthash:tarpit
#     maps it to "sleep 60" (postconf(5): "Pause for the specified number of
#     seconds and proceed with the next restriction"); the smtpd process
#     sleeps inside its RCPT. u1 is answered at once.
# When all have sent the 2nd RCPT (and none got its reply), the server's
# memory, threads and CPU are sampled for BENCH_HOLD s; then the client closes
# everything, a fresh session must get its banner and EHLO reply, and the
# script waits until the server has let go of every session. mxguard at
# BENCH_SESSIONS gets BENCH_WAVES such waves in a row on the same server.
#
# Knobs (environment):
#   BENCH_SESSIONS=10000     sessions held by mxguard
#   BENCH_MX_SMALL=1000      mxguard also at this number (Postfix's; 0: not)
#   BENCH_PF_SESSIONS=1000   sessions held by Postfix (smtpd maxproc = this + 100)
#   BENCH_DELAY=60           the tarpit delay in seconds (max 60 for mxguard)
#   BENCH_HOLD=15            seconds the held sessions are watched
#   BENCH_THEN=close         close: the client closes at once after the hold;
#                            wait: it waits for every delayed reply (checks them:
#                            250 after ~BENCH_DELAY s), then QUITs
#   BENCH_SOURCES=127.0.0.2-127.0.0.41
#   BENCH_INFLIGHT=200       sessions being set up at once
#   BENCH_WAVES=3            mxguard at BENCH_SESSIONS: this many waves of sessions, one
#                            after the other (each held, closed and gone), on the same
#                            server: its memory after the first wave is what it keeps
#   BENCH_REPEATS=1          (Postfix, mxguard small, mxguard) interleaved, fresh servers
#   BENCH_ONLY=both          both | postfix | mxguard
#   BENCH_NOFILE=65536       ulimit -n for the servers and the client (lowered to
#                            the hard limit if that cannot be raised)
#   BENCH_QUIET_WAIT=60      before each run wait up to this many seconds for the
#   BENCH_QUIET_MAX=15       machine to be below this % CPU busy (0 s: do not check)
#   BENCH_KEEP=0             1: keep the temp dir /tmp/mxtarpit-* (kept anyway on failure)
#   MXGUARD_BIN=             use this binary instead of `cargo build --release`
#   MXGUARD_LOG=info         RUST_LOG of mxguard
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BENCH=$REPO/bench
export PATH="$PATH:/usr/sbin:/sbin"

BENCH_SESSIONS=${BENCH_SESSIONS:-10000}
BENCH_MX_SMALL=${BENCH_MX_SMALL:-1000}
BENCH_PF_SESSIONS=${BENCH_PF_SESSIONS:-1000}
BENCH_DELAY=${BENCH_DELAY:-60}
BENCH_HOLD=${BENCH_HOLD:-15}
BENCH_THEN=${BENCH_THEN:-close}
BENCH_SOURCES=${BENCH_SOURCES:-127.0.0.2-127.0.0.41}
BENCH_INFLIGHT=${BENCH_INFLIGHT:-200}
BENCH_REPEATS=${BENCH_REPEATS:-1}
BENCH_WAVES=${BENCH_WAVES:-3}
BENCH_ONLY=${BENCH_ONLY:-both}
BENCH_NOFILE=${BENCH_NOFILE:-65536}
BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-60}
BENCH_QUIET_MAX=${BENCH_QUIET_MAX:-15}
BENCH_KEEP=${BENCH_KEEP:-0}

log() { printf '[tarpit-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; FAILED=1; exit 1; }
tb() { python3 "$BENCH/tarpit-bench.py" "$@"; }
procstats() { python3 "$BENCH/procstats.py" "$@"; }
want() { [[ $BENCH_ONLY == both || $BENCH_ONLY == "$1" ]]; }

FAILED=0
WORK=""
PF_MASTER=""
MX_PID=""
RUN_PID=""

[[ $EUID -eq 0 ]] || die "run as root (the private Postfix instance and ulimit -n need it)"
case $BENCH_ONLY in both|postfix|mxguard) ;; *) die "BENCH_ONLY must be both, postfix or mxguard";; esac
case $BENCH_THEN in close|wait) ;; *) die "BENCH_THEN must be close or wait";; esac
((BENCH_DELAY >= 10 && BENCH_DELAY <= 60)) || die "BENCH_DELAY must be 10..60 (mxguard's tarpit_delay is at most 60s)"
((BENCH_HOLD < BENCH_DELAY - 5)) || die "BENCH_HOLD must end well before the delayed replies (BENCH_DELAY - 5)"

# Enough descriptors for 10,000 sessions on each side (inherited by the
# servers and the client; each is its own process, so each needs about
# SESSIONS + a few). Raising the hard limit needs CAP_SYS_RESOURCE, which
# some containers drop: then the soft limit goes up to the hard one.
ulimit -Hn "$BENCH_NOFILE" 2>/dev/null || true
hard=$(ulimit -Hn)
[[ $hard == unlimited || $hard -ge $BENCH_NOFILE ]] || BENCH_NOFILE=$hard
ulimit -Sn "$BENCH_NOFILE" || die "cannot raise ulimit -n to $BENCH_NOFILE"
need=$(( (BENCH_SESSIONS > BENCH_PF_SESSIONS ? BENCH_SESSIONS : BENCH_PF_SESSIONS) + 500 ))
((BENCH_NOFILE >= need)) || die "ulimit -n is $BENCH_NOFILE (hard limit $hard): $need needed for $BENCH_SESSIONS sessions"

stop_postfix() {
    [[ -n $PF_MASTER ]] || return 0
    local snap
    snap=$(procstats snapshot "$PF_MASTER" 2>/dev/null || true)
    postfix -c "$PF_ETC" stop >/dev/null 2>&1 || kill -TERM "$PF_MASTER" 2>/dev/null || true
    # shellcheck disable=SC2086
    procstats wait-gone --timeout 20 $snap || log "warning: Postfix processes had to be killed"
    PF_MASTER=""
}

stop_mxguard() {
    [[ -n $MX_PID ]] || return 0
    local snap
    snap=$(procstats snapshot "$MX_PID" 2>/dev/null || true)
    kill -TERM "$MX_PID" 2>/dev/null || true
    # shellcheck disable=SC2086
    procstats wait-gone --timeout 20 $snap || log "warning: mxguard had to be killed"
    wait "$MX_PID" 2>/dev/null || true
    MX_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    if [[ -n $RUN_PID ]]; then kill -TERM "$RUN_PID" 2>/dev/null; wait "$RUN_PID" 2>/dev/null; fi
    stop_mxguard
    stop_postfix
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
trap 'exit 129' HUP

if want postfix; then
    command -v postfix >/dev/null || die "postfix missing (apt-get install postfix, debconf: No configuration)"
    getent passwd postfix >/dev/null || die "no postfix user"
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
    BIN_ORIG=$(realpath "$BIN")
fi

WORK=$(mktemp -d /tmp/mxtarpit-XXXXXX)
chmod 755 "$WORK"
mkdir -p "$BENCH/results"
STAMP=$(date +%Y%m%d-%H%M%S)
CSV=$BENCH/results/tarpit-bench-$STAMP.csv
JSONL=$BENCH/results/tarpit-bench-$STAMP.jsonl
SUMMARY=$BENCH/results/tarpit-bench-$STAMP.md
if want mxguard; then
    mkdir -p "$WORK/bin"
    cp "$BIN" "$WORK/bin/mxguard"      # a rebuild by someone else must not swap it
    BIN=$WORK/bin/mxguard
fi
free_port() { procstats free-port; }

wait_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 600; i++)); do
        [[ -e /proc/$pid ]] || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# ------------------------------------------------------------- Postfix
PF=$WORK/postfix
PF_ETC=$PF/etc
PF_QUEUE=$PF/queue
PF_LOG=$PF/maillog

pf_start() {
    rm -rf "$PF"
    mkdir -p "$PF_ETC" "$PF_QUEUE" "$PF/data" "$PF/mail"
    chown postfix "$PF/data"
    chown 65534:65534 "$PF/mail"
    PF_PORT=$(free_port)
    cat >"$PF_ETC/main.cf" <<EOF
# Private benchmark instance (bench/tarpit-bench.sh); the system Postfix is untouched.
queue_directory = $PF_QUEUE
data_directory = $PF/data
maillog_file = $PF_LOG
maillog_file_prefixes = /var, /dev/stdout, /tmp
syslog_name = postfix-mxtarpit
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
virtual_mailbox_base = $PF/mail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
# No reverse lookup of the clients 127.0.0.2..41 (it would go to the
# machine's resolver, off the loopback).
smtpd_peername_lookup = no
# 25 sessions per client address here; no per-client limits (mxguard's
# connections_per_ip is lifted too).
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_relay_restrictions =
# The tarpit: the 2nd RCPT (to u2) sleeps $BENCH_DELAY s in smtpd.
smtpd_recipient_restrictions = check_recipient_access texthash:$PF_ETC/tarpit, permit_mynetworks, reject_unauth_destination
smtpd_reject_unlisted_recipient = yes
disable_vrfy_command = yes
EOF
    printf 'u1@example.test example.test/u1/\nu2@example.test example.test/u2/\n' >"$PF_ETC/vmailbox"
    printf 'u2@example.test sleep %s\n' "$BENCH_DELAY" >"$PF_ETC/tarpit"
    # smtpd maxproc above the sessions held: at the limit, master would start
    # new smtpd processes with -o stress=yes (shorter timeouts).
    cat >"$PF_ETC/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n -     n       -       $((BENCH_PF_SESSIONS + 100))      smtpd
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
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    postfix -c "$PF_ETC" check >&2 || die "postfix check failed"
    postfix -c "$PF_ETC" start >&2 2>&1 || { tail -20 "$PF_LOG" >&2; die "postfix start failed"; }
    for _ in $(seq 100); do [[ -s $PF_QUEUE/pid/master.pid ]] && break; sleep 0.1; done
    PF_MASTER=$(tr -d ' \n' <"$PF_QUEUE/pid/master.pid" 2>/dev/null || true)
    [[ -n $PF_MASTER ]] || die "Postfix master did not write its pid file"
    wait_port "$PF_PORT" "$PF_MASTER" || { tail -30 "$PF_LOG" >&2; die "Postfix did not start"; }
    SRV_PID=$PF_MASTER SRV_PORT=$PF_PORT SRV_LOG=$PF_LOG
}

# ------------------------------------------------------------- mxguard
MX=$WORK/mxguard
MX_LOG=$WORK/mxguard.log

mx_start() {
    rm -rf "$MX"
    mkdir -p "$MX/data"
    MX_PORT=$(free_port)
    cat >"$MX/mxguard.toml" <<EOF
# Written by bench/tarpit-bench.sh
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

# No [dns]: the system's resolver configuration, which answers the reverse
# lookups of loopback clients itself (RFC 6761), so this work sends no DNS
# query. (With [dns] nameservers, loopback PTR queries would go to them,
# uncached, one per session.)

# Limits lifted for 10,000 sessions from 40 addresses; the tarpit from the
# 2nd RCPT of a session on.
[limits]
max_connections = 20000
connections_per_ip = 20000
max_errors = 100
tarpit_start = 1
tarpit_delay = "${BENCH_DELAY}s"

[sender]
verify_domain = false
EOF
    echo "=== $(date '+%F %T') start on port $MX_PORT" >>"$MX_LOG"
    RUST_LOG="${MXGUARD_LOG:-info}" "$BIN" serve --config "$MX/mxguard.toml" >>"$MX_LOG" 2>&1 &
    MX_PID=$!
    wait_port "$MX_PORT" "$MX_PID" || { tail -30 "$MX_LOG" >&2; die "mxguard did not start"; }
    SRV_PID=$MX_PID SRV_PORT=$MX_PORT SRV_LOG=$MX_LOG
}

# ------------------------------------------------------------- runs
# run_one SERVER SESSIONS REPEAT [WAVES]
run_one() {
    local srv=$1 n=$2 rep=$3 waves=${4:-1} busy="" rc=0 wave
    if [[ $BENCH_QUIET_WAIT != 0 ]]; then
        busy=$(procstats quiet --max-busy "$BENCH_QUIET_MAX" --wait "$BENCH_QUIET_WAIT") ||
            log "warning: the machine is busy with other work (${busy}% CPU); this run will be noisy"
    fi
    local -a extra=(--label "repeat=$rep" --label "busy_before_pct=$busy")
    if [[ $srv == postfix ]]; then
        pf_start
        extra+=(--rcpt2 u2@example.test)
    else
        mx_start
        extra+=(--server-log "$MX_LOG" --log-needle "RCPT replies delayed from now on (tarpit)")
    fi
    for ((wave = 1; wave <= waves; wave++)); do
        if ((wave > 1)) && [[ $BENCH_QUIET_WAIT != 0 ]]; then
            procstats quiet --max-busy "$BENCH_QUIET_MAX" --wait "$BENCH_QUIET_WAIT" >/dev/null ||
                log "warning: the machine is busy with other work; this wave will be noisy"
        fi
        log "$srv: $n sessions, repeat $rep/$BENCH_REPEATS, wave $wave/$waves (port $SRV_PORT, pid $SRV_PID)"
        # Bounded: establishing + hold + replies/close + release (DELAY + 30 s) + probes.
        timeout --kill-after=10 $((BENCH_DELAY * 2 + BENCH_HOLD + 200)) \
            python3 "$BENCH/tarpit-bench.py" measure --server "$srv" --server-pid "$SRV_PID" --port "$SRV_PORT" \
            --sessions "$n" --sources "$BENCH_SOURCES" --inflight "$BENCH_INFLIGHT" --delay "$BENCH_DELAY" \
            --hold "$BENCH_HOLD" --then "$BENCH_THEN" --establish-timeout $((BENCH_DELAY - BENCH_HOLD - 8)) \
            --release-timeout $((BENCH_DELAY + 30)) --csv "$CSV" "${extra[@]}" --label "wave=$wave" >>"$JSONL" &
        RUN_PID=$!
        wait "$RUN_PID" || rc=$?
        RUN_PID=""
        if [[ $rc -ne 0 ]]; then
            FAILED=1
            log "$srv $n sessions FAILED (rc $rc): $(tail -1 "$JSONL")"
            log "last lines of the $srv log ($SRV_LOG):"
            tail -15 "$SRV_LOG" >&2
            break
        fi
    done
    if [[ $srv == postfix ]]; then stop_postfix; else stop_mxguard; fi
}

log "work dir $WORK; raw results $CSV; ulimit -n $(ulimit -n)"
for ((rep = 1; rep <= BENCH_REPEATS; rep++)); do
    want postfix && run_one postfix "$BENCH_PF_SESSIONS" "$rep"
    if want mxguard; then
        ((BENCH_MX_SMALL > 0)) && run_one mxguard "$BENCH_MX_SMALL" "$rep"
        run_one mxguard "$BENCH_SESSIONS" "$rep" "$BENCH_WAVES"
    fi
done

{
    echo "# tarpit-bench $STAMP"
    echo
    echo "- host: $(hostname), $(nproc) CPUs, kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
    echo "- Postfix $(postconf -h mail_version 2>/dev/null || echo '?'); mxguard: ${BIN_ORIG:-not run}$( [[ -n ${BIN_ORIG:-} ]] && echo ", built $(date -r "$BIN_ORIG" '+%F %T'); repo at $(git -C "$REPO" rev-parse --short HEAD)")"
    echo "- sessions: mxguard $BENCH_SESSIONS in $BENCH_WAVES wave(s) on one server (and $BENCH_MX_SMALL), Postfix $BENCH_PF_SESSIONS; MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-unset}; delay ${BENCH_DELAY}s; hold ${BENCH_HOLD}s; then $BENCH_THEN; sources $BENCH_SOURCES; $BENCH_INFLIGHT set up at once; $BENCH_REPEATS repeat(s)"
    echo
    tb summarize "$CSV" || echo "(no successful measurement)"
} >"$SUMMARY"
cat "$SUMMARY"
log "raw results: $CSV ($JSONL); this table: $SUMMARY"
[[ $FAILED -eq 0 ]] || { log "some measurements failed"; exit 1; }
