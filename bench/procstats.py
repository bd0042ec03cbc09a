#!/usr/bin/env python3
"""Measurement helper for bench/smtp-bench.sh (standard library only).

Subcommands
  run        run the load generator against a running server and measure it
             (one JSON object on stdout)
  tree       print the pids of a process tree, one per line
  snapshot   print pid:starttime of a process tree (for wait-gone)
  wait-gone  wait for snapshotted processes to exit, SIGKILL them after a timeout
  summarize  turn the raw CSV into the markdown table of medians
  free-port  print a free TCP port on 127.0.0.1
  quiet      wait until the machine's CPU is (nearly) idle

What `run` measures (see bench/README.md):
  accepted  - wall time from starting the load generator until it exits
  delivered - wall time from starting the load generator until the Nth file is
              in the Maildir's new/ (polled every 20 ms); with --sink-out
              (relay work), until smtp-sink's message counter reaches N
  CPU       - utime+stime+cutime+cstime summed over the server's process tree
              (root process plus all live descendants), after minus before.
              Children that exit during the run are reaped by their parent and
              show up in its cutime/cstime, so nothing is lost or double-counted.
  memory    - every 100 ms the sum of Pss and Rss (/proc/PID/smaps_rollup)
              over the process tree; the peak is reported.
"""

import argparse
import csv
import json
import os
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc access

def read_stat(pid):
    """Return (ppid, comm, cpu_ticks, sys_ticks) from /proc/PID/stat, or None
    if gone; cpu_ticks = utime+stime+cutime+cstime, sys_ticks = stime+cstime."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    lpar = data.index("(")
    rpar = data.rindex(")")
    comm = data[lpar + 1:rpar]
    rest = data[rpar + 2:].split()
    # rest[0] is field 3 (state); field n of proc(5) is rest[n - 3]
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return ppid, comm, utime + stime + cutime + cstime, stime + cstime


def all_procs():
    """{pid: (ppid, comm, ticks)} for every process on the machine."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                out[int(name)] = st
    return out


def tree(root, procs=None):
    """Pids of root and all its descendants."""
    if procs is None:
        procs = all_procs()
    children = {}
    for pid, (ppid, *_) in procs.items():
        children.setdefault(ppid, []).append(pid)
    if root not in procs:
        return []
    result, todo = [], [root]
    while todo:
        pid = todo.pop()
        result.append(pid)
        todo.extend(children.get(pid, ()))
    return result


def tree_cpu(root):
    """(total ticks, {comm: ticks}, sys ticks) of the tree. Retried until the set
    of pids is the same before and after reading them, so that a child reaped
    in between is neither lost nor counted twice (live and in cutime)."""
    for _ in range(50):
        pids = sorted(tree(root))
        by_comm, total, sys_total, gone = {}, 0, 0, False
        for pid in pids:
            st = read_stat(pid)
            if st is None:
                gone = True
                break
            total += st[2]
            sys_total += st[3]
            by_comm[st[1]] = by_comm.get(st[1], 0) + st[2]
        if not gone and pids and sorted(tree(root)) == pids:
            return total, by_comm, sys_total
        time.sleep(0.01)
    raise RuntimeError(f"could not read a stable CPU figure of process tree {root}")


def machine_cpu():
    """(busy, steal, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]                   # idle + iowait
    steal = v[7] if len(v) > 7 else 0
    total = sum(v[:8])
    return total - idle - steal, steal, total


def smaps_rollup(pid):
    """(pss_kb, rss_kb) of one process, or (0, 0) if it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith(b"Rss:"):
                    rss = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return pss, rss


def fast_tree(root):
    """Pids of root and its descendants via /proc/PID/task/TID/children
    (much cheaper than scanning all of /proc); falls back to tree()."""
    result, todo = [], [root]
    try:
        while todo:
            pid = todo.pop()
            result.append(pid)
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except FileNotFoundError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        todo.extend(int(c) for c in f.read().split())
                except FileNotFoundError:
                    pass
    except PermissionError:
        return tree(root)
    return result


def tree_mem(root):
    pss = rss = 0
    pids = fast_tree(root)
    for pid in pids:
        p, r = smaps_rollup(pid)
        pss += p
        rss += r
    return pss, rss, len(pids)


class MemSampler(threading.Thread):
    """Samples the tree's total PSS and RSS every `interval` seconds.

    Reading smaps_rollup is not free: the kernel walks every resident page to
    compute PSS, about 0.2 ms per 7 MB-RSS Postfix process here, so one sample
    of Postfix at 100 sessions (~200 processes) costs ~45 ms of CPU. Sampled
    every 100 ms that would eat a third of a core on a 2-core machine that is
    CPU-bound, and slow down the many-process server more than the
    one-process server. So the interval is stretched whenever needed to keep
    the sampler's CPU within `budget` (fraction of one CPU; 0 = always
    `interval`), and the thread runs at nice 10. A one-process server is
    sampled every 100 ms; Postfix at a few hundred ms during its plateau."""

    def __init__(self, root, interval, budget):
        super().__init__(daemon=True)
        self.root, self.interval, self.budget = root, interval, budget
        self.peak_pss = self.peak_rss = self.peak_procs = 0
        self.samples = 0
        self.max_gap = 0.0
        self.last_t = None
        self.stop_event = threading.Event()

    def sample(self):
        c0 = time.thread_time()
        pss, rss, n = tree_mem(self.root)
        now = time.monotonic()
        if self.last_t is not None:
            self.max_gap = max(self.max_gap, now - self.last_t)
        self.last_t = now
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_procs = max(self.peak_procs, n)
        self.samples += 1
        return time.thread_time() - c0

    def run(self):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass
        while not self.stop_event.is_set():
            cost = self.sample()
            delay = self.interval
            if self.budget > 0:
                delay = max(delay, cost / self.budget)
            self.stop_event.wait(max(0.0, delay - cost))

    def stop(self):
        self.stop_event.set()
        self.join()
        self.sample()


def count_files(directory):
    try:
        return sum(1 for name in os.listdir(directory) if not name.startswith("."))
    except FileNotFoundError:
        return 0


class DirCounter:
    """Counts the files in a directory (a Maildir's new/) cheaply: inotify
    events keep a set of names up to date, so no listing of thousands of
    entries every 20 ms. Until the directory exists, and if inotify is not
    available or overflows, it lists the directory instead."""

    IN_CREATE, IN_DELETE = 0x100, 0x200
    IN_MOVED_FROM, IN_MOVED_TO = 0x40, 0x80
    IN_Q_OVERFLOW, IN_IGNORED = 0x4000, 0x8000
    IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000

    def __init__(self, directory):
        self.dir = directory
        self.fd = None
        self.names = None
        self.buf = b""
        try:
            import ctypes
            self.libc = ctypes.CDLL(None, use_errno=True)
            self.libc.inotify_init1
        except (OSError, AttributeError):
            self.libc = None

    def _watch(self):
        if self.libc is None or not os.path.isdir(self.dir):
            return False
        fd = self.libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if fd < 0:
            self.libc = None
            return False
        mask = self.IN_CREATE | self.IN_DELETE | self.IN_MOVED_FROM | self.IN_MOVED_TO
        if self.libc.inotify_add_watch(fd, os.fsencode(self.dir), mask) < 0:
            os.close(fd)
            return False
        self.fd = fd
        # watch first, then list: nothing is missed, duplicates collapse in the set
        self.names = {n for n in os.listdir(self.dir) if not n.startswith(".")}
        return True

    def count(self):
        if self.fd is None and not self._watch():
            return count_files(self.dir)
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            off = 0
            while off + 16 <= len(data):
                wd, mask, cookie, ln = struct.unpack_from("iIII", data, off)
                name = data[off + 16:off + 16 + ln].rstrip(b"\0").decode("utf-8", "surrogateescape")
                off += 16 + ln
                if mask & (self.IN_Q_OVERFLOW | self.IN_IGNORED):
                    self.close()     # start again from a listing
                    return count_files(self.dir)
                if not name or name.startswith("."):
                    continue
                if mask & (self.IN_CREATE | self.IN_MOVED_TO):
                    self.names.add(name)
                elif mask & (self.IN_DELETE | self.IN_MOVED_FROM):
                    self.names.discard(name)
        return len(self.names)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None


def count_tree_files(directories):
    n = 0
    for d in directories:
        for _, _, files in os.walk(d):
            n += len(files)
    return n


class SinkCounter:
    """Follows the running counters of `smtp-sink -c`, written to a file as
    "sess=S quit=Q mesg=M\r" each time a session ends, a QUIT is executed or
    a "." is received. mesg counts the messages the sink has accepted; sess
    the sessions (connections) that have ended. Only the bytes appended since
    the last call are read."""

    PAT = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.tail = b""
        self.sess = self.quit = self.mesg = 0

    def read(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return self.mesg
        self.pos += len(data)
        data = self.tail + data
        cut = data.rfind(b"\r")
        if cut < 0:
            self.tail = data
            return self.mesg
        self.tail = data[cut + 1:]
        m = None
        for m in self.PAT.finditer(data[:cut]):
            pass
        if m:
            self.sess, self.quit, self.mesg = (int(x) for x in m.groups())
        return self.mesg


def open_connections(port):
    """Established TCP connections whose local end is 127.0.0.1:port (the
    accepted side of connections to a listener there)."""
    local = f"0100007F:{port:04X}"
    n = 0
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                v = line.split()
                if v[1] == local and v[3] == "01":
                    n += 1
    except FileNotFoundError:
        pass
    return n


# ---------------------------------------------------------------- subcommands

def cmd_run(a):
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        sys.exit("procstats run: no load command given")
    if read_stat(a.root_pid) is None:
        sys.exit(f"procstats run: server pid {a.root_pid} is not running")
    if (a.maildir is None) == (a.sink_out is None):
        sys.exit("procstats run: give exactly one of --maildir and --sink-out")
    sink = None
    if a.sink_out:
        sink = SinkCounter(a.sink_out)
        sink.read()
        if sink.mesg != 0:
            sys.exit(f"procstats run: the sink has already counted {sink.mesg} messages before the run")
        sess0, quit0 = sink.sess, sink.quit
        if a.sink_pid and read_stat(a.sink_pid) is None:
            sys.exit(f"procstats run: sink pid {a.sink_pid} is not running")
    elif count_files(a.maildir) != 0:
        sys.exit(f"procstats run: {a.maildir} is not empty before the run")

    cpu0, comm0, sys0 = tree_cpu(a.root_pid)
    sink_cpu0 = read_stat(a.sink_pid)[2] if a.sink_pid else 0
    if a.helper_pid and read_stat(a.helper_pid) is None:
        sys.exit(f"procstats run: helper pid {a.helper_pid} is not running")
    helper_cpu0 = read_stat(a.helper_pid)[2] if a.helper_pid else 0
    sampler = MemSampler(a.root_pid, a.mem_interval, a.mem_budget)
    sampler.sample()
    sampler.start()

    client_before = os.times()
    mach0 = machine_cpu()
    self_before = time.process_time()
    log = open(a.client_log, "ab") if a.client_log else subprocess.DEVNULL
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    exited = {}

    def on_signal(signum, _frame):      # interrupted: take the client with us
        if proc.poll() is None:
            proc.kill()
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def waiter():
        rc = proc.wait()
        exited["t"] = time.monotonic()
        exited["rc"] = rc

    wt = threading.Thread(target=waiter, daemon=True)
    wt.start()

    counter = DirCounter(a.maildir) if sink is None else None
    status = "ok"
    t_del = None
    count = 0
    deadline = t0 + a.timeout
    while True:
        now = time.monotonic()
        if t_del is None:
            count = counter.count() if sink is None else sink.read()
            if count >= a.messages:
                t_del = time.monotonic()
        if t_del is not None and "t" in exited:
            break
        if read_stat(a.root_pid) is None:
            status = "server-died"
            break
        if a.sink_pid and read_stat(a.sink_pid) is None:
            status = "sink-died"
            break
        if now > deadline:
            status = "timeout"
            break
        time.sleep(a.poll)

    if status != "ok":
        if proc.poll() is None:
            proc.kill()
        wt.join(5)

    # Let the server finish its bookkeeping (queue file removal, ...) so that
    # its cost is counted: wait until the given queue directories are empty,
    # then a short settle time.
    queue_left = 0
    if status == "ok" and a.queue_dir:
        qdeadline = time.monotonic() + 30
        while True:
            queue_left = count_tree_files(a.queue_dir)
            if queue_left == 0 or time.monotonic() > qdeadline:
                break
            time.sleep(0.05)
    time.sleep(a.settle)

    if counter is not None:
        counter.close()
    sampler.stop()
    cpu1, comm1, sys1 = tree_cpu(a.root_pid) if read_stat(a.root_pid) else (cpu0, comm0, sys0)
    st = read_stat(a.sink_pid) if a.sink_pid else None
    sink_cpu = (st[2] - sink_cpu0) / CLK_TCK if st else 0.0
    st = read_stat(a.helper_pid) if a.helper_pid else None
    helper_cpu = (st[2] - helper_cpu0) / CLK_TCK if st else 0.0
    client_after = os.times()
    mach1 = machine_cpu()
    self_cpu = time.process_time() - self_before
    if log is not subprocess.DEVNULL:
        log.close()

    if sink is None:
        final_count = count_files(a.maildir)
    else:
        final_count = sink.read()
        open_conns = open_connections(a.sink_port) if a.sink_port else 0
    if status == "ok" and final_count > a.messages and sink is not None:
        status = "duplicates"
    elif status == "ok" and final_count != a.messages:
        status = f"count-mismatch"
    if status == "ok" and exited.get("rc") != 0:
        status = "client-failed"
    if status == "ok" and queue_left:
        status = "queue-not-empty"

    n = a.messages
    acc_s = exited["t"] - t0 if "t" in exited else None
    del_s = t_del - t0 if t_del is not None else None
    client_cpu = ((client_after.children_user - client_before.children_user)
                  + (client_after.children_system - client_before.children_system))
    cpu_ms = (cpu1 - cpu0) * 1000.0 / CLK_TCK
    breakdown = {}
    for comm in set(comm0) | set(comm1):
        d = comm1.get(comm, 0) - comm0.get(comm, 0)
        if d:
            breakdown[comm] = round(d * 1000.0 / CLK_TCK / n, 3)
    result = {
        "status": status,
        "messages": n,
        "delivered_count": final_count,
        "client_rc": exited.get("rc"),
        "accepted_s": round(acc_s, 4) if acc_s is not None else None,
        "delivered_s": round(del_s, 4) if del_s is not None else None,
        "accepted_mps": round(n / acc_s, 1) if acc_s else None,
        "delivered_mps": round(n / del_s, 1) if del_s else None,
        "server_cpu_ms_per_msg": round(cpu_ms / n, 3),
        "server_sys_ms_per_msg": round((sys1 - sys0) * 1000.0 / CLK_TCK / n, 3),
        "client_cpu_ms_per_msg": round(client_cpu * 1000.0 / n, 3),
        "peak_pss_mib": round(sampler.peak_pss / 1024.0, 1),
        "peak_rss_mib": round(sampler.peak_rss / 1024.0, 1),
        "peak_procs": sampler.peak_procs,
        "mem_samples": sampler.samples,
        "mem_max_gap_s": round(sampler.max_gap, 3),
        "queue_left": queue_left,
        # whole machine during the run, % of all CPUs: busy (user+sys+irq...) and stolen by the host
        "machine_busy_pct": round(100.0 * (mach1[0] - mach0[0]) / max(1, mach1[2] - mach0[2]), 1),
        "machine_steal_pct": round(100.0 * (mach1[1] - mach0[1]) / max(1, mach1[2] - mach0[2]), 1),
        # busy CPU not accounted to the server, the client or this monitor:
        # other work on the machine (e.g. a build) plus kernel threads
        # (writeback, journal, softirq) working for us. A high value = noisy run.
        "other_cpu_pct": round(100.0 * ((mach1[0] - mach0[0]) / CLK_TCK - cpu_ms / 1000.0 - client_cpu - self_cpu - sink_cpu - helper_cpu)
                               / max(1e-9, (mach1[2] - mach0[2]) / CLK_TCK), 1),
        # CPU this measuring process used (polling + memory sampling)
        "monitor_cpu_ms_per_msg": round(self_cpu * 1000.0 / n, 3),
        # CPU ms/msg by process name, counting each process's own and reaped
        # children's time (Postfix: short-lived children land in "master").
        "cpu_by_comm": breakdown,
    }
    # A process the server needs (redis-server for [store] backend = "redis").
    # Always a column (empty without a helper), so that rows of both servers
    # in one CSV have the same columns.
    result["helper_cpu_ms_per_msg"] = round(helper_cpu * 1000.0 / n, 3) if a.helper_pid else None
    if sink is not None:
        # relay work: what the smtp-sink saw. connections = sessions ended
        # during the run + connections still open at the end (idle ones a
        # server keeps for reuse); duplicates = messages beyond N.
        result.update({
            "sink_messages": final_count,
            "duplicates": max(0, final_count - n),
            "sink_connections": sink.sess - sess0 + open_conns,
            "sink_open_at_end": open_conns,
            "sink_quits": sink.quit - quit0,
            "msgs_per_connection": round(final_count / max(1, sink.sess - sess0 + open_conns), 2),
            "sink_cpu_ms_per_msg": round(sink_cpu * 1000.0 / n, 3),
        })
        cpu_by_comm = result.pop("cpu_by_comm")
        result["cpu_by_comm"] = cpu_by_comm
    labels = dict(kv.split("=", 1) for kv in a.label)
    if a.csv:
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **labels}
        row.update({k: v for k, v in result.items() if k != "cpu_by_comm"})
        row["cpu_by_comm"] = json.dumps(breakdown, sort_keys=True)
        new = not os.path.exists(a.csv) or os.path.getsize(a.csv) == 0
        with open(a.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
    print(json.dumps({**labels, **result}))
    tag = " ".join(f"{k}={v}" for k, v in labels.items())
    print(f"  {tag}: {status}; accepted {fmt(result['accepted_mps'], 0)} msg/s, "
          f"delivered {fmt(result['delivered_mps'], 0)} msg/s, "
          f"server CPU {result['server_cpu_ms_per_msg']:.2f} ms/msg, "
          f"client CPU {result['client_cpu_ms_per_msg']:.2f} ms/msg, "
          f"peak PSS {result['peak_pss_mib']:.1f} MiB, RSS {result['peak_rss_mib']:.1f} MiB, "
          f"{sampler.peak_procs} procs, {final_count}/{n} "
          + ("delivered" if sink is None else
             f"at the sink over {result['sink_connections']} connections, sink CPU {result['sink_cpu_ms_per_msg']:.2f} ms/msg"),
          file=sys.stderr)
    return 0 if status == "ok" else 1


def cmd_quiet(a):
    """Wait (up to --wait s) until the machine's CPU is below --max-busy %
    over a 1 s window; print the last busy %. Exit 1 if it never got quiet."""
    deadline = time.monotonic() + a.wait
    while True:
        m0 = machine_cpu()
        time.sleep(1.0)
        m1 = machine_cpu()
        busy = 100.0 * (m1[0] - m0[0]) / max(1, m1[2] - m0[2])
        if busy <= a.max_busy or time.monotonic() >= deadline:
            break
    print(f"{busy:.0f}")
    return 0 if busy <= a.max_busy else 1


def cmd_tree(a):
    for pid in tree(a.root_pid):
        print(pid)


def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(")") + 2:].split()
    if rest[0] in ("Z", "X"):       # zombie: finished, only waiting to be reaped
        return None
    return rest[19]                 # field 22, starttime


def cmd_snapshot(a):
    """pid:starttime of every process in the tree, for wait-gone."""
    print(" ".join(f"{pid}:{start_time(pid)}" for pid in tree(a.root_pid)
                   if start_time(pid) is not None))


def cmd_wait_gone(a):
    """Wait until the snapshotted processes have exited; after --timeout send
    SIGKILL to those still alive (same pid *and* start time, so a recycled pid
    is never hit) and wait again."""
    procs = []
    for tok in a.tokens:
        pid, st = tok.split(":")
        procs.append((int(pid), st))

    def alive():
        return [(p, s) for p, s in procs if start_time(p) == s]

    deadline = time.monotonic() + a.timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = alive()
    if left:
        print(f"procstats: {len(left)} process(es) still alive after {a.timeout}s, sending SIGKILL: "
              + " ".join(str(p) for p, _ in left), file=sys.stderr)
        for p, _ in left:
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return 1 if alive() else 0
    return 0


def cmd_free_port(a):
    """A free port in [lo, hi), outside the kernel's ephemeral range so that
    client connections can never take it, and never 25/53/5353."""
    forbidden = {25, 53, 5353}
    for _ in range(1000):
        port = random.randrange(a.lo, a.hi)
        if port in forbidden:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        print(port)
        return 0
    sys.exit("no free port found")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1):
    if x is None:
        return "n/a"
    if round(x, digits) == 0:
        x = 0.0                      # no "-0"
    return f"{x:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def cmd_summarize(a):
    with open(a.csv) as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    relay = bool(rows) and "sink_messages" in rows[0]
    fields = [("accepted_mps", 0), ("delivered_mps", 0),
              ("server_cpu_ms_per_msg", 2), ("peak_pss_mib", 1),
              ("peak_rss_mib", 1)]
    if relay:
        # relay work: also the system part of the server's CPU and the
        # number of connections the sink saw
        fields.insert(3, ("server_sys_ms_per_msg", 2))
        fields.append(("sink_connections", 0))
    concs = sorted({int(r["conc"]) for r in rows})
    servers = [s for s in ("postfix", "mxguard") if any(r["server"] == s for r in rows)]
    med = {}
    for c in concs:
        for s in servers:
            sel = [r for r in rows if int(r["conc"]) == c and r["server"] == s]
            med[(c, s)] = {k: median([float(r[k]) for r in sel if r[k] not in ("", "None")])
                           for k, _ in fields}
            med[(c, s)]["n"] = len(sel)
            med[(c, s)]["client"] = median([float(r["client_cpu_ms_per_msg"]) for r in sel])
            med[(c, s)]["other"] = median([float(r["other_cpu_pct"]) for r in sel if r.get("other_cpu_pct")])
            if relay:
                med[(c, s)]["sink"] = median([float(r["sink_cpu_ms_per_msg"]) for r in sel])
            med[(c, s)]["helper"] = median([float(r["helper_cpu_ms_per_msg"]) for r in sel
                                            if r.get("helper_cpu_ms_per_msg") not in (None, "", "None")])
    helper = any(m["helper"] is not None for m in med.values())
    if helper:
        # the helper (redis-server) is part of the server's cost: its own column
        fields.insert(fields.index(("server_cpu_ms_per_msg", 2)) + 1, ("helper_cpu_ms_per_msg", 2))
        for (c, s), m in med.items():
            m["helper_cpu_ms_per_msg"] = m["helper"]
    out = []
    out.append(f"Medians of successful runs; {a.title}" if a.title else "Medians of successful runs")
    out.append("")
    if relay:
        out.append("| sessions | server | runs | accepted msg/s | relayed msg/s | server CPU ms/msg | of which system | "
                   "peak PSS MiB | peak RSS MiB | connections to the sink | client CPU ms/msg | sink CPU ms/msg | other CPU % |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    else:
        out.append("| sessions | server | runs | accepted msg/s | delivered msg/s | server CPU ms/msg | "
                   + ("redis-server CPU ms/msg | " if helper else "")
                   + "peak PSS MiB | peak RSS MiB | client CPU ms/msg | other CPU % |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if helper else ""))
    tail_cols = 3 if relay else 2
    for c in concs:
        for s in servers:
            m = med[(c, s)]
            out.append(f"| {c} | {s} | {m['n']} | " + " | ".join(fmt(m[k], d) for k, d in fields)
                       + f" | {fmt(m['client'], 2)}"
                       + (f" | {fmt(m['sink'], 2)}" if relay else "")
                       + f" | {fmt(m['other'], 0)} |")
        if len(servers) == 2:
            mx, pf = med[(c, "mxguard")], med[(c, "postfix")]
            out.append(f"| {c} | **mxguard/Postfix** | | "
                       + " | ".join(fmt(ratio(mx[k], pf[k]), 2) + "x" if ratio(mx[k], pf[k]) is not None else "n/a"
                                    for k, _ in fields) + " |" + " |" * tail_cols)
    if len(servers) == 2:
        out.append("")
        out.append("Ratios: throughput above 1x means mxguard is faster; CPU and memory below 1x mean mxguard uses less.")
    if relay:
        out.append("")
        out.append("relayed msg/s: until the sink (smtp-sink) had counted every message. connections to the sink: "
                   "sessions the sink saw end during the run plus those still open at its end.")
    out.append("")
    if helper:
        out.append("redis-server CPU ms/msg: the CPU of the Redis server that holds mxguard's counters "
                   "([store] backend = \"redis\"); not in server CPU, and kept out of other CPU %.")
        out.append("")
    out.append("other CPU %: machine CPU busy during the run not accounted to the server, the client"
               + (", the sink" if relay else "") + (", redis-server" if helper else "") + " or the monitor "
               "(kernel threads working for the run, plus any other work on the machine); if it is high, the run was noisy.")
    print("\n".join(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="sub", required=True)

    r = sub.add_parser("run")
    r.add_argument("--root-pid", type=int, required=True)
    r.add_argument("--maildir", help="the new/ directory to count (local work)")
    r.add_argument("--sink-out", help="the stdout file of `smtp-sink -c` whose mesg= counter to follow (relay work)")
    r.add_argument("--sink-pid", type=int, help="smtp-sink's pid: its CPU is reported and kept out of other CPU %%")
    r.add_argument("--sink-port", type=int, help="smtp-sink's port on 127.0.0.1: connections still open at the end are counted")
    r.add_argument("--helper-pid", type=int,
                   help="a process the server uses (redis-server): its CPU is reported (helper_cpu_ms_per_msg) and kept out of other CPU %%")
    r.add_argument("--messages", type=int, required=True)
    r.add_argument("--timeout", type=float, required=True, help="seconds from start until delivery must be complete")
    r.add_argument("--queue-dir", action="append", default=[], help="must be empty before CPU is read (repeatable)")
    r.add_argument("--settle", type=float, default=0.5)
    r.add_argument("--poll", type=float, default=0.02)
    r.add_argument("--mem-interval", type=float, default=0.1, help="seconds between memory samples (at least)")
    r.add_argument("--mem-budget", type=float, default=0.03,
                   help="max fraction of one CPU for memory sampling; the interval stretches to stay within it (0: no limit)")
    r.add_argument("--client-log")
    r.add_argument("--csv", help="append the result as a row to this CSV file")
    r.add_argument("--label", action="append", default=[], help="KEY=VALUE column added to the CSV row (repeatable)")

    r.add_argument("cmd", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("tree")
    t.add_argument("root_pid", type=int)
    t.set_defaults(func=cmd_tree)

    qu = sub.add_parser("quiet")
    qu.add_argument("--max-busy", type=float, default=15)
    qu.add_argument("--wait", type=float, default=30)
    qu.set_defaults(func=cmd_quiet)

    sn = sub.add_parser("snapshot")
    sn.add_argument("root_pid", type=int)
    sn.set_defaults(func=cmd_snapshot)

    wg = sub.add_parser("wait-gone")
    wg.add_argument("--timeout", type=float, default=10)
    wg.add_argument("tokens", nargs="*")
    wg.set_defaults(func=cmd_wait_gone)

    fp = sub.add_parser("free-port")
    fp.add_argument("--lo", type=int, default=20000)
    fp.add_argument("--hi", type=int, default=30000)
    fp.set_defaults(func=cmd_free_port)

    s = sub.add_parser("summarize")
    s.add_argument("csv")
    s.add_argument("--title")
    s.set_defaults(func=cmd_summarize)

    a = p.parse_args()
    sys.exit(a.func(a) or 0)


if __name__ == "__main__":
    main()
