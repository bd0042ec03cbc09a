#!/usr/bin/env python3
"""tarpit-bench.py - helpers of bench/tarpit-bench.sh (many tarpitted sessions held at once).

Subcommands:
  client     the load: N SMTP sessions from one asyncio process, spread over
             source addresses (bind before connect). Each session reads the
             banner, says EHLO, MAIL FROM, RCPT TO (answered at once), then
             sends a second RCPT TO, whose reply the server delays. When every
             session has sent its second RCPT it prints an "established" JSON
             line, then waits for a command on stdin:
               close  - close every connection at once (replies not awaited)
               wait   - wait for every delayed reply, then QUIT and close
             and prints a "done" JSON line (replies seen before the command,
             reply delays, errors).
  measure    runs `client` against a running server and measures the server
             (its process tree): memory and threads before, while the
             sessions are held, and after they are gone; CPU while
             establishing and while holding; then checks that a fresh
             session still gets its banner and EHLO reply quickly. Appends a
             CSV row and prints it as JSON.
  summarize  markdown table (median and range per server and session count)
             of one or more CSV files.

Standard library only. Uses bench/procstats.py for /proc reading.
"""

import argparse
import asyncio
import csv
import ipaddress
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True             # no bench/__pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procstats  # noqa: E402


# ---------------------------------------------------------------- /proc helpers

def threads_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def tree_threads(root):
    """(threads, processes) of a process tree."""
    pids = procstats.fast_tree(root)
    return sum(threads_of(p) for p in pids), len(pids)


def tcp_states(port):
    """{state: count} of the TCP sockets whose local port is `port` (the
    server side of its connections, and its listener)."""
    want = f":{port:04X}"
    out = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    v = line.split(None, 4)
                    if v[1].endswith(want):
                        out[v[3]] = out.get(v[3], 0) + 1
        except FileNotFoundError:
            pass
    return out


TCP_ESTABLISHED, TCP_TIME_WAIT, TCP_LISTEN = "01", "06", "0A"


KERNEL_FIELDS = ("Slab", "PageTables", "KernelStack")


def kernel_mem_kib():
    """{field: kB} of /proc/meminfo for the kernel's own memory: Slab (socket
    structures, epoll items, file, inode and task objects of both ends of
    every connection), PageTables and KernelStack (per process / thread).
    Machine-wide, so other work moves them too."""
    out = dict.fromkeys(KERNEL_FIELDS, 0)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in out:
                    out[k] = int(v.split()[0])
    except (FileNotFoundError, ValueError):
        pass
    return out


def rss_by_mapping(pid):
    """RSS (kB) of one process split by kind of mapping: the brk heap (glibc's
    main malloc arena), other anonymous mappings (glibc's per-thread arenas,
    thread stacks, large mmap'd blocks) and file-backed mappings (code)."""
    out = {"heap": 0, "anon": 0, "file": 0}
    kind = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):
                    v = line.split()
                    name = v[5] if len(v) > 5 else ""
                    kind = "heap" if name == "[heap]" else ("file" if name.startswith("/") else "anon")
                elif first == "Rss:" and kind:
                    out[kind] += int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def source_addresses(spec):
    """'127.0.0.2-127.0.0.41' -> the list of addresses."""
    if "-" in spec:
        lo, hi = (ipaddress.ip_address(x) for x in spec.split("-"))
        return [str(ipaddress.ip_address(i)) for i in range(int(lo), int(hi) + 1)]
    return [spec]


# ---------------------------------------------------------------- client

async def read_reply(reader):
    """One SMTP reply (possibly multi-line): (code, first line)."""
    first = None
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed" + (f" after {first!r}" if first else ""))
        if first is None:
            first = line
        if len(line) < 4 or line[3:4] != b"-":
            text = first.decode("ascii", "replace").rstrip()
            return text[:3], text


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def client_main(a):
    sources = source_addresses(a.sources)
    n = a.sessions
    sem = asyncio.Semaphore(a.inflight)
    loop = asyncio.get_running_loop()
    all_in = asyncio.Event()
    state = {"ok": 0, "failed": 0}
    errors = {}
    conns = []                      # (reader, writer, sent_at)
    replies = []                    # (seconds after the 2nd RCPT, code, before_command)
    phase = {"command": None}
    first_sent = [None]
    last_sent = [None]
    t_start = time.monotonic()

    def fail(e):
        k = f"{type(e).__name__}: {e}"[:160]
        errors[k] = errors.get(k, 0) + 1
        state["failed"] += 1
        if state["ok"] + state["failed"] == n:
            all_in.set()

    async def expect(reader, want, what):
        code, text = await asyncio.wait_for(read_reply(reader), a.timeout)
        if code != want:
            raise RuntimeError(f"{what}: {text}")

    async def session(i):
        src = sources[i % len(sources)]
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(a.host, a.port, local_addr=(src, 0)), a.timeout)
            except Exception as e:          # noqa: BLE001
                fail(e)
                return
            try:
                await expect(reader, "220", "banner")
                writer.write(f"EHLO c{i}.client.test\r\n".encode())
                await expect(reader, "250", "EHLO")
                writer.write(f"MAIL FROM:<{a.sender}>\r\n".encode())
                await expect(reader, "250", "MAIL FROM")
                writer.write(f"RCPT TO:<{a.rcpt}>\r\n".encode())
                await expect(reader, "250", "first RCPT TO")
                writer.write(f"RCPT TO:<{a.rcpt2 or a.rcpt}>\r\n".encode())
                await asyncio.wait_for(writer.drain(), a.timeout)
            except Exception as e:          # noqa: BLE001
                writer.close()
                fail(e)
                return
        sent = time.monotonic()
        first_sent[0] = sent if first_sent[0] is None else first_sent[0]
        last_sent[0] = sent
        conns.append((reader, writer, sent))
        state["ok"] += 1
        if state["ok"] + state["failed"] == n:
            all_in.set()
        try:
            code, _ = await read_reply(reader)
            replies.append((time.monotonic() - sent, code, phase["command"] is None))
        except (ConnectionError, OSError) as e:
            replies.append((time.monotonic() - sent, "closed", phase["command"] is None))
            if phase["command"] is None:
                k = f"closed before the reply: {type(e).__name__}: {e}"[:160]
                errors[k] = errors.get(k, 0) + 1

    tasks = [asyncio.create_task(session(i)) for i in range(n)]
    try:
        await asyncio.wait_for(all_in.wait(), a.establish_timeout)
    except asyncio.TimeoutError:
        pass
    established = state["ok"]
    est = {
        "event": "established",
        "sessions": n,
        "established": established,
        "failed": state["failed"] + (n - state["ok"] - state["failed"]),
        "error_kinds": dict(errors),
        "t_start": t_start,
        "first_rcpt2": first_sent[0],
        "last_rcpt2": last_sent[0],
        "establish_s": round((last_sent[0] or time.monotonic()) - t_start, 3),
        "replies_so_far": len(replies),
        "client_cpu_s": round(time.process_time(), 3),
        "client_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    emit(est)

    # The command (from the driver), read without blocking the loop.
    fut = loop.create_future()

    def on_stdin():
        line = sys.stdin.readline()
        if not fut.done():
            fut.set_result(line.strip() or "close")

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        cmd = await asyncio.wait_for(fut, a.max_hold)
    except asyncio.TimeoutError:
        cmd = "close"
    loop.remove_reader(sys.stdin.fileno())
    before_command = len(replies)
    early = [r for r in replies if r[2]]
    phase["command"] = cmd
    t_cmd = time.monotonic()

    if cmd == "wait":
        # every held session gets its reply, then QUIT
        deadline = a.delay + 30
        pending = [t for t in tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=deadline)
        for _, writer, _ in conns:
            try:
                writer.write(b"QUIT\r\n")
            except (ConnectionError, OSError, RuntimeError):
                pass
    for t in tasks:
        if not t.done():
            t.cancel()
    for _, writer, _ in conns:
        try:
            writer.close()
        except (ConnectionError, OSError, RuntimeError):
            pass
    await asyncio.gather(*tasks, return_exceptions=True)
    delays = sorted(r[0] for r in replies if r[1] not in ("closed",))
    codes = {}
    for r in replies:
        codes[r[1]] = codes.get(r[1], 0) + 1
    q = (lambda p: round(delays[min(len(delays) - 1, int(p * len(delays)))], 3)) if delays else (lambda p: None)
    emit({
        "event": "done",
        "command": cmd,
        "replies_before_command": before_command,
        "early_replies": len(early),
        "early_reply_min_s": round(min(r[0] for r in early), 3) if early else None,
        "replies": len(replies),
        "reply_codes": codes,
        "reply_delay_min_s": q(0), "reply_delay_p50_s": q(0.5), "reply_delay_max_s": q(1.0),
        "close_s": round(time.monotonic() - t_cmd, 3),
        "error_kinds": errors,
        "client_cpu_s": round(time.process_time(), 3),
        "client_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    })


def cmd_client(a):
    asyncio.run(client_main(a))


# ---------------------------------------------------------------- probe

def smtp_probe(port, timeout=10.0, host="127.0.0.1"):
    """A fresh session: connect, banner, EHLO, QUIT. Returns (ms to the end
    of the EHLO reply, error or None)."""
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            f = s.makefile("rb")

            def reply():
                while True:
                    line = f.readline()
                    if not line:
                        raise ConnectionError("closed")
                    if len(line) < 4 or line[3:4] != b"-":
                        return line[:3].decode()

            if (c := reply()) != "220":
                return None, f"banner {c}"
            s.sendall(b"EHLO probe.client.test\r\n")
            if (c := reply()) != "250":
                return None, f"EHLO {c}"
            ms = (time.monotonic() - t0) * 1000
            s.sendall(b"QUIT\r\n")
            reply()
            return round(ms, 1), None
    except (OSError, ConnectionError) as e:
        return None, f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- measure

def mem_now(pid):
    """Memory, threads and processes of the tree, and (count, PSS KiB) by
    process name."""
    pss = rss = threads = 0
    by_comm = {}
    pids = procstats.fast_tree(pid)
    for p in pids:
        ps, rs = procstats.smaps_rollup(p)
        st = procstats.read_stat(p)
        comm = st[1] if st else "?"
        pss += ps
        rss += rs
        threads += threads_of(p)
        c = by_comm.setdefault(comm, [0, 0])
        c[0] += 1
        c[1] += ps
    return {"pss_kib": pss, "rss_kib": rss, "procs": len(pids), "threads": threads, "by_comm": by_comm}


class Reader(threading.Thread):
    """Collects the client's JSON lines."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.events = stream, {}
        self.cond = threading.Condition()

    def run(self):
        for line in self.stream:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events[ev.get("event")] = ev
                self.cond.notify_all()
        with self.cond:
            self.events.setdefault("eof", {})
            self.cond.notify_all()

    def wait_for(self, name, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while name not in self.events and "eof" not in self.events:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return self.events.get(name)


def log_matches(path, offset, needle):
    if not path:
        return None
    n = 0
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            for line in f:
                if needle in line:
                    n += 1
    except FileNotFoundError:
        return None
    return n


def cmd_measure(a):
    pid, port, n = a.server_pid, a.port, a.sessions
    tick = 1.0 / procstats.CLK_TCK
    status = "ok"
    notes = []
    log_off = os.path.getsize(a.server_log) if a.server_log and os.path.exists(a.server_log) else 0

    # warm: one session first (lazy initialisation), then the baseline
    warm_ms, err = smtp_probe(port)
    if err:
        sys.exit(f"measure: the server does not answer a probe before the run: {err}")
    time.sleep(0.5)
    base = mem_now(pid)
    kmem0 = kernel_mem_kib()
    cpu0 = procstats.tree_cpu(pid)[0]
    mach0 = procstats.machine_cpu()
    sampler = procstats.MemSampler(pid, 0.1, a.mem_budget)
    sampler.sample()
    sampler.start()

    cmd = [sys.executable, os.path.abspath(__file__), "client", "--port", str(port),
           "--sessions", str(n), "--sources", a.sources, "--inflight", str(a.inflight),
           "--rcpt", a.rcpt, "--delay", str(a.delay),
           "--establish-timeout", str(a.establish_timeout), "--max-hold", str(a.delay + 120)]
    if a.rcpt2:
        cmd += ["--rcpt2", a.rcpt2]
    t_launch = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rd = Reader(proc.stdout)
    rd.start()
    try:
        est = rd.wait_for("established", a.establish_timeout + 15)
        if est is None:
            status = "client-failed"
            raise RuntimeError("the client never reported its sessions established")
        cpu_est = procstats.tree_cpu(pid)[0]
        server_est = tcp_states(port).get(TCP_ESTABLISHED, 0)
        if est["established"] != n:
            status = "not-all-established"
            notes.append(f"{est['established']}/{n} established; errors {est['error_kinds']}")

        # Hold: sample now, wait, sample again; the window must end before
        # the first delayed reply can come (first 2nd RCPT + delay).
        h0 = time.monotonic()
        hcpu0 = procstats.tree_cpu(pid)[0]
        hold1 = mem_now(pid)
        hold_end = h0 + a.hold
        latest = (est["first_rcpt2"] or h0) + a.delay - 3
        if hold_end > latest:
            notes.append(f"hold window cut to {max(0, latest - h0):.1f}s (establishing took {est['establish_s']}s)")
            hold_end = latest
        while time.monotonic() < hold_end:
            time.sleep(min(0.2, max(0, hold_end - time.monotonic())))
        hcpu1 = procstats.tree_cpu(pid)[0]
        h1 = time.monotonic()
        hold2 = mem_now(pid)
        # a one-process server: where its RSS is (heap / other anonymous / files)
        by_map = rss_by_mapping(pid) if hold2["procs"] == 1 else None
        kmem_hold = kernel_mem_kib()
        m_hold = procstats.machine_cpu()

        # Then: close everything (or wait for the replies).
        t_close = time.monotonic()
        proc.stdin.write(("wait" if a.then == "wait" else "close") + "\n")
        proc.stdin.flush()
        done = rd.wait_for("done", (a.delay + 60) if a.then == "wait" else 60)
        if done is None:
            status = "client-failed"
            raise RuntimeError("the client did not finish")
        if done["early_replies"]:
            status = "early-replies"
            notes.append(f"{done['early_replies']} replies to the 2nd RCPT came before the end of the hold "
                         f"(first after {done['early_reply_min_s']}s)")
        if a.then == "wait" and (done["replies"] != n or set(done["reply_codes"]) != {"250"}):
            status = "bad-replies"
            notes.append(f"replies {done['reply_codes']}")
        proc.wait(timeout=30)

        # A fresh session at once, while the server may still hold the
        # closed sessions (it only notices when it answers them).
        probe_ms, perr = [], None
        for _ in range(3):
            ms, perr = smtp_probe(port)
            if perr:
                break
            probe_ms.append(ms)
        if perr:
            status = "unhealthy"
            notes.append(f"probe after close: {perr}")
        after_close = mem_now(pid)

        # Until the server has let go of every session (CLOSE_WAIT & co).
        rel_deadline = time.monotonic() + a.release_timeout
        while True:
            st = tcp_states(port)
            # TIME_WAIT: the probes' (the server closes first after QUIT)
            left = sum(v for k, v in st.items() if k not in (TCP_LISTEN, TCP_TIME_WAIT))
            if left == 0 or time.monotonic() > rel_deadline:
                break
            time.sleep(0.5)
        release_s = round(time.monotonic() - t_close, 1)
        if left:
            notes.append(f"{left} server sockets still open {a.release_timeout}s after the close: {st}")
        time.sleep(1.0)
        released = mem_now(pid)
        probe2, perr2 = smtp_probe(port)
        if perr2:
            status = "unhealthy"
            notes.append(f"probe after release: {perr2}")
    except RuntimeError as e:
        notes.append(str(e))
        if status == "ok":
            status = "failed"
        if proc.poll() is None:
            proc.kill()
        sampler.stop()
        print(json.dumps({"status": status, "notes": notes}))
        print(f"  {a.server} {n} sessions: {status}: {'; '.join(notes)}", file=sys.stderr)
        return 1
    sampler.stop()
    cpu_end = procstats.tree_cpu(pid)[0]
    alive = procstats.read_stat(pid) is not None
    if not alive:
        status = "server-died"
    mach1 = procstats.machine_cpu()
    del mach1, m_hold

    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    hold_mem = {k: max(hold1[k], hold2[k]) for k in hold1 if k != "by_comm"}
    dn = max(1, est["established"])
    row = {
        "server": a.server, "sessions": n, "established": est["established"],
        "status": status,
        "establish_s": est["establish_s"],
        "establish_server_cpu_ms": round((cpu_est - cpu0) * tick * 1000),
        "establish_server_cpu_us_per_session": round((cpu_est - cpu0) * tick * 1e6 / dn, 1),
        "server_established_sockets": server_est,
        "hold_s": round(h1 - h0, 1),
        "hold_server_cpu_pct": round(100 * (hcpu1 - hcpu0) * tick / max(1e-9, h1 - h0), 2),
        "base_rss_mib": round(base["rss_kib"] / 1024, 1),
        "base_pss_mib": round(base["pss_kib"] / 1024, 1),
        "base_threads": base["threads"], "base_procs": base["procs"],
        "hold_rss_mib": round(hold_mem["rss_kib"] / 1024, 1),
        "hold_pss_mib": round(hold_mem["pss_kib"] / 1024, 1),
        "hold_threads": hold_mem["threads"], "hold_procs": hold_mem["procs"],
        "rss_kib_per_session": round((hold_mem["rss_kib"] - base["rss_kib"]) / dn, 2),
        "pss_kib_per_session": round((hold_mem["pss_kib"] - base["pss_kib"]) / dn, 2),
        "hold_rss_heap_mib": round(by_map["heap"] / 1024, 1) if by_map else "",
        "hold_rss_anon_mib": round(by_map["anon"] / 1024, 1) if by_map else "",
        "hold_rss_file_mib": round(by_map["file"] / 1024, 1) if by_map else "",
        "hold_by_comm": json.dumps({k: [v[0], round(v[1] / 1024, 1)] for k, v in sorted(hold2["by_comm"].items())}),
        "peak_rss_mib": round(sampler.peak_rss / 1024, 1),
        "peak_pss_mib": round(sampler.peak_pss / 1024, 1),
        "mem_samples": sampler.samples,
        "kernel_mib": round(sum(kmem_hold[k] - kmem0[k] for k in KERNEL_FIELDS) / 1024, 1),
        "kernel_slab_mib": round((kmem_hold["Slab"] - kmem0["Slab"]) / 1024, 1),
        "kernel_pagetables_mib": round((kmem_hold["PageTables"] - kmem0["PageTables"]) / 1024, 1),
        "kernel_stack_mib": round((kmem_hold["KernelStack"] - kmem0["KernelStack"]) / 1024, 1),
        "after_close_rss_mib": round(after_close["rss_kib"] / 1024, 1),
        "probe_after_close_ms": max(probe_ms) if probe_ms else "",
        "release_s": release_s,
        "released_rss_mib": round(released["rss_kib"] / 1024, 1),
        "released_pss_mib": round(released["pss_kib"] / 1024, 1),
        "released_threads": released["threads"], "released_procs": released["procs"],
        "probe_after_release_ms": probe2 if probe2 is not None else "",
        "warm_probe_ms": warm_ms,
        "then": a.then,
        "early_replies": done["early_replies"],
        "replies": done["replies"],
        "reply_codes": json.dumps(done["reply_codes"], sort_keys=True),
        "reply_delay_min_s": done["reply_delay_min_s"] if a.then == "wait" else "",
        "reply_delay_p50_s": done["reply_delay_p50_s"] if a.then == "wait" else "",
        "reply_delay_max_s": done["reply_delay_max_s"] if a.then == "wait" else "",
        "total_server_cpu_s": round((cpu_end - cpu0) * tick, 2),
        "client_cpu_s": round(ch.ru_utime + ch.ru_stime, 2),
        "client_rss_mib": done["client_rss_mib"],
        "tarpit_log_lines": log_matches(a.server_log, log_off, a.log_needle.encode()) if a.log_needle else "",
        "notes": "; ".join(notes),
    }
    if a.log_needle and row["tarpit_log_lines"] != est["established"]:
        row["status"] = status = "log-mismatch"
        row["notes"] += f"; {row['tarpit_log_lines']} tarpit log lines for {est['established']} sessions"
    for kv in a.label:
        k, _, v = kv.partition("=")
        row[k] = v
    if a.csv:
        new = not os.path.exists(a.csv) or os.path.getsize(a.csv) == 0
        with open(a.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
    print(json.dumps(row))
    print(f"  {a.server} {n} sessions: {status}; established in {row['establish_s']}s "
          f"({row['establish_server_cpu_us_per_session']} us server CPU each); holding: "
          f"RSS {row['hold_rss_mib']} MiB, PSS {row['hold_pss_mib']} MiB "
          f"({row['rss_kib_per_session']} / {row['pss_kib_per_session']} KiB per session), "
          f"{row['hold_threads']} threads in {row['hold_procs']} procs, CPU {row['hold_server_cpu_pct']}% of a core; "
          f"peak RSS {row['peak_rss_mib']} MiB; kernel +{row['kernel_mib']} MiB (slab {row['kernel_slab_mib']}, page tables {row['kernel_pagetables_mib']}, stacks {row['kernel_stack_mib']}); "
          f"probe after close {row['probe_after_close_ms']} ms; released after {release_s}s "
          f"-> RSS {row['released_rss_mib']} MiB" + (f"; {row['notes']}" if row["notes"] else ""),
          file=sys.stderr)
    return 0 if status == "ok" else 1


# ---------------------------------------------------------------- summarize

def cmd_summarize(a):
    rows = []
    for path in a.csv:
        with open(path) as f:
            rows += [r for r in csv.DictReader(f) if r["status"] == "ok"]
    keys = sorted({(r["server"], int(r["sessions"]), int(r.get("wave") or 1)) for r in rows},
                  key=lambda k: (0 if k[0] == "postfix" else 1, k[1], k[2]))

    def col(sel, k):
        return [float(r[k]) for r in sel if r.get(k) not in (None, "", "None")]

    def cell(xs, d=1):
        if not xs:
            return "n/a"
        m = statistics.median(xs)
        if len(xs) == 1 or round(min(xs), d) == round(max(xs), d):
            return f"{m:,.{d}f}"
        return f"{m:,.{d}f} ({min(xs):,.{d}f}–{max(xs):,.{d}f})"

    tables = [
        [("establish_s", "establishing s", 1),
         ("establish_server_cpu_us_per_session", "server CPU µs/session establishing", 0),
         ("hold_rss_mib", "RSS MiB", 1),
         ("hold_pss_mib", "PSS MiB", 1),
         ("rss_kib_per_session", "RSS KiB/session", 1),
         ("pss_kib_per_session", "PSS KiB/session", 1),
         ("hold_threads", "threads", 0),
         ("hold_procs", "processes", 0),
         ("hold_server_cpu_pct", "CPU % of a core", 2)],
        [("peak_rss_mib", "peak RSS MiB", 1),
         ("kernel_mib", "kernel MiB (both ends)", 1),
         ("probe_after_close_ms", "fresh session after close ms", 1),
         ("release_s", "sessions gone after s", 0),
         ("released_rss_mib", "RSS MiB then", 1),
         ("hold_rss_heap_mib", "holding: RSS in brk heap MiB", 1),
         ("hold_rss_anon_mib", "in other anon maps MiB", 1),
         ("base_rss_mib", "RSS MiB before", 1)],
    ]
    out = [f"Medians (range) of {len(rows)} successful measurements", ""]
    for i, fields in enumerate(tables):
        if i:
            out += ["", "After the close (and the baseline):", ""]
        else:
            out += ["While holding the sessions:", ""]
        out.append("| server | sessions | runs | " + " | ".join(f[1] for f in fields) + " |")
        out.append("|---|---:|---:|" + "---:|" * len(fields))
        for server, n, wave in keys:
            sel = [r for r in rows if r["server"] == server and int(r["sessions"]) == n
                   and int(r.get("wave") or 1) == wave]
            label = f"{n:,}" + (f" (wave {wave})" if wave > 1 or any(k[2] > 1 for k in keys if k[:2] == (server, n)) else "")
            out.append(f"| {server} | {label} | {len(sel)} | " + " | ".join(cell(col(sel, k), d) for k, _, d in fields) + " |")
    print("\n".join(out))


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="sub", required=True)

    c = sub.add_parser("client")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--sessions", type=int, default=10000)
    c.add_argument("--sources", default="127.0.0.2-127.0.0.41", help="one address or FIRST-LAST")
    c.add_argument("--inflight", type=int, default=200, help="sessions being set up at once")
    c.add_argument("--sender", default="a@client.test")
    c.add_argument("--rcpt", default="u1@example.test")
    c.add_argument("--rcpt2", help="the second recipient (default: --rcpt)")
    c.add_argument("--delay", type=float, default=60, help="the server's delay of the 2nd RCPT reply")
    c.add_argument("--timeout", type=float, default=30, help="per reply before the 2nd RCPT")
    c.add_argument("--establish-timeout", type=float, default=50)
    c.add_argument("--max-hold", type=float, default=180, help="close by itself if no command comes")
    c.set_defaults(func=cmd_client)

    m = sub.add_parser("measure")
    m.add_argument("--server", required=True)
    m.add_argument("--server-pid", type=int, required=True)
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--sessions", type=int, default=10000)
    m.add_argument("--sources", default="127.0.0.2-127.0.0.41")
    m.add_argument("--inflight", type=int, default=200)
    m.add_argument("--rcpt", default="u1@example.test")
    m.add_argument("--rcpt2")
    m.add_argument("--delay", type=float, default=60)
    m.add_argument("--hold", type=float, default=15, help="seconds the held sessions are watched")
    m.add_argument("--then", choices=["close", "wait"], default="close")
    m.add_argument("--establish-timeout", type=float, default=45)
    m.add_argument("--release-timeout", type=float, default=90)
    m.add_argument("--mem-budget", type=float, default=0.03)
    m.add_argument("--server-log")
    m.add_argument("--log-needle", help="a log line every tarpitted session writes once")
    m.add_argument("--csv")
    m.add_argument("--label", action="append", default=[])
    m.set_defaults(func=cmd_measure)

    s = sub.add_parser("summarize")
    s.add_argument("csv", nargs="+")
    s.set_defaults(func=cmd_summarize)

    a = p.parse_args()
    sys.exit(a.func(a) or 0)


if __name__ == "__main__":
    main()
