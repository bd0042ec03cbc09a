#!/usr/bin/env bash
# smtp-bench.sh - compare mxguard with Postfix doing the same SMTP work.
#
# Run from the repository root as root:   bash bench/smtp-bench.sh
# See bench/README.md for what is measured and /work/shared/BENCH.md for the
# reference workload. Everything talks to 127.0.0.1 only; ports are picked
# free, outside the ephemeral range, never 25/53/5353.
#
# Knobs (environment):
#   BENCH_WORK=local        local: mail for u1@example.test, delivered into a Maildir
#                           relay: mail for u1@relay.test from a relay client, relayed
#                           by both servers to one smtp-sink on 127.0.0.1 (see "Relay work")
#   BENCH_CONC="1 20 100"   concurrent SMTP sessions (smtp-source -s); relay work: "20"
#   BENCH_MESSAGES=5000     messages per run (smtp-source -m)
#   BENCH_REPEATS=3         runs per server and concurrency (interleaved)
#   BENCH_SIZE=2048         message size in bytes (smtp-source -l)
#   BENCH_ONLY=both         both | postfix | mxguard
#   BENCH_WARMUP=200        messages sent once to each server before measuring (0: none)
#   BENCH_TIMEOUT=          seconds a run may take until all mail is delivered
#                           (default 60 + MESSAGES/20)
#   BENCH_MEM_BUDGET=0.03   CPU share (of one core) the PSS/RSS sampler may use; its
#                           100 ms interval stretches to stay within it (0: strict
#                           100 ms). See procstats.py MemSampler for why.
#   BENCH_QUIET_WAIT=60     before each run wait up to this many seconds for the machine
#   BENCH_QUIET_MAX=15      to be below this % CPU busy (other work, e.g. a cargo build,
#                           skews everything); 0 s: do not check. The busy % seen
#                           is recorded (busy_before_pct) and a warning printed.
#   BENCH_KEEP_GOING=0      1: record a failed run and carry on instead of stopping
#   BENCH_KEEP=0            1: keep the temp dir /tmp/mxbench-* (kept anyway on failure)
#   BENCH_FILTERS=0         see "Filters switch" below
#   BENCH_LIMITS=off        mxguard's hourly volume limits ([limits]) and where they
#                           count (see "Limits switch" below): off | embedded | redis
#   MXGUARD_BIN=            use this binary instead of `cargo build --release`
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BENCH=$REPO/bench
export PATH="$PATH:/usr/sbin:/sbin"

BENCH_WORK=${BENCH_WORK:-local}
case $BENCH_WORK in
    local) BENCH_CONC=${BENCH_CONC:-"1 20 100"} ;;
    relay) BENCH_CONC=${BENCH_CONC:-"20"} ;;
    *) echo "BENCH_WORK must be local or relay" >&2; exit 1 ;;
esac
BENCH_MESSAGES=${BENCH_MESSAGES:-5000}
BENCH_REPEATS=${BENCH_REPEATS:-3}
BENCH_SIZE=${BENCH_SIZE:-2048}
BENCH_ONLY=${BENCH_ONLY:-both}
BENCH_WARMUP=${BENCH_WARMUP:-200}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-$((60 + BENCH_MESSAGES / 20))}
BENCH_MEM_BUDGET=${BENCH_MEM_BUDGET:-0.03}
BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-60}
BENCH_QUIET_MAX=${BENCH_QUIET_MAX:-15}
BENCH_KEEP_GOING=${BENCH_KEEP_GOING:-0}
BENCH_KEEP=${BENCH_KEEP:-0}
# ---------------------------------------------------------------------------
# Filters switch. BENCH.md's reference work has every message pay a client IP
# list match (check_client_access cidr:...) and a DNSBL lookup
# (reject_rbl_client dnsbl.test=127.0.0.2) on top of the relay check. mxguard
# has both ([access] blacklist_file, [[dnsbl]]; measured by conn-bench.sh),
# but Postfix's DNSBL side cannot be run here (see below), and the comparison
# must be the same work on both sides, so they are OFF (0). To turn them on later (1), both halves
# must be completed together:
#   - Postfix: the main.cf lines are written below (pf_write_config); what is
#     missing is the DNS side. Postfix's resolver only speaks to port 53 and
#     reads /etc/resolv.conf, which we must not edit, and something not ours
#     may already hold 127.0.0.1:53 here. So: a test DNS server for the
#     dnsbl.test zone on a free 127.x.y.z:53 (or dnsmasq there forwarding
#     only dnsbl.test to it, `no-resolv`), and smtpd run chrooted (chroot "y"
#     in pf_write_master) with $PF_QUEUE/etc/resolv.conf naming that address
#     and /etc/hosts, services, nsswitch.conf copied into $PF_QUEUE/etc.
#     NB: the rules this script was written under forbid using port 53 at
#     all (also 25 and 5353); the Postfix DNSBL side needs that lifted for a
#     127.x.y.z:53 address, or it cannot be measured this way.
#   - mxguard: the matching blacklist/DNSBL settings in mx_write_config.
# ---------------------------------------------------------------------------
BENCH_FILTERS=${BENCH_FILTERS:-0}

# ---------------------------------------------------------------------------
# Limits switch (BENCH_LIMITS, mxguard only; Postfix has no such limits built
# in and runs unchanged, as the baseline of the same run).
#   off       no hourly limits (the default, as in the earlier runs).
#   embedded  [limits] messages_per_hour_per_ip, recipients_per_hour and
#             messages_per_hour_per_recipient all = LIMIT_HIGH: far above
#             what a run sends, so nothing is refused, but every message pays
#             the checks (MAIL: messages from this IP; RCPT: recipients of
#             this IP and messages of this mailbox, each read as the current
#             and the previous hourly bucket) and the counts (RCPT: +1
#             recipients; queued: +1 for the IP and +1 for the mailbox), in
#             the default store: the redb file data_dir/state.redb, fresh
#             for each run like the rest of data_dir.
#   redis     the same limits, with [store] backend = "redis" on a
#             redis-server this script starts on a free 127.0.0.1 port
#             (--save "" --appendonly no: no disk), flushed (FLUSHDB) before
#             each mxguard run. Its CPU is reported as a column of its own
#             and kept out of "other CPU %".
# All 5,000 messages of a run come from one client address to one mailbox,
# so they all count on the same three keys (the hottest case for the store).
# After each mxguard run the counts are checked: the server is restarted on
# the same state (same data_dir / same Redis database) with every limit set
# to MESSAGES + 1, then one message from 127.0.0.1 must be accepted (so no
# more than MESSAGES were counted), a second MAIL FROM from 127.0.0.1 must
# get 451 (messages per IP: exactly MESSAGES were counted), and a RCPT from
# 127.0.0.2 must get 451 (messages per recipient: the same). With redis the
# counters are also read back with redis-cli. A failed check fails the run.
# ---------------------------------------------------------------------------
BENCH_LIMITS=${BENCH_LIMITS:-off}
LIMIT_HIGH=1000000000

# ---------------------------------------------------------------------------
# Relay work (BENCH_WORK=relay). The client (127.0.0.1) is a relay client of
# both servers and sends to u1@relay.test, a domain neither server knows; both
# relay everything to one smtp-sink (Postfix's test server) on a free
# 127.0.0.1 port, started fresh for each run:
#   - Postfix: relayhost = [127.0.0.1]:SINKPORT (brackets: no MX lookup, and
#     the IP literal needs no DNS at all), mynetworks = 127.0.0.1/32 and
#     permit_mynetworks as in the local work; no mailbox for relay.test; its
#     smtp client, connection cache (on demand), concurrency and queue
#     durability are Postfix's defaults.
#   - mxguard: [relay] clients = ["127.0.0.1"], smarthost = "127.0.0.1:SINKPORT"
#     (an IP literal: no DNS query either).
# smtp-sink runs with -c: it prints "sess=S quit=Q mesg=M" whenever a session
# ends, a QUIT is executed or a "." is received, to a file that procstats.py
# follows. "Relayed" = its mesg counter reached MESSAGES. A run counts only
# if the sink ends with exactly MESSAGES (more = a duplicate delivery, which
# fails the run as "duplicates"), the server's queue is empty and its log
# shows MESSAGES successful deliveries to the sink.
# ---------------------------------------------------------------------------
SENDER=sender@client.test
if [[ $BENCH_WORK == relay ]]; then RCPT=u1@relay.test; else RCPT=u1@example.test; fi
NUSERS=100

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; FAILED=1; exit 1; }
procstats() { python3 "$BENCH/procstats.py" "$@"; }

FAILED=0
WORK=""
PF_MASTER=""
MX_PID=""
RUN_PID=""
PF_MASTER_USED=""
SINK_PID=""
SINK_PORT=""
REDIS_PID=""
REDIS_PORT=""

case $BENCH_ONLY in both|postfix|mxguard) ;; *) die "BENCH_ONLY must be both, postfix or mxguard";; esac
[[ $EUID -eq 0 ]] || die "run as root (the private Postfix instance needs it)"
case $BENCH_LIMITS in off|embedded|redis) ;; *) die "BENCH_LIMITS must be off, embedded or redis";; esac
[[ $BENCH_LIMITS == off || $BENCH_WORK == local ]] || die "BENCH_LIMITS is for the local work"
[[ $BENCH_FILTERS == 0 ]] || die "BENCH_FILTERS=1 is not implemented yet: mxguard has no IP list/DNSBL support and the DNSBL test DNS is not set up (see the Filters switch comment)"
command -v python3 >/dev/null || die "python3 is needed"
want() { [[ $BENCH_ONLY == both || $BENCH_ONLY == "$1" ]]; }

# --------------------------------------------------------------- cleanup

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
    local snap
    snap=$(procstats snapshot "$MX_PID" 2>/dev/null || true)
    kill -TERM "$MX_PID" 2>/dev/null || true
    # shellcheck disable=SC2086
    procstats wait-gone --timeout 15 $snap || log "warning: mxguard had to be killed"
    wait "$MX_PID" 2>/dev/null || true
    MX_PID=""
}

stop_redis() {
    [[ -n $REDIS_PID ]] || return 0
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
}

stop_sink() {
    [[ -n $SINK_PID ]] || return 0
    kill -TERM "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    if [[ -n $RUN_PID ]]; then
        kill -TERM "$RUN_PID" 2>/dev/null
        wait "$RUN_PID" 2>/dev/null
    fi
    stop_mxguard
    stop_postfix
    stop_sink
    stop_redis
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $rc -ne 0 || $FAILED -ne 0 || $BENCH_KEEP == 1 ]]; then
            log "kept $WORK for inspection (logs: $WORK/*.log${PF_MASTER_USED:+, $WORK/postfix/maillog})"
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

# --------------------------------------------------------------- prerequisites

if ! command -v smtp-source >/dev/null; then
    log "smtp-source missing: installing postfix (debconf: No configuration)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y postfix >&2 ||
        { apt-get -o DPkg::Lock::Timeout=600 update >&2 && apt-get -o DPkg::Lock::Timeout=600 install -y postfix >&2; } ||
        die "could not install postfix"
fi
command -v smtp-source >/dev/null || die "smtp-source still missing after installing postfix"
[[ $BENCH_WORK != relay ]] || command -v smtp-sink >/dev/null || die "smtp-sink missing (Debian package postfix)"
if [[ $BENCH_LIMITS == redis ]] && want mxguard && ! command -v redis-server >/dev/null; then
    log "redis-server missing: installing it (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y redis-server >&2 ||
        { apt-get -o DPkg::Lock::Timeout=600 update >&2 && apt-get -o DPkg::Lock::Timeout=600 install -y redis-server >&2; } ||
        die "could not install redis-server"
fi
if want postfix; then
    command -v postfix >/dev/null || die "postfix missing"
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
    [[ -x $BIN ]] || die "mxguard binary $BIN not found or not executable"
    BIN=$(realpath "$BIN")
fi

WORK=$(mktemp -d /tmp/mxbench-XXXXXX)
chmod 755 "$WORK"   # Postfix daemons (user postfix) must reach their queue
mkdir -p "$BENCH/results"
STAMP=$(date +%Y%m%d-%H%M%S)
RESULT=smtp-bench-$STAMP
[[ $BENCH_WORK == local ]] || RESULT=smtp-bench-$BENCH_WORK-$STAMP
[[ $BENCH_LIMITS == off ]] || RESULT=smtp-bench-limits-$BENCH_LIMITS-$STAMP
CSV=$BENCH/results/$RESULT.csv
JSONL=$BENCH/results/$RESULT.jsonl
SUMMARY=$BENCH/results/$RESULT.md
CLIENT_LOG=$WORK/smtp-source.log
log "work dir $WORK; raw results $CSV"
if want mxguard; then
    # A private copy: a `cargo build` by someone else during the benchmark
    # must not swap the binary between runs.
    mkdir -p "$WORK/bin"
    cp "$BIN" "$WORK/bin/mxguard"
    BIN_ORIG=$BIN
    BIN=$WORK/bin/mxguard
fi

free_port() { procstats free-port; }

# wait_port PORT PID NAME: until something accepts on 127.0.0.1:PORT; fails if
# PID dies or after 30 s.
wait_port() {
    local port=$1 pid=$2 name=$3 i
    for ((i = 0; i < 300; i++)); do
        if [[ ! -e /proc/$pid ]] || grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "$name did not accept connections on 127.0.0.1:$port within 30 s"
    return 1
}

# --------------------------------------------------------------- Postfix

PF=$WORK/postfix
PF_ETC=$PF/etc
PF_QUEUE=$PF/queue
PF_MAIL=$PF/mail
PF_LOG=$PF/maillog
PF_PORT=""
VMAIL_UID=65534   # nobody/nogroup: Maildir files owner; virtual(8) wants uid >= 100
VMAIL_GID=65534

pf_write_config() {
    mkdir -p "$PF_ETC" "$PF/data"
    chown postfix "$PF/data"
    for ((i = 1; i <= NUSERS; i++)); do echo "u$i@example.test example.test/u$i/"; done >"$PF_ETC/vmailbox"
    local client_restrictions=""
    if [[ $BENCH_FILTERS == 1 ]]; then
        # Same as BENCH.md. Needs the DNSBL test DNS (see the Filters switch).
        printf '192.0.2.0/24 REJECT\n198.51.100.0/24 REJECT\n' >"$PF_ETC/blacklist.cidr"
        client_restrictions="check_client_access cidr:$PF_ETC/blacklist.cidr, reject_rbl_client dnsbl.test=127.0.0.2"
    fi
    cat >"$PF_ETC/main.cf" <<EOF
# Private benchmark instance (bench/smtp-bench.sh); the system Postfix is untouched.
queue_directory = $PF_QUEUE
data_directory = $PF/data
maillog_file = $PF_LOG
maillog_file_prefixes = /var, /dev/stdout, /tmp
syslog_name = postfix-mxbench
alias_maps =
alias_database =
biff = no

# The work of BENCH.md
myhostname = mx.example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
compatibility_level = 3.6
mydestination =
mynetworks = 127.0.0.1/32
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:$PF_ETC/vmailbox
virtual_mailbox_base = $PF_MAIL
virtual_uid_maps = static:$VMAIL_UID
virtual_gid_maps = static:$VMAIL_GID
smtpd_client_restrictions = $client_restrictions
smtpd_relay_restrictions =
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_reject_unlisted_recipient = yes
disable_vrfy_command = yes
# same limit as mxguard's max_message_size = "25MB"
message_size_limit = 26214400
# Everything else (fsync of queue files, in_flow_delay, process limits...) is
# Postfix's default.
EOF
    if [[ $BENCH_WORK == relay ]]; then
        # relay.test is in no address class: default_transport (smtp) to the
        # relayhost, set for each run's sink port by pf_start. The smtp
        # client keeps its defaults (connection cache on demand through
        # scache, destination concurrency 20, no TLS).
        cat >>"$PF_ETC/main.cf" <<EOF

# Relay work: everything not local goes to the smtp-sink (port set per run)
relayhost =
EOF
    fi
}

# master.cf: Debian's services, smtpd on our port, no chroot (a chroot in a
# throw-away queue directory would lack etc/hosts, etc/resolv.conf, ...).
pf_write_master() {
    cat >"$PF_ETC/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$PF_PORT inet n -     n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

# Fresh, empty queue and mail store; start; wait for the port.
pf_start() {
    rm -rf "$PF_QUEUE" "$PF_MAIL"
    mkdir -p "$PF_QUEUE" "$PF_MAIL"
    chown "$VMAIL_UID:$VMAIL_GID" "$PF_MAIL"
    PF_PORT=$(free_port)
    pf_write_master
    if [[ $BENCH_WORK == relay ]]; then
        postconf -c "$PF_ETC" -e "relayhost = [127.0.0.1]:$SINK_PORT" || die "postconf failed"
    fi
    # `postfix check` creates the queue subdirectories with the right owners
    postfix -c "$PF_ETC" check >&2 || { tail -20 "$PF_LOG" >&2; die "postfix check failed"; }
    postfix -c "$PF_ETC" start >&2 2>&1 || { tail -20 "$PF_LOG" >&2; die "postfix start failed"; }
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $PF_QUEUE/pid/master.pid ]] && break
        sleep 0.1
    done
    PF_MASTER=$(tr -d ' \n' <"$PF_QUEUE/pid/master.pid" 2>/dev/null || true)
    PF_MASTER_USED=1
    [[ -n $PF_MASTER ]] || { tail -20 "$PF_LOG" >&2; die "Postfix master did not write its pid file"; }
    wait_port "$PF_PORT" "$PF_MASTER" Postfix || { tail -30 "$PF_LOG" >&2; die "Postfix did not start"; }
}

# --------------------------------------------------------------- mxguard

MX=$WORK/mxguard
MX_DATA=$MX/data
MX_CONF=$MX/mxguard.toml
MX_LOG=$WORK/mxguard.log
MX_PORT=""

# BENCH_LIMITS: the hourly limits, and the [store] they count in.
limits_config() {
    local high=${1:-$LIMIT_HIGH}
    [[ $BENCH_LIMITS != off ]] || return 0
    printf '# BENCH_LIMITS=%s: every message is checked and counted\n' "$BENCH_LIMITS"
    printf 'messages_per_hour_per_ip = %s\nrecipients_per_hour = %s\nmessages_per_hour_per_recipient = %s\n' \
        "$high" "$high" "$high"
    if [[ $BENCH_LIMITS == redis ]]; then
        printf '\n[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s/0"\ntimeout = "500ms"\n' "$REDIS_PORT"
    else
        printf '\n[store]\nbackend = "embedded"\n'
    fi
}

mx_write_config() {
    mkdir -p "$MX"
    {
        cat <<EOF
# Written by bench/smtp-bench.sh
[server]
hostname = "mx.example.test"
data_dir = "$MX_DATA"
max_message_size = "25MB"

[[listener]]
address = "127.0.0.1:$MX_PORT"
role = "mx"

[domains]
local = ["example.test"]

# The load comes from one address (127.0.0.1), which Postfix exempts from its
# per-client limits as part of mynetworks; lift mxguard's to match.
[limits]
max_connections = 10000
connections_per_ip = 10000
$(limits_config)

# Postfix's restrictions here have no reject_unknown_sender_domain, and this
# machine has no DNS for client.test: compare without the sender's DNS check.
[sender]
verify_domain = false
EOF
        if [[ $BENCH_WORK == relay ]]; then
            # an IP literal as smarthost: no DNS query
            printf '\n[relay]\nclients = ["127.0.0.1"]\nsmarthost = "127.0.0.1:%s"\n' "$SINK_PORT"
        fi
        # BENCH_FILTERS=1: add mxguard's client IP list and DNSBL settings here.
        for ((i = 1; i <= NUSERS; i++)); do
            printf '\n[[account]]\naddress = "u%d@example.test"\n' "$i"
        done
    } >"$MX_CONF"
}

# Fresh, empty data dir; start; wait for the port. Any failure prints the log.
# (mx_start keep: keep data_dir and the config as they are, for the counter check.)
mx_start() {
    local old_port=$MX_PORT
    MX_PORT=$(free_port)
    if [[ ${1:-} != keep ]]; then
        rm -rf "$MX_DATA"
        mkdir -p "$MX_DATA"
        mx_write_config
    else
        sed -i "s/^address = \"127.0.0.1:$old_port\"/address = \"127.0.0.1:$MX_PORT\"/" "$MX_CONF"
    fi
    echo "=== $(date '+%F %T') start on port $MX_PORT" >>"$MX_LOG"
    # Logging on, as Postfix logs every message too (MXGUARD_LOG=warn to compare without).
    RUST_LOG="${MXGUARD_LOG:-info}" "$BIN" serve --config "$MX_CONF" >>"$MX_LOG" 2>&1 &
    MX_PID=$!
    if ! wait_port "$MX_PORT" "$MX_PID" mxguard; then
        log "mxguard failed to start; its log ($MX_LOG):"
        tail -50 "$MX_LOG" >&2
        log "its config: $MX_CONF"
        die "mxguard did not start"
    fi
}

# --------------------------------------------------------------- redis-server

# One redis-server for the whole script (BENCH_LIMITS=redis), no disk.
redis_start() {
    REDIS_PORT=$(free_port)
    mkdir -p "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK/redis" --logfile "$WORK/redis.log" &
    REDIS_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break
        [[ -e /proc/$REDIS_PID ]] || break
        sleep 0.1
    done
    [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] || { tail -20 "$WORK/redis.log" >&2; die "redis-server did not start"; }
    log "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
}

# The counters the last run left, "key=value" per line (redis only).
redis_counters() {
    local k
    redis-cli -p "$REDIS_PORT" --scan --pattern 'mxguard:v:rate:*' | sort | while read -r k; do
        printf '%s=%s\n' "$k" "$(redis-cli -p "$REDIS_PORT" get "$k")"
    done
}

# check_counts N: after an mxguard run of N messages (server stopped), check
# that it counted exactly N (see the Limits switch). Returns 1 on failure.
check_counts() {
    local n=$1 bucket0=$2 out rc=0
    if [[ $BENCH_LIMITS == redis ]]; then
        log "Redis after the run: dbsize $(redis-cli -p "$REDIS_PORT" dbsize); counters: $(redis_counters | tr '\n' ' ')"
        local sum
        sum=$(redis_counters | awk -F= '/:rate:msg_ip:127\.0\.0\.1:/ {s += $2} END {print s + 0}')
        [[ $sum == "$n" ]] || { log "counter check: Redis holds $sum messages for 127.0.0.1, expected $n"; rc=1; }
    fi
    if (( $(date +%s) / 3600 != bucket0 )); then
        log "counter check skipped: an hour boundary passed during the run (the counts are split over two hourly buckets)"
        return "$rc"
    fi
    # Restart on the same state with every limit at N + 1.
    sed -i "s/= $LIMIT_HIGH\$/= $((n + 1))/" "$MX_CONF"
    mx_start keep
    out=$(python3 - "$MX_PORT" <<'PYEOF'
import socket, sys
port = int(sys.argv[1])
def session(src, steps):
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(src, 0))
    f = s.makefile("rb")
    def reply():
        while True:
            line = f.readline()
            if len(line) < 4 or line[3:4] != b"-":
                return line.decode().strip()
    codes = [reply()[:3]]
    for cmd in steps:
        s.sendall(cmd.encode() + b"\r\n")
        r = reply()
        codes.append(r[:3])
        if not r.startswith(("2", "3")):
            break
    s.close()
    return " ".join(codes)
ok = "EHLO probe.client.test", "MAIL FROM:<sender@client.test>", "RCPT TO:<u1@example.test>", "DATA"
a = session("127.0.0.1", ok + ("Subject: counter check\r\n\r\nx\r\n.", "QUIT"))
b = session("127.0.0.1", ("EHLO probe.client.test", "MAIL FROM:<sender@client.test>"))
c = session("127.0.0.2", ("EHLO probe.client.test", "MAIL FROM:<sender@client.test>", "RCPT TO:<u1@example.test>"))
print(f"{a}|{b}|{c}")
PYEOF
    ) || out="probe failed"
    stop_mxguard
    if [[ $out == "220 250 250 250 354 250 221|220 250 451|220 250 250 451" ]]; then
        log "counter check: $n messages counted for the client address and for the mailbox (next one over $((n + 1)) refused with 451)"
    else
        log "counter check FAILED: replies $out; expected 220 250 250 250 354 250 221|220 250 451|220 250 250 451"
        rc=1
    fi
    return "$rc"
}

# --------------------------------------------------------------- smtp-sink

SINK_OUT=""
SINK_ERR=$WORK/smtp-sink.log

# sink_start TAG: a fresh smtp-sink for one run, its counters in $SINK_OUT.
sink_start() {
    SINK_PORT=$(free_port)
    SINK_OUT=$WORK/sink-$1.out
    : >"$SINK_OUT"
    echo "=== $(date '+%F %T') $1 on port $SINK_PORT" >>"$SINK_ERR"
    # -c: counters; -u nobody: drop root; backlog 1000. No dump files (-d/-D
    # would add a file write per message to the sink's CPU).
    smtp-sink -c -u nobody "127.0.0.1:$SINK_PORT" 1000 >"$SINK_OUT" 2>>"$SINK_ERR" &
    SINK_PID=$!
    wait_port "$SINK_PORT" "$SINK_PID" smtp-sink || { tail -5 "$SINK_ERR" >&2; die "smtp-sink did not start"; }
    # wait_port's probe connection is a session too: let the sink count it
    # before procstats takes its baseline
    local i
    for ((i = 0; i < 50; i++)); do
        grep -q 'sess=1 ' "$SINK_OUT" && return 0
        sleep 0.1
    done
    log "warning: smtp-sink did not count the probe connection; its connection count may be one too high"
}

# sink_counter FIELD: the last value of sess|quit|mesg that the sink printed
sink_counter() {
    tr '\r' '\n' <"$SINK_OUT" | sed -n "s/.*$1=\([0-9]*\).*/\1/p" | tail -1
}

# --------------------------------------------------------------- one run

# run_one SERVER CONC MESSAGES REPEAT(or "warmup")
run_one() {
    local server=$1 conc=$2 n=$3 rep=$4 root port maildir srvlog busy="" loglines=0
    local -a extra=()
    if [[ $BENCH_QUIET_WAIT != 0 ]]; then
        if ! busy=$(procstats quiet --max-busy "$BENCH_QUIET_MAX" --wait "$BENCH_QUIET_WAIT"); then
            log "warning: the machine is busy with other work (${busy}% CPU over 1 s after waiting ${BENCH_QUIET_WAIT}s); this run will be noisy"
        fi
    fi
    [[ $BENCH_WORK != relay ]] || sink_start "$server-$conc-$rep"
    if [[ $server == postfix ]]; then
        [[ ! -f $PF_LOG ]] || loglines=$(wc -l <"$PF_LOG")
        pf_start
        root=$PF_MASTER port=$PF_PORT maildir=$PF_MAIL/example.test/u1/new srvlog=$PF_LOG
        local q
        for q in incoming active deferred hold maildrop; do extra+=(--queue-dir "$PF_QUEUE/$q"); done
    else
        [[ ! -f $MX_LOG ]] || loglines=$(wc -l <"$MX_LOG")
        if [[ $BENCH_LIMITS == redis ]]; then
            [[ $(redis-cli -p "$REDIS_PORT" flushdb) == OK ]] || die "redis FLUSHDB failed"
            extra+=(--helper-pid "$REDIS_PID")
        fi
        mx_start
        root=$MX_PID port=$MX_PORT maildir=$MX_DATA/mail/example.test/u1/new srvlog=$MX_LOG
    fi
    extra+=(--label "limits=$BENCH_LIMITS")
    local bucket0=$(( $(date +%s) / 3600 ))
    local -a target=(--maildir "$maildir")
    if [[ $BENCH_WORK == relay ]]; then
        target=(--sink-out "$SINK_OUT" --sink-pid "$SINK_PID" --sink-port "$SINK_PORT")
        extra+=(--label "work=relay")
    fi
    if [[ $rep == warmup ]]; then
        extra+=(--label "server=$server" --label "conc=$conc" --label "repeat=warmup")
    else
        extra+=(--csv "$CSV" --label "server=$server" --label "conc=$conc" --label "repeat=$rep")
    fi
    [[ -z $busy ]] || extra+=(--label "busy_before_pct=$busy")
    echo "=== $server conc=$conc repeat=$rep" >>"$CLIENT_LOG"
    local rc=0
    # In the background + wait, so that a signal to this script is handled at
    # once (the trap stops the measurement, its client and the servers).
    # (python3 directly, not the procstats function: $! must be python itself)
    python3 "$BENCH/procstats.py" run --root-pid "$root" "${target[@]}" --messages "$n" \
        --timeout "$BENCH_TIMEOUT" --mem-budget "$BENCH_MEM_BUDGET" --client-log "$CLIENT_LOG" "${extra[@]}" -- \
        smtp-source -s "$conc" -l "$BENCH_SIZE" -m "$n" -f "$SENDER" -t "$RCPT" "127.0.0.1:$port" \
        >>"$JSONL" &
    RUN_PID=$!
    wait "$RUN_PID" || rc=$?
    RUN_PID=""
    if [[ $rc -ne 0 ]]; then
        log "$server conc=$conc repeat=$rep FAILED: $(tail -1 "$JSONL")"
        log "last lines of the client log ($CLIENT_LOG):"
        tail -5 "$CLIENT_LOG" >&2
        log "last lines of the $server log ($srvlog):"
        tail -30 "$srvlog" >&2
    fi
    if [[ $server == postfix ]]; then stop_postfix; else stop_mxguard; fi
    if [[ $server == mxguard && $BENCH_LIMITS != off && $rc -eq 0 ]]; then
        local store_errors
        store_errors=$(tail -n +"$((loglines + 1))" "$MX_LOG" | grep -c 'state store unavailable' || true)
        [[ $store_errors == 0 ]] || { log "$server: the log says the state store failed ($store_errors warnings): checks were skipped"; rc=1; }
        check_counts "$n" "$bucket0" || rc=1
    fi
    if [[ $BENCH_WORK == relay ]]; then
        # Both halves must agree: the sink counted exactly n messages (also
        # after the server stopped: no late duplicate), and the server's own
        # log of this run shows n deliveries to the sink and no deferral.
        local mesg sess ok_lines deferred
        mesg=$(sink_counter mesg) sess=$(sink_counter sess)
        stop_sink
        if [[ $server == postfix ]]; then
            ok_lines=$(tail -n +"$((loglines + 1))" "$PF_LOG" | grep -c "relay=127.0.0.1\[127.0.0.1\]:$SINK_PORT,.* status=sent (250 " || true)
            deferred=$(tail -n +"$((loglines + 1))" "$PF_LOG" | grep -c 'status=deferred' || true)
        else
            ok_lines=$(tail -n +"$((loglines + 1))" "$MX_LOG" | grep ' delivered ' | grep -c "127.0.0.1:$SINK_PORT said: 250 " || true)
            deferred=$(tail -n +"$((loglines + 1))" "$MX_LOG" | grep -c 'delivery deferred' || true)
        fi
        log "$server conc=$conc repeat=$rep: sink counted $mesg messages in $((sess - 1)) sessions after the server stopped; $server logged $ok_lines deliveries to the sink, $deferred deferrals"
        if [[ $rc -eq 0 && ($mesg != "$n" || $ok_lines != "$n") ]]; then
            log "$server conc=$conc repeat=$rep FAILED the relay check: expected $n at the sink and $n deliveries in the log"
            rc=1
        fi
        [[ $deferred == 0 ]] || log "warning: $server deferred $deferred deliveries (retries may duplicate messages)"
    fi
    if [[ $rc -ne 0 ]]; then
        FAILED=1
        local where="in $maildir"
        [[ $BENCH_WORK == local ]] || where="at the sink 127.0.0.1:$SINK_PORT"
        [[ $BENCH_KEEP_GOING == 1 && $rep != warmup ]] || die "run failed (expected exactly $n messages $where)"
    fi
}

# --------------------------------------------------------------- main

SERVERS=()
want postfix && SERVERS+=(postfix) && pf_write_config
want mxguard && SERVERS+=(mxguard)
if [[ $BENCH_LIMITS == redis ]] && want mxguard; then redis_start; fi

{
    echo "# smtp-bench $STAMP"
    echo
    echo "- host: $(hostname), $(nproc) CPUs, kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
    mx_desc="not run"
    if [[ -n ${BIN_ORIG:-} ]]; then
        mx_desc="$BIN_ORIG, built $(date -r "$BIN_ORIG" '+%F %T'); repo at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
        mx_desc+=" with $(git -C "$REPO" status --porcelain 2>/dev/null | grep -vc ' bench/' || true) uncommitted changes outside bench/"
    fi
    echo "- Postfix: $(postconf -h mail_version 2>/dev/null || echo '?'); mxguard: $mx_desc"
    echo "- work: smtp-source -s CONC -l $BENCH_SIZE -m $BENCH_MESSAGES -f $SENDER -t $RCPT, CONC in ($BENCH_CONC), $BENCH_REPEATS repeats, interleaved, fresh server each run"
    if [[ $BENCH_WORK == relay ]]; then
        echo "- relay work: both servers relay to one smtp-sink -c on 127.0.0.1, fresh for each run (Postfix: relayhost = [127.0.0.1]:PORT, smtp client defaults; mxguard: [relay] clients = [\"127.0.0.1\"], smarthost = \"127.0.0.1:PORT\")"
    fi
    echo "- filters (IP list + DNSBL): $([[ $BENCH_FILTERS == 1 ]] && echo on || echo off)"
    case $BENCH_LIMITS in
        off) echo "- mxguard hourly limits: off" ;;
        *) echo "- mxguard hourly limits: messages_per_hour_per_ip = recipients_per_hour = messages_per_hour_per_recipient = $LIMIT_HIGH (never reached; every message checked and counted), store: $BENCH_LIMITS$([[ $BENCH_LIMITS == redis ]] && echo " (redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1, no persistence, FLUSHDB before each run)"); counts checked after each run; Postfix unchanged" ;;
    esac
    echo
} >"$SUMMARY"

log "servers: ${SERVERS[*]}; concurrency: $BENCH_CONC; $BENCH_MESSAGES messages x $BENCH_REPEATS repeats"
if [[ $BENCH_WARMUP -gt 0 ]]; then
    for server in "${SERVERS[@]}"; do
        log "warm-up and delivery check: $server, $BENCH_WARMUP messages"
        run_one "$server" 5 "$BENCH_WARMUP" warmup
    done
fi

for conc in $BENCH_CONC; do
    for ((rep = 1; rep <= BENCH_REPEATS; rep++)); do
        for server in "${SERVERS[@]}"; do
            log "$server: $conc sessions, repeat $rep/$BENCH_REPEATS"
            run_one "$server" "$conc" "$BENCH_MESSAGES" "$rep"
        done
    done
done

procstats summarize "$CSV" >>"$SUMMARY"
echo
cat "$SUMMARY"
echo
log "raw per-run numbers: $CSV (and $JSONL); this table: $SUMMARY"
[[ $FAILED -eq 0 ]] || { log "some runs failed (BENCH_KEEP_GOING=1): they are in the CSV, not in the table"; exit 1; }
