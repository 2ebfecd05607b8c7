#!/usr/bin/env python3
"""A real SMTP server for Engager's tests and `engager bench smtp`, built on aiosmtpd.

It stores every accepted message as two files in --dir: NNNNNN.eml (the DATA exactly as
received, dot-unstuffed, CRLF line ends) and NNNNNN.json (the envelope: MAIL FROM, RCPT TO,
the AUTH login, whether the session was encrypted). The .json is renamed into place last, so
a reader that sees it can read the .eml.

Scripted answers are chosen by the recipient's local part, so a test states the failure it
wants in the address it sends to:
  rcpt-NNN@...          RCPT TO is answered NNN (e.g. rcpt-451, rcpt-550)
  data-NNN@...          the final reply after the message is NNN
  drop-at-rcpt@...      the connection is reset at RCPT TO (before DATA)
  drop-after-data@...   the connection is reset after the message arrived, before a reply
  stall-after-data@...  the message arrives and no reply ever comes

On start it prints "READY <port>" on stdout (bind to port 0 to let the OS choose).
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def local_part(address):
    return address.split("@", 1)[0].lower()


class Sink:
    def __init__(self, directory, discard, pipelining):
        self.directory = directory
        self.discard = discard
        self.pipelining = pipelining
        self.count = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            # Like real relays (RFC 2920); aiosmtpd reads pipelined commands in order.
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = local_part(address)
        if local.startswith("rcpt-") and local[5:].isdigit():
            code = local[5:]
            return f"{code} {code[0]}.0.0 scripted reply for {local}"
        if local == "drop-at-rcpt":
            server.transport.abort()
            await asyncio.sleep(60)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        locals_ = [local_part(a) for a in envelope.rcpt_tos]
        for local in locals_:
            if local == "drop-after-data":
                server.transport.abort()
                await asyncio.sleep(60)
            if local == "stall-after-data":
                await asyncio.sleep(3600)
        self.count += 1
        seq = self.count
        for local in locals_:
            if local.startswith("data-") and local[5:].isdigit():
                code = local[5:]
                return f"{code} {code[0]}.0.0 scripted reply for {local}"
        if not self.discard:
            base = os.path.join(self.directory, f"{seq:06d}")
            with open(base + ".eml.tmp", "wb") as f:
                f.write(envelope.original_content)
            os.replace(base + ".eml.tmp", base + ".eml")
            meta = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "mail_options": envelope.mail_options,
                "login": getattr(session, "auth_data", None),
                "tls": session.ssl is not None or server.implicit_tls,
                # The client's port tells which connection carried the message.
                "peer_port": session.peer[1] if session.peer else None,
            }
            with open(base + ".json.tmp", "w") as f:
                json.dump(meta, f)
            os.replace(base + ".json.tmp", base + ".json")
        return f"250 2.0.0 Ok: queued as SINK{seq}"


class SinkSMTP(SMTP):
    implicit_tls = False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dir", default=".")
    parser.add_argument("--discard", action="store_true", help="count messages, store nothing")
    parser.add_argument("--auth", help="user:password; AUTH is then required")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--implicit-tls", action="store_true", help="TLS from the first byte (port 465 style)")
    parser.add_argument("--no-pipelining", action="store_true", help="do not advertise PIPELINING")
    parser.add_argument("--idle-timeout", type=float, default=300, help="close idle sessions after this many seconds")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when the parent closes stdin")
    args = parser.parse_args()

    handler = Sink(args.dir, args.discard, not args.no_pipelining)
    tls_context = None
    if args.tls_cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)
    starttls = tls_context is not None and not args.implicit_tls

    def authenticator(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword) or not args.auth:
            return AuthResult(success=False, handled=False)
        user, password = args.auth.split(":", 1)
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

    def factory():
        smtp = SinkSMTP(
            handler,
            hostname="sink.engager.test",
            ident="engager-test-sink",
            decode_data=False,
            tls_context=tls_context if starttls else None,
            require_starttls=starttls,
            authenticator=authenticator if args.auth else None,
            auth_required=bool(args.auth),
            # AUTH only after STARTTLS when STARTTLS is offered; plaintext tests run on loopback.
            auth_require_tls=starttls,
            data_size_limit=50 * 1024 * 1024,
            timeout=args.idle_timeout,
        )
        smtp.implicit_tls = args.implicit_tls
        return smtp

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(
            factory,
            host=args.host,
            port=args.port,
            ssl=tls_context if args.implicit_tls else None,
            backlog=512,
        )
    )
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    if args.exit_on_stdin_eof:
        # Stop when the parent goes away (stdin closes), so no sink outlives its test.
        loop.add_reader(sys.stdin.fileno(), lambda: loop.stop() if not os.read(sys.stdin.fileno(), 1) else None)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
