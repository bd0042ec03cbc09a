#!/usr/bin/env python3
"""A receiving SMTP server for mxguard's outbound tests, built on aiosmtpd.

    sink.py --host 127.0.0.12 --port 0 --log FILE [--mode MODE] [--data-dir DIR]

Prints "PORT n" on stdout once listening (then flushes), and appends one
JSON object per line to FILE for every event, flushed at once:

    {"event": "connect", "peer": "127.0.0.1:4711", "time": ...}
    {"event": "ehlo", "peer": ..., "name": "mx.example.test"}
    {"event": "mail", "peer": ..., "mail_from": "a@b", "options": [...]}
    {"event": "rcpt", "peer": ..., "rcpt": "x@routed.test", "options": [...],
     "reply": "250 2.1.5 OK", "transaction": 1}
    {"event": "message", "peer": ..., "mail_from": ..., "rcpt_tos": [...],
     "sha256": hex, "size": n, "tls": false, "reply": "250 2.0.0 OK",
     "accepted": true, "data_path": "DIR/1.eml", "transaction": 1}
    {"event": "disconnect", "peer": ...}

The data of each message (dot-unstuffed, CRLF kept, exactly the bytes
received) is written to DIR/<n>.eml (DIR defaults to FILE + ".d") before
its "message" line is logged.

Modes:
    accept        every recipient and message is accepted (the default)
    tempfail:N    451 4.3.0 to every RCPT of the first N transactions
                  (a transaction starts with MAIL), then accept
    reject        550 5.1.1 to every RCPT
    reject-data   recipients accepted, 554 5.6.0 at the end of DATA

EHLO advertises PIPELINING, 8BITMIME and SMTPUTF8 (aiosmtpd reads the
commands of a pipelined group one by one from its stream buffer).

The sink exits when its standard input reaches end of file (the test that
started it has gone), on SIGTERM, or after --lifetime seconds.
"""

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
import threading
import time

from aiosmtpd.smtp import SMTP


def parse_mode(text):
    if text in ("accept", "reject", "reject-data"):
        return text, 0
    if text.startswith("tempfail:"):
        n = int(text.split(":", 1)[1])
        if n < 0:
            raise argparse.ArgumentTypeError("tempfail:N needs N >= 0")
        return "tempfail", n
    raise argparse.ArgumentTypeError(
        "mode must be accept, tempfail:N, reject or reject-data, got %r" % text
    )


class EventLog:
    def __init__(self, path):
        self.f = open(path, "a", encoding="utf-8")

    def write(self, event, **fields):
        rec = {"event": event, "time": time.time()}
        rec.update(fields)
        self.f.write(json.dumps(rec, sort_keys=True) + "\n")
        self.f.flush()


def peer_text(session):
    peer = getattr(session, "peer", None)
    if isinstance(peer, tuple) and len(peer) >= 2:
        return "%s:%s" % (peer[0], peer[1])
    return str(peer)


class Handler:
    def __init__(self, mode, log, data_dir):
        self.mode, self.tempfail_n = mode
        self.log = log
        self.data_dir = data_dir
        self.transactions = 0
        self.messages = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.log.write("ehlo", peer=peer_text(session), name=hostname)
        # Advertise PIPELINING before the last line ("250 HELP").
        return responses[:-1] + ["250-PIPELINING"] + responses[-1:]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.transactions += 1
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.sink_transaction = self.transactions
        self.log.write(
            "mail",
            peer=peer_text(session),
            mail_from=address,
            options=mail_options,
            transaction=self.transactions,
        )
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        txn = getattr(envelope, "sink_transaction", self.transactions)
        if self.mode == "reject":
            reply = "550 5.1.1 <%s>: recipient rejected by the sink" % address
        elif self.mode == "tempfail" and txn <= self.tempfail_n:
            reply = "451 4.3.0 <%s>: try again later (sink tempfail)" % address
        else:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            reply = "250 2.1.5 OK"
        self.log.write(
            "rcpt",
            peer=peer_text(session),
            rcpt=address,
            options=rcpt_options,
            reply=reply,
            transaction=txn,
        )
        return reply

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content
        if data is None:
            data = envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", errors="surrogateescape")
        self.messages += 1
        path = os.path.join(self.data_dir, "%d.eml" % self.messages)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if self.mode == "reject-data":
            reply = "554 5.6.0 message content rejected by the sink"
        else:
            reply = "250 2.0.0 OK: sink message %d" % self.messages
        self.log.write(
            "message",
            peer=peer_text(session),
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            mail_options=list(envelope.mail_options),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            tls=getattr(session, "ssl", None) is not None,
            reply=reply,
            accepted=reply.startswith("250"),
            data_path=path,
            transaction=getattr(envelope, "sink_transaction", self.transactions),
        )
        return reply


class LoggingSMTP(SMTP):
    def __init__(self, handler, log, **kw):
        super().__init__(handler, **kw)
        self._event_log = log

    def connection_made(self, transport):
        super().connection_made(transport)
        self._event_log.write("connect", peer=peer_text(self.session))

    def connection_lost(self, error):
        peer = peer_text(self.session) if self.session is not None else None
        self._event_log.write("disconnect", peer=peer)
        super().connection_lost(error)


def watch_stdin(loop, stop):
    """Ends the sink when the parent closes our stdin (or dies)."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except Exception:
        pass
    loop.call_soon_threadsafe(stop.set)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--mode", type=parse_mode, default=("accept", 0))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--hostname", default="sink.test")
    ap.add_argument("--lifetime", type=float, default=900.0)
    ap.add_argument(
        "--no-stdin-watch",
        action="store_true",
        help="do not exit when stdin reaches end of file",
    )
    args = ap.parse_args()

    data_dir = os.path.abspath(args.data_dir or (args.log + ".d"))
    os.makedirs(data_dir, exist_ok=True)
    log = EventLog(args.log)
    handler = Handler(args.mode, log, data_dir)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def factory():
        return LoggingSMTP(
            handler,
            log,
            hostname=args.hostname,
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=100 * 1024 * 1024,
        )

    server = await loop.create_server(factory, host=args.host, port=args.port)
    port = server.sockets[0].getsockname()[1]
    log.write("listening", host=args.host, port=port, mode=list(args.mode))
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()

    if not args.no_stdin_watch:
        threading.Thread(target=watch_stdin, args=(loop, stop), daemon=True).start()
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.lifetime)
    except asyncio.TimeoutError:
        pass
    server.close()
    log.write("stopped")


if __name__ == "__main__":
    asyncio.run(main())
