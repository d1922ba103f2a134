"""Demo app for session-sidecar: a visit counter with log in / log out.

Python standard library only. The app never touches cookies, session IDs or storage: it reads
the session from the `X-Session` request header (a JSON object, `{}` without a session) and
changes it with response headers:

  X-Session-Set: {"visits": 3}         set fields (null deletes one)
  X-Session-Action: regenerate         new session ID, data kept (after log in)
  X-Session-Action: destroy            end the session (log out)

Routes:
  GET  /          HTML page; counts the visit
  GET  /session   the session as JSON (what the sidecar sent), e.g. for curl
  POST /login     form field `user`; sets {"user": ...} and regenerates the ID
  POST /logout    destroys the session
"""

import html
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "3000"))
MAX_FORM_BYTES = 4096
MAX_USER_CHARS = 64

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>session-sidecar demo</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:3em auto}}code{{background:#eee}}</style>
</head>
<body>
<h1>session-sidecar demo</h1>
<p>{greeting}</p>
<p>Visits in this session: <strong>{visits}</strong></p>
{form}
<p>The app received <code>X-Session: {raw}</code></p>
<p><a href="/session">/session</a> shows it as JSON.</p>
</body>
</html>
"""

LOGIN_FORM = """<form method="post" action="/login">
<label>User <input name="user" maxlength="64" required></label>
<button>Log in</button>
</form>"""

LOGOUT_FORM = """<form method="post" action="/logout"><button>Log out</button></form>"""


def read_session(headers):
    """The session fields the sidecar sent; `{}` when absent or unreadable."""
    raw = headers.get("X-Session", "{}")
    try:
        value = json.loads(raw)
    except ValueError:
        return {}, raw
    return (value if isinstance(value, dict) else {}), raw


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "session-demo"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # delayed ACKs would add ~40 ms to every response.
    disable_nagle_algorithm = True

    def reply(self, status, body=b"", content_type="text/plain; charset=utf-8", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def redirect_home(self, headers):
        self.reply(303, b"", headers=[("Location", "/"), *headers])

    def route(self):
        return urlsplit(self.path).path

    def do_GET(self):
        session, raw = read_session(self.headers)
        path = self.route()
        if path == "/session":
            body = json.dumps(session, indent=2, sort_keys=True).encode() + b"\n"
            self.reply(200, body, "application/json")
            return
        if path != "/":
            self.reply(404, b"not found\n")
            return
        visits = session.get("visits")
        visits = visits + 1 if isinstance(visits, int) and not isinstance(visits, bool) else 1
        user = session.get("user")
        if isinstance(user, str):
            greeting = "Logged in as <strong>%s</strong>." % html.escape(user)
            form = LOGOUT_FORM
        else:
            greeting = "Not logged in."
            form = LOGIN_FORM
        page = PAGE.format(
            greeting=greeting, visits=visits, form=form, raw=html.escape(raw)
        ).encode()
        # Only the changed field: fields this response does not mention stay as they are.
        change = json.dumps({"visits": visits}, separators=(",", ":"))
        self.reply(200, page, "text/html; charset=utf-8", [("X-Session-Set", change)])

    do_HEAD = do_GET

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_FORM_BYTES:
            self.reply(413, b"form too large\n")
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        path = self.route()
        if path == "/login":
            user = (form.get("user") or [""])[0].strip()
            if not user or len(user) > MAX_USER_CHARS:
                self.reply(400, b"user: 1 to 64 characters\n")
                return
            # Set the user and give the session a new ID: an ID known before the login (e.g.
            # planted by an attacker) is dead from now on.
            change = json.dumps({"user": user}, separators=(",", ":"))
            self.redirect_home([("X-Session-Set", change), ("X-Session-Action", "regenerate")])
        elif path == "/logout":
            self.redirect_home([("X-Session-Action", "destroy")])
        else:
            self.reply(404, b"not found\n")

    def log_message(self, fmt, *args):
        sys.stderr.write("app: %s %s\n" % (self.address_string(), fmt % args))


def main():
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("demo app listening on http://%s:%d" % (HOST, PORT), flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
