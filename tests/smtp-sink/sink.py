"""An SMTP server for tokend's tests: accepts every message and writes it to
a directory, as N.eml (the raw RFC 5322 message) and N.json (the envelope,
headers and parts, with LF line ends, parsed by Python's email package:
independent of tokend's mail library).

Usage: sink.py PORT DIR. Listens on 127.0.0.1:PORT (0: a free port) and
prints `listening on smtp://127.0.0.1:PORT` once it accepts connections.
"""

import email
import email.policy
import json
import os
import socket
import sys
import threading

from aiosmtpd.controller import Controller

LOCK = threading.Lock()


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))

        def content(part):
            # As a mail client shows it: SMTP's CRLF line ends as \n.
            return None if part is None else part.get_content().replace("\r\n", "\n")

        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["From"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "content_type": message.get_content_type(),
            "text": content(text),
            "html": content(html),
        }
        with LOCK:
            self.count += 1
            name = os.path.join(self.directory, str(self.count))
        # Written under a temporary name, then renamed: a reader never sees
        # half a message.
        for suffix, data in ((".eml", envelope.content), (".json", json.dumps(record).encode())):
            with open(name + suffix + ".tmp", "wb") as f:
                f.write(data)
            os.rename(name + suffix + ".tmp", name + suffix)
        return "250 Message accepted for delivery"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    if port == 0:
        # aiosmtpd's start() connects to the port it was given to see the
        # server up, so port 0 must be turned into a real one first.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"listening on smtp://127.0.0.1:{controller.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
