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
#   BENCH_AUTH=off          on: every message DKIM-signed, mxguard verifies SPF/DKIM/DMARC
#                           and scores it with 21 content rules, against a DNS server
#                           started here (see "Auth switch" below); local work only
#   BENCH_AUTH_MILTERS=1    with BENCH_AUTH=on: also run Postfix with opendkim,
#                           opendmarc and policyd-spf doing the same checks (0: not)
#   BENCH_DNS_BIN=          with BENCH_AUTH=on: the bench_dns example binary to use
#                           instead of `cargo build --release --example bench_dns`
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
# Auth switch (BENCH_AUTH=on; local work, no limits). Every message is one
# pre-signed 2 KB message (bench/bench_dns.rs `sign`: RSA-2048, rsa-sha256,
# relaxed/relaxed, d=client.test s=bench, From: sender@client.test), sent
# BENCH_MESSAGES times by `smtp-source -F FILE` (the file as it is, instead
# of smtp-source's own message; BENCH_SIZE sets the file's size). A DNS
# server (bench/bench_dns.rs `serve`, hickory-server) runs for the whole
# script on a free 127.0.0.1 port, UDP and TCP, serving client.test: SPF
# "v=spf1 ip4:127.0.0.1 -all", the DKIM key at bench._domainkey, _dmarc
# "v=DMARC1; p=reject", MX/A, and the PTR of 127.0.0.1; TTLs 3600 s. So every
# message passes SPF, DKIM and DMARC. The servers (label `server` in the CSV):
#   postfix          as in the local work (plain), with the signed message;
#   postfix-milters  (BENCH_AUTH_MILTERS=1) the same plus the usual Debian
#                    verification stack: opendkim (Mode v) and opendmarc
#                    (RejectFailures) as milters on 127.0.0.1 ports, and
#                    policyd-spf (python) as a policy service spawned by
#                    master; their DNS goes to the bench DNS server (opendkim:
#                    libunbound forwarding to it; policyd-spf: pydns pointed
#                    at it by a wrapper; opendmarc: glibc's resolver, which
#                    only speaks to port 53, so an LD_PRELOAD shim sets the
#                    server's address and port after res_ninit);
#   mxguard-plain    as in the local work (no [verify], no rules, no [dns]);
#   mxguard-auth     plus [dns] nameservers = the bench DNS server, [verify]
#                    spf = dkim = "score", dmarc = "enforce", [scoring]
#                    tag_above 5, reject_above 10, headers, and 21 [[filter]]
#                    rules (mx_auth_config), one of which fires (0.5).
# After every run, every delivered file is checked: mxguard-auth's must carry
# Authentication-Results with spf=pass, dkim=pass and dmarc=pass and
# X-Spam-Score/X-Spam-Status; postfix-milters' the same results from
# policyd-spf, opendkim and opendmarc. One missing fails the run. The DNS
# server's CPU is the run's helper CPU (helper_cpu_ms_per_msg); the milter
# daemons' CPU and the DNS queries of each run go to RESULT-extra.csv.
# ---------------------------------------------------------------------------
BENCH_AUTH=${BENCH_AUTH:-off}
BENCH_AUTH_MILTERS=${BENCH_AUTH_MILTERS:-1}
AUTH_DOMAIN=client.test
AUTH_SELECTOR=bench

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
DNS_PID=""
DNS_PORT=""
DKIM_PID=""
DMARC_PID=""

case $BENCH_ONLY in both|postfix|mxguard) ;; *) die "BENCH_ONLY must be both, postfix or mxguard";; esac
[[ $EUID -eq 0 ]] || die "run as root (the private Postfix instance needs it)"
case $BENCH_LIMITS in off|embedded|redis) ;; *) die "BENCH_LIMITS must be off, embedded or redis";; esac
[[ $BENCH_LIMITS == off || $BENCH_WORK == local ]] || die "BENCH_LIMITS is for the local work"
case $BENCH_AUTH in off|on) ;; *) die "BENCH_AUTH must be off or on";; esac
[[ $BENCH_AUTH == off || ($BENCH_WORK == local && $BENCH_LIMITS == off) ]] || die "BENCH_AUTH=on is for the local work without BENCH_LIMITS"
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

# A daemon of the auth work (bench_dns, opendkim, opendmarc), by its pid.
stop_daemon() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
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
    stop_daemon "$DKIM_PID"
    stop_daemon "$DMARC_PID"
    stop_daemon "$DNS_PID"
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
if [[ $BENCH_AUTH == on ]]; then
    command -v openssl >/dev/null || die "openssl is needed (it makes the DKIM key)"
    if [[ $BENCH_AUTH_MILTERS == 1 ]] && want postfix &&
        ! { command -v opendkim && command -v opendmarc && command -v policyd-spf && command -v cc; } >/dev/null; then
        log "opendkim/opendmarc/policyd-spf missing: installing them (apt)"
        export DEBIAN_FRONTEND=noninteractive
        pkgs=(opendkim opendkim-tools opendmarc postfix-policyd-spf-python gcc libc6-dev)
        apt-get -o DPkg::Lock::Timeout=600 install -y "${pkgs[@]}" >&2 ||
            { apt-get -o DPkg::Lock::Timeout=600 update >&2 && apt-get -o DPkg::Lock::Timeout=600 install -y "${pkgs[@]}" >&2; } ||
            die "could not install the milters"
    fi
    if [[ -n ${BENCH_DNS_BIN:-} ]]; then
        DNS_BIN=$BENCH_DNS_BIN
    else
        log "building bench_dns (cargo build --release --example bench_dns)"
        cargo build --release --example bench_dns >&2 || die "cargo build --release --example bench_dns failed"
        DNS_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/bench_dns
    fi
    [[ -x $DNS_BIN ]] || die "bench_dns binary $DNS_BIN not found or not executable"
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
[[ $BENCH_AUTH == off ]] || RESULT=smtp-bench-auth-$STAMP
EXTRA_CSV=$BENCH/results/$RESULT-extra.csv
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
PF_ETC_MILTERS=$PF/etc-milters
PF_VARIANT=""   # "" (plain) or "milters" (BENCH_AUTH=on, postfix-milters)
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
    if [[ $PF_VARIANT == milters ]]; then
        # BENCH_AUTH: policyd-spf, spawned per policy connection as Debian's
        # README.Debian does it, through a wrapper that points its DNS at ours
        cat >>"$PF_ETC/master.cf" <<EOF
policyd-spf unix -      n       n       -       0       spawn
  user=policyd-spf argv=/usr/bin/python3 $AUTH/policyd-spf-bench.py $DNS_PORT $AUTH/policyd-spf.conf
EOF
    fi
}

# BENCH_AUTH=on, postfix-milters: the plain main.cf plus the milters and the
# SPF policy service, in a configuration directory of its own.
pf_write_milters_config() {
    rm -rf "$PF_ETC_MILTERS"
    cp -a "$PF/etc" "$PF_ETC_MILTERS"
    # Verification only (opendkim Mode v, opendmarc, policyd-spf). The
    # client is in mynetworks, so the policy service comes before
    # permit_mynetworks, or it would never be asked.
    postconf -c "$PF_ETC_MILTERS" -e \
        "smtpd_milters = inet:127.0.0.1:$DKIM_PORT, inet:127.0.0.1:$DMARC_PORT" \
        "non_smtpd_milters =" \
        "milter_default_action = tempfail" \
        "smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service unix:private/policyd-spf, permit_mynetworks" \
        "policyd-spf_time_limit = 3600" || die "postconf failed (milters)"
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
MX_VARIANT=""   # BENCH_AUTH=on: "plain" or "auth"

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

# BENCH_AUTH=on, mxguard-auth: sender authentication against the bench DNS
# server, scoring, and 21 content rules of the kinds a site writes (subject,
# body, headers, From, envelope, HELO). None fires on the bench message but
# SUBJ_FOR_REVIEW (0.5), so every message gets X-Spam-Score: 0.5 and
# X-Spam-Status: No, ... tests=SUBJ_FOR_REVIEW. [sender] verify_domain stays
# false, as in the other work, so the DNS work is the verification's.
mx_auth_config() {
    cat <<EOF

# BENCH_AUTH=on
[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]

[verify]
spf = "score"
dkim = "score"
dmarc = "enforce"

[scoring]
tag_above = 5.0
reject_above = 10.0
headers = true

[[filter]]
name = "SUBJ_ALL_CAPS"
on = "subject"
matches = '^[^a-z]{20,}\$'
score = 2.0

[[filter]]
name = "SUBJ_PRIZE"
on = "subject"
matches = '(?i)\b(lottery|you have won|winner|million dollars|inheritance)\b'
score = 4.0

[[filter]]
name = "SUBJ_URGENT"
on = "subject"
matches = '(?i)^\s*(urgent|important notice|action required|final warning)\b'
score = 1.5

[[filter]]
name = "SUBJ_MONEY_SIGNS"
on = "subject"
matches = '(?i)(\\$\\$\\$|100% free|act now|limited time)'
score = 2.0

[[filter]]
name = "SUBJ_FOR_REVIEW"
on = "subject"
matches = '(?i)\bfor (your )?review\b'
score = 0.5

[[filter]]
name = "BODY_PILLS"
on = "body"
matches = '(?i)\b(viagra|cialis|cheap\s+pills|online pharmacy)\b'
score = 6.0

[[filter]]
name = "BODY_CRYPTO_INVEST"
on = "body"
matches = '(?i)\b(bitcoin|btc wallet|crypto investment|guaranteed returns?)\b'
score = 2.5

[[filter]]
name = "BODY_VERIFY_ACCOUNT"
on = "body"
matches = '(?i)(verify|confirm|update) your (account|password|identity|billing)'
score = 3.0

[[filter]]
name = "BODY_URL_SHORTENER"
on = "body"
matches = '(?i)https?://(bit\.ly|tinyurl\.com|goo\.gl|t\.co|is\.gd)/'
score = 1.5

[[filter]]
name = "BODY_URL_IP"
on = "body"
matches = 'https?://[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}'
score = 2.0

[[filter]]
name = "BODY_CLICK_HERE"
on = "body"
matches = '(?i)click here to (unsubscribe|claim|confirm|activate)'
score = 1.0

[[filter]]
name = "BODY_ADVANCE_FEE"
on = "body"
matches = '(?i)\b(next of kin|beneficiary|barrister|diplomatic courier)\b'
score = 2.5

[[filter]]
name = "BODY_WIRE_URGENT"
on = "body"
matches = '(?i)\bwire transfer\b.*\b(urgent|today|immediately)\b'
score = 2.0

[[filter]]
name = "HDR_BULK_MAILER"
header = "X-Mailer"
matches = '(?i)(mass ?mailer|bulk ?mailer|sendblaster|atomic mail)'
score = 3.0

[[filter]]
name = "HDR_PRIORITY_HIGH"
header = "X-Priority"
matches = '^\s*1'
score = 0.5

[[filter]]
name = "HDR_HTML_ONLY"
header = "Content-Type"
matches = '(?i)^\s*text/html'
score = 0.5

[[filter]]
name = "HDR_TO_EMPTY"
header = "To"
matches = '^\s*\$'
score = 2.0

[[filter]]
name = "HDR_MSGID_NO_AT"
header = "Message-ID"
matches = '^\s*<[^@>]*>\s*\$'
score = 1.0

[[filter]]
name = "FROM_DIGITS_NAME"
on = "from"
matches = '^\s*"?[0-9]{6,}'
score = 1.0

[[filter]]
name = "ENV_FROM_RANDOM"
on = "envelope_from"
matches = '^[a-z0-9]{20,}@'
score = 1.0

[[filter]]
name = "HELO_BARE_IP"
on = "helo"
matches = '^\[?[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\]?\$'
score = 1.5
EOF
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
        [[ $MX_VARIANT != auth ]] || mx_auth_config
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

# --------------------------------------------------------------- BENCH_AUTH=on

AUTH=$WORK/auth
AUTH_MSG=$AUTH/message.txt
DNS_LOG=$WORK/bench_dns.log
DKIM_PORT=""
DMARC_PORT=""
CLK_TCK=$(getconf CLK_TCK)

# The key, the signed message, the DNS server (for the whole script).
auth_setup() {
    mkdir -p "$AUTH"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$AUTH/dkim.pem" 2>/dev/null ||
        die "openssl could not make the DKIM key"
    "$DNS_BIN" sign --key "$AUTH/dkim.pem" --domain "$AUTH_DOMAIN" --selector "$AUTH_SELECTOR" \
        --from "$SENDER" --to "$RCPT" --size "$BENCH_SIZE" --out "$AUTH_MSG" --record-out "$AUTH/dkim.txt" >&2 ||
        die "bench_dns sign failed"
    chmod 644 "$AUTH"/*
    local i
    for ((i = 0; i < 20; i++)); do
        DNS_PORT=$(free_port)
        python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("127.0.0.1",int(sys.argv[1])))' "$DNS_PORT" 2>/dev/null && break
    done
    : >"$AUTH/dns.out"
    "$DNS_BIN" serve --port "$DNS_PORT" --domain "$AUTH_DOMAIN" --selector "$AUTH_SELECTOR" \
        --record-file "$AUTH/dkim.txt" >"$AUTH/dns.out" 2>>"$DNS_LOG" &
    DNS_PID=$!
    for ((i = 0; i < 100; i++)); do
        grep -q '^ready' "$AUTH/dns.out" && break
        [[ -e /proc/$DNS_PID ]] || break
        sleep 0.1
    done
    grep -q '^ready' "$AUTH/dns.out" || { tail -5 "$DNS_LOG" >&2; die "bench_dns serve did not start"; }
    log "bench DNS server on 127.0.0.1:$DNS_PORT (pid $DNS_PID); message $AUTH_MSG ($(wc -c <"$AUTH_MSG") bytes, LF ends), DKIM d=$AUTH_DOMAIN s=$AUTH_SELECTOR rsa-sha256"
}

# The queries the DNS server has answered so far (all runs).
dns_queries() {
    local before i
    before=$(grep -c '^queries total=' "$DNS_LOG" || true)
    kill -USR1 "$DNS_PID" 2>/dev/null || { echo 0; return; }
    for ((i = 0; i < 50; i++)); do
        (( $(grep -c '^queries total=' "$DNS_LOG" || true) > before )) && break
        sleep 0.05
    done
    grep '^queries total=' "$DNS_LOG" | tail -1 | sed 's/^queries total=\([0-9]*\).*/\1/'
}

# CPU (utime + stime, all threads) of a process, in ms.
proc_cpu_ms() {
    [[ -n $1 && -r /proc/$1/stat ]] || { echo 0; return; }
    # the fields after the ")" of comm: utime and stime are the 12th and 13th
    sed 's/.*) //' "/proc/$1/stat" | awk -v t="$CLK_TCK" '{printf "%.0f", ($12 + $13) * 1000 / t}'
}

# opendkim, opendmarc and policyd-spf for postfix-milters (for the whole script).
milters_setup() {
    DKIM_PORT=$(free_port)
    DMARC_PORT=$(free_port)
    while [[ $DMARC_PORT == "$DKIM_PORT" ]]; do DMARC_PORT=$(free_port); done
    # Hosts whose mail the milters would sign or skip: not 127.0.0.1.
    echo 192.0.2.1 >"$AUTH/internal-hosts"
    # opendkim: libunbound, forwarding everything to the bench DNS server
    # (unbound answers test. itself, NXDOMAIN, unless told not to: RFC 6761).
    cat >"$AUTH/unbound.conf" <<EOF
server:
    do-not-query-localhost: no
    local-zone: "test." nodefault
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$DNS_PORT
EOF
    cat >"$AUTH/opendkim.conf" <<EOF
Mode                    v
Socket                  inet:$DKIM_PORT@127.0.0.1
UserID                  opendkim
Syslog                  no
AuthservID              mx.example.test
AlwaysAddARHeader       yes
InternalHosts           $AUTH/internal-hosts
ResolverConfiguration   $AUTH/unbound.conf
QueryCache              yes
EOF
    cat >"$AUTH/opendmarc.conf" <<EOF
Socket                  inet:$DMARC_PORT@127.0.0.1
UserID                  opendmarc
Syslog                  false
AuthservID              mx.example.test
TrustedAuthservIDs      mx.example.test
IgnoreHosts             $AUTH/internal-hosts
RejectFailures          true
SPFIgnoreResults        false
SPFSelfValidate         false
FailureReports          false
EOF
    # An LD_PRELOAD shim for both milters:
    # - opendmarc asks glibc's resolver (res_ninit + res_nquery), which only
    #   speaks to port 53 of the servers in /etc/resolv.conf: the shim sets
    #   the bench DNS server (address and port) after each res_ninit;
    # - opendkim 2.11.0~beta2 reads ResolverConfiguration with
    #   ub_ctx_config() from several threads at once, and unbound's config
    #   parser (flex) is not thread-safe: at 20 sessions it died within a
    #   second ("fatal flex scanner internal error", then SIGSEGV in
    #   memmove). The shim serializes ub_ctx_config() with a mutex.
    cat >"$AUTH/resolv-port.c" <<'EOF'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <resolv.h>
#include <stdlib.h>
#include <string.h>
struct ub_ctx;
int ub_ctx_config(struct ub_ctx *ctx, const char *fname) {
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static int (*real)(struct ub_ctx *, const char *);
    pthread_mutex_lock(&lock);
    if (!real) real = (int (*)(struct ub_ctx *, const char *))dlsym(RTLD_NEXT, "ub_ctx_config");
    int r = real(ctx, fname);
    pthread_mutex_unlock(&lock);
    return r;
}
int __res_ninit(res_state statp) {
    static int (*real)(res_state);
    if (!real) real = (int (*)(res_state))dlsym(RTLD_NEXT, "__res_ninit");
    int r = real(statp);
    const char *port = getenv("BENCH_DNS_PORT");
    if (r == 0 && port) {
        statp->nscount = 1;
        memset(&statp->nsaddr_list[0], 0, sizeof statp->nsaddr_list[0]);
        statp->nsaddr_list[0].sin_family = AF_INET;
        statp->nsaddr_list[0].sin_port = htons((unsigned short)atoi(port));
        statp->nsaddr_list[0].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    return r;
}
EOF
    cc -shared -fPIC -O2 -o "$AUTH/resolv-port.so" "$AUTH/resolv-port.c" -ldl -lpthread || die "could not build the resolver shim"
    # policyd-spf (python3-spf with pydns) pointed at the bench DNS server.
    cat >"$AUTH/policyd-spf-bench.py" <<'EOF'
import sys
port, conf = int(sys.argv[1]), sys.argv[2]
import spf  # noqa: E402  (it reads /etc/resolv.conf; overridden below)
try:
    import DNS
    DNS.defaults["server"] = ["127.0.0.1"]
    DNS.defaults["port"] = port
except ImportError:
    pass
try:
    import dns.resolver
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = port
    dns.resolver.default_resolver = r
except ImportError:
    pass
from spf_engine.policyd_spf import main
sys.argv = ["policyd-spf", conf]
sys.exit(main())
EOF
    cat >"$AUTH/policyd-spf.conf" <<EOF
debugLevel = 0
TestOnly = 1
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = 192.0.2.1/32
Header_Type = AR
Authserv_Id = mx.example.test
Hide_Receiver = Yes
EOF
    chmod 644 "$AUTH"/*
    env LD_PRELOAD="$AUTH/resolv-port.so" opendkim -f -x "$AUTH/opendkim.conf" >>"$WORK/opendkim.log" 2>&1 &
    DKIM_PID=$!
    env LD_PRELOAD="$AUTH/resolv-port.so" BENCH_DNS_PORT="$DNS_PORT" \
        opendmarc -f -c "$AUTH/opendmarc.conf" >>"$WORK/opendmarc.log" 2>&1 &
    DMARC_PID=$!
    wait_port "$DKIM_PORT" "$DKIM_PID" opendkim || { tail -5 "$WORK/opendkim.log" >&2; die "opendkim did not start"; }
    wait_port "$DMARC_PORT" "$DMARC_PID" opendmarc || { tail -5 "$WORK/opendmarc.log" >&2; die "opendmarc did not start"; }
    log "opendkim $(opendkim -V 2>&1 | sed -n 's/.*Filter v//p' | head -1) on 127.0.0.1:$DKIM_PORT (pid $DKIM_PID), opendmarc $(dpkg-query -W -f '${Version}' opendmarc 2>/dev/null) on 127.0.0.1:$DMARC_PORT (pid $DMARC_PID), policyd-spf $(dpkg-query -W -f '${Version}' postfix-policyd-spf-python 2>/dev/null) spawned by master"
}

# auth_summarize CSV EXTRA_CSV: the table of medians (BENCH_AUTH=on), with
# the milters' CPU and the DNS queries from EXTRA_CSV, and the ratios of
# mxguard-auth to each of the other servers.
auth_summarize() {
    python3 - "$@" <<'PYEOF'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["status"] == "ok"]
extra = {(r["server"], r["conc"], r["repeat"]): r for r in csv.DictReader(open(sys.argv[2]))} if rows else {}
order = ["postfix", "postfix-milters", "mxguard-plain", "mxguard-auth"]
def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def f(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"
out = ["Medians of successful runs (range in brackets). Server CPU is the server's process tree "
       "(Postfix: master and its children, policyd-spf included). The milters (opendkim + opendmarc) "
       "and the DNS server (bench_dns) are columns of their own, not in server CPU; the DNS server's CPU "
       "is kept out of other CPU %, the milters' is not (it is part of other CPU % in the postfix-milters rows).", "",
       "| sessions | server | runs | accepted msg/s | delivered msg/s | server CPU ms/msg | milters CPU ms/msg "
       "| DNS server CPU ms/msg | DNS queries/msg | peak PSS MiB | client CPU ms/msg | other CPU % | busy before % |",
       "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
meds = {}
for c in sorted({int(r["conc"]) for r in rows}):
    for s in [s for s in order if any(r["server"] == s for r in rows)]:
        sel = [r for r in rows if int(r["conc"]) == c and r["server"] == s]
        ex = [extra.get((s, r["conc"], r["repeat"]), {}) for r in sel]
        acc = [num(r["accepted_mps"]) for r in sel]
        dlv = [num(r["delivered_mps"]) for r in sel]
        n = [num(r["messages"]) for r in sel]
        milt = [(num(e.get("opendkim_cpu_ms")) or 0) + (num(e.get("opendmarc_cpu_ms")) or 0) for e in ex]
        m = {
            "acc": med(acc), "dlv": med(dlv), "cpu": med([num(r["server_cpu_ms_per_msg"]) for r in sel]),
            "milt": med([a / b for a, b in zip(milt, n) if b]) if s == "postfix-milters" else None,
            "dns": med([num(r.get("helper_cpu_ms_per_msg")) for r in sel]),
            "q": med([num(e.get("dns_queries")) / b for e, b in zip(ex, n) if e and b]),
            "pss": med([num(r["peak_pss_mib"]) for r in sel]),
            "client": med([num(r["client_cpu_ms_per_msg"]) for r in sel]),
            "other": med([num(r["other_cpu_pct"]) for r in sel]),
            "busy": med([num(r.get("busy_before_pct")) for r in sel]),
        }
        meds[(c, s)] = m
        rng = lambda xs: f" ({f(min(xs))}–{f(max(xs))})" if len(xs) > 1 else ""
        out.append(f"| {c} | {s} | {len(sel)} | {f(m['acc'])}{rng(acc)} | {f(m['dlv'])}{rng(dlv)} | {f(m['cpu'], 2)} | "
                   f"{f(m['milt'], 2) if m['milt'] is not None else ''} | {f(m['dns'], 3)} | {f(m['q'], 3)} | "
                   f"{f(m['pss'], 1)} | {f(m['client'], 2)} | {f(m['other'])} | {f(m['busy'])} |")
    a = meds.get((c, "mxguard-auth"))
    for s in ("postfix", "postfix-milters", "mxguard-plain"):
        b = meds.get((c, s))
        if not a or not b:
            continue
        r = lambda x, y: f"{x / y:.2f}x" if x is not None and y else "n/a"
        cpu_b = (b["cpu"] or 0) + (b["milt"] or 0)
        out.append(f"| {c} | **mxguard-auth / {s}** | | **{r(a['acc'], b['acc'])}** | **{r(a['dlv'], b['dlv'])}** | "
                   f"{r(a['cpu'], cpu_b)}{' (vs server + milters)' if b['milt'] is not None else ''} | | | | {r(a['pss'], b['pss'])} | | | |")
out.append("")
print("\n".join(out))
PYEOF
}

# auth_check SERVER MAILDIR N: every delivered message carries the results
# it must (see the Auth switch). Prints one line; returns 1 on failure.
auth_check() {
    python3 - "$@" <<'PYEOF'
import os, re, sys
server, maildir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = sorted(os.listdir(maildir))
bad, why = 0, {}
def header(name):
    with open(os.path.join(maildir, name), "rb") as fh:
        head = fh.read().split(b"\n\n", 1)[0].decode("utf-8", "replace").replace("\r", "")
    return re.sub(r"\n[ \t]+", " ", head).split("\n")
for name in files:
    fields = header(name)
    def values(h):
        return [f.split(":", 1)[1].strip() for f in fields if f.lower().startswith(h.lower() + ":")]
    ar = " ; ".join(v for v in values("Authentication-Results") if v.startswith("mx.example.test"))
    problems = []
    if server in ("mxguard-auth", "postfix-milters"):
        problems += [f"no {w} in Authentication-Results" for w in ("spf=pass", "dkim=pass", "dmarc=pass") if w not in ar]
    if server == "mxguard-auth":
        if values("X-Spam-Score") != ["0.5"]:
            problems.append(f"X-Spam-Score {values('X-Spam-Score')}")
        st = values("X-Spam-Status")
        if len(st) != 1 or not st[0].startswith("No, score=0.5") or "tests=SUBJ_FOR_REVIEW" not in st[0]:
            problems.append(f"X-Spam-Status {st}")
    elif server not in ("postfix-milters",) and ar:
        problems.append("Authentication-Results where no check was on")
    if problems:
        bad += 1
        for p in problems:
            why.setdefault(p, name)
sample = ""
if files:
    keep = [l for l in header(files[len(files) // 2])
            if l.split(":", 1)[0].lower() in ("authentication-results", "x-spam-score", "x-spam-status", "received-spf")]
    sample = " | ".join(re.sub(r"\s+", " ", l) for l in keep)
if len(files) != n or bad:
    print(f"FAILED: {len(files)} files (expected {n}), {bad} with problems: "
          + "; ".join(f"{r} (e.g. {f})" for r, f in list(why.items())[:5]) + (f"; e.g. {sample}" if sample else ""))
    sys.exit(1)
print(f"all {len(files)} delivered messages checked" + (f"; e.g. {sample}" if sample else ""))
PYEOF
}

# --------------------------------------------------------------- one run

# run_one SERVER CONC MESSAGES REPEAT(or "warmup")
run_one() {
    local server=$1 conc=$2 n=$3 rep=$4 root port maildir srvlog busy="" loglines=0
    local kind=${server%%-*}   # postfix | mxguard (BENCH_AUTH=on: postfix-milters, mxguard-auth, ...)
    local -a extra=()
    if [[ $BENCH_QUIET_WAIT != 0 ]]; then
        if ! busy=$(procstats quiet --max-busy "$BENCH_QUIET_MAX" --wait "$BENCH_QUIET_WAIT"); then
            log "warning: the machine is busy with other work (${busy}% CPU over 1 s after waiting ${BENCH_QUIET_WAIT}s); this run will be noisy"
        fi
    fi
    [[ $BENCH_WORK != relay ]] || sink_start "$server-$conc-$rep"
    if [[ $kind == postfix ]]; then
        [[ ! -f $PF_LOG ]] || loglines=$(wc -l <"$PF_LOG")
        PF_VARIANT="" PF_ETC=$PF/etc
        [[ $server != postfix-milters ]] || PF_VARIANT=milters PF_ETC=$PF_ETC_MILTERS
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
        MX_VARIANT=${server#mxguard-}
        mx_start
        root=$MX_PID port=$MX_PORT maildir=$MX_DATA/mail/example.test/u1/new srvlog=$MX_LOG
    fi
    extra+=(--label "limits=$BENCH_LIMITS")
    # The client: smtp-source's own message, or (BENCH_AUTH=on) the signed one.
    local -a client=(smtp-source -s "$conc" -l "$BENCH_SIZE" -m "$n" -f "$SENDER" -t "$RCPT" "127.0.0.1:$port")
    local dns0=0 dkim0=0 dmarc0=0
    if [[ $BENCH_AUTH == on ]]; then
        client=(smtp-source -s "$conc" -m "$n" -F "$AUTH_MSG" -f "$SENDER" -t "$RCPT" "127.0.0.1:$port")
        # the DNS server's CPU is the helper's (kept out of other CPU %)
        extra+=(--label "auth=$BENCH_AUTH" --helper-pid "$DNS_PID")
        dns0=$(dns_queries) dkim0=$(proc_cpu_ms "$DKIM_PID") dmarc0=$(proc_cpu_ms "$DMARC_PID")
    fi
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
        "${client[@]}" >>"$JSONL" &
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
    if [[ $BENCH_AUTH == on ]]; then
        # the milters' CPU and the DNS queries of this run, then every
        # delivered message's results (see the Auth switch)
        local dns1 dkim1 dmarc1 check
        dns1=$(dns_queries) dkim1=$(proc_cpu_ms "$DKIM_PID") dmarc1=$(proc_cpu_ms "$DMARC_PID")
        if [[ $rc -eq 0 ]]; then
            if check=$(auth_check "$server" "$maildir" "$n"); then
                log "$server conc=$conc repeat=$rep: $check"
            else
                log "$server conc=$conc repeat=$rep FAILED the authentication check: $check"
                rc=1
            fi
        fi
        log "$server conc=$conc repeat=$rep: $((dns1 - dns0)) DNS queries$([[ $server != postfix-milters ]] || echo ", opendkim $((dkim1 - dkim0)) ms CPU, opendmarc $((dmarc1 - dmarc0)) ms CPU")"
        if [[ $rep != warmup ]]; then
            [[ -s $EXTRA_CSV ]] || echo "server,conc,repeat,ok,dns_queries,opendkim_cpu_ms,opendmarc_cpu_ms" >"$EXTRA_CSV"
            local d=0 m=0
            [[ $server != postfix-milters ]] || d=$((dkim1 - dkim0)) m=$((dmarc1 - dmarc0))
            echo "$server,$conc,$rep,$([[ $rc -eq 0 ]] && echo 1 || echo 0),$((dns1 - dns0)),$d,$m" >>"$EXTRA_CSV"
        fi
    fi
    if [[ $kind == postfix ]]; then stop_postfix; else stop_mxguard; fi
    if [[ $kind == mxguard && $BENCH_LIMITS != off && $rc -eq 0 ]]; then
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
        if [[ $kind == postfix ]]; then
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
if [[ $BENCH_AUTH == on ]]; then
    auth_setup
    want postfix && SERVERS+=(postfix) && pf_write_config
    if want postfix && [[ $BENCH_AUTH_MILTERS == 1 ]]; then
        milters_setup
        pf_write_milters_config
        SERVERS+=(postfix-milters)
    fi
    want mxguard && SERVERS+=(mxguard-plain mxguard-auth)
else
    want postfix && SERVERS+=(postfix) && pf_write_config
    want mxguard && SERVERS+=(mxguard)
fi
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
    if [[ $BENCH_AUTH == on ]]; then
        echo "- work: smtp-source -s CONC -m $BENCH_MESSAGES -F message.txt -f $SENDER -t $RCPT (one DKIM-signed message of $(tr -d '\r' <"$AUTH_MSG" | sed 's/$/\r/' | wc -c) bytes with CRLF, sent $BENCH_MESSAGES times), CONC in ($BENCH_CONC), $BENCH_REPEATS repeats, interleaved, fresh server each run"
        echo "- auth work: bench_dns on 127.0.0.1:$DNS_PORT serves $AUTH_DOMAIN (SPF ip4:127.0.0.1 -all, DKIM rsa-2048 at $AUTH_SELECTOR._domainkey, _dmarc p=reject, MX/A, PTR of 127.0.0.1; TTL 3600); servers: ${SERVERS[*]}"
        echo "- mxguard-auth: [dns] nameservers = [\"127.0.0.1:$DNS_PORT\"], [verify] spf = dkim = \"score\", dmarc = \"enforce\", [scoring] tag_above 5 reject_above 10 headers, 21 [[filter]] rules (1 fires, 0.5); mxguard-plain: none of it"
        [[ $BENCH_AUTH_MILTERS != 1 ]] || ! want postfix ||
            echo "- postfix-milters: smtpd_milters = opendkim $(opendkim -V 2>&1 | sed -n 's/.*Filter v//p' | head -1) (Mode v, libunbound forwarding to bench_dns), opendmarc $(dpkg-query -W -f '${Version}' opendmarc 2>/dev/null) (RejectFailures, glibc resolver redirected by an LD_PRELOAD shim); check_policy_service policyd-spf $(dpkg-query -W -f '${Version}' postfix-policyd-spf-python 2>/dev/null) (spawn, pydns pointed at bench_dns)"
    else
        echo "- work: smtp-source -s CONC -l $BENCH_SIZE -m $BENCH_MESSAGES -f $SENDER -t $RCPT, CONC in ($BENCH_CONC), $BENCH_REPEATS repeats, interleaved, fresh server each run"
    fi
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

if [[ $BENCH_AUTH == on ]]; then
    auth_summarize "$CSV" "$EXTRA_CSV" >>"$SUMMARY"
    log "DNS server: $(grep '^queries total=' "$DNS_LOG" | tail -1)"
else
    procstats summarize "$CSV" >>"$SUMMARY"
fi
echo
cat "$SUMMARY"
echo
log "raw per-run numbers: $CSV (and $JSONL); this table: $SUMMARY"
[[ $FAILED -eq 0 ]] || { log "some runs failed (BENCH_KEEP_GOING=1): they are in the CSV, not in the table"; exit 1; }
