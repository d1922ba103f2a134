#!/usr/bin/env python3
"""Question: what does each way of reading or writing a session cost Redis itself?

    python3 benches/redis_scripts.py

Starts a dedicated redis-server on a free 127.0.0.1 port under `valgrind --tool=callgrind`,
stores a session like the one of benches/load.sh (5 fields + `__created`/`__touched`), and
prints the instructions Redis executes per operation (user space, its once-per-100-ms
serverCron left out) for the read (`HGETALL`), the write scripts the sidecar used before and
uses now, and the alternatives measured for the "lean hot path" work. Each operation is sent
REQUESTS times (2000) over one connection after 100 warm-up calls. Needs valgrind and
redis-server; stops what it started.
"""
import glob
import os
import socket
import subprocess
import sys
import tempfile
import time

REQUESTS = int(os.environ.get("REQUESTS", "2000"))


# The Lua scripts the sidecar sends, read from its source.
STORE_SOURCE = open(os.path.join(os.path.dirname(__file__), "..", "src", "store", "redis", "mod.rs")).read()


def rust_const(name):
    """The text of a `const NAME: &str = r#"..."#;` in src/store/redis/mod.rs."""
    start = STORE_SOURCE.index(f"const {name}: &str = r#\"") + len(f"const {name}: &str = r#\"")
    return STORE_SOURCE[start:STORE_SOURCE.index('"#;', start)]


VARIANTS = {
    # what the sidecar sends now for an update
    "update script (PEXPIRE as existence check, one HSET)": (rust_const("UPDATE_SCRIPT"), "update-deadline"),
    # the generic script every write used before
    "generic write script (mode dispatch, EXISTS, HSET, PEXPIRE)": (rust_const("WRITE_SCRIPT"), "write"),
    "update script with EXISTS + HSET + PEXPIRE": (
        """if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = 3 + 2 * tonumber(ARGV[3])
redis.call('HSET', KEYS[1], '__touched', ARGV[2], unpack(ARGV, 4, last))
if #ARGV > last then redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1)) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1""",
        "update",
    ),
    "empty script (return 1): EVALSHA's fixed cost": ("return 1", "none"),
    "read as one length-prefixed string (Lua)": (
        """local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h do h[i] = #h[i] .. ':' .. h[i] end
return table.concat(h)""",
        "read",
    ),
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Resp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.read()

    def read(self):
        line = self.file.readline()
        kind = line[:1]
        if kind == b"-":
            raise RuntimeError(line.decode().strip())
        if kind in b"+:":
            return line[1:].strip()
        if kind == b"$":
            n = int(line[1:])
            return None if n < 0 else self.file.read(n + 2)[:-2]
        if kind == b"*":
            return [self.read() for _ in range(int(line[1:]))]
        raise RuntimeError(f"unexpected reply {line!r}")


def main():
    tmp = tempfile.mkdtemp(prefix="redis-scripts.")
    port = free_port()
    redis = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p", "redis-server",
         "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                r = Resp(port)
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("redis-server did not start")

        def instructions():
            subprocess.run(["callgrind_control", "-d", str(redis.pid)], capture_output=True)
            time.sleep(0.5)
            dump = max(glob.glob(f"{tmp}/cg.{redis.pid}.*"), key=os.path.getmtime)
            total = next(int(l.split()[1]) for l in open(dump) if l.startswith(("summary:", "totals:")))
            listing = subprocess.run(["callgrind_annotate", "--inclusive=yes", dump],
                                     capture_output=True, text=True).stdout
            cron = next((int(l.split()[0].replace(",", "")) for l in listing.splitlines()
                         if ":serverCron " in l), 0)
            return total - cron

        def measure(name, op):
            for _ in range(100):
                op()
            subprocess.run(["callgrind_control", "-z", str(redis.pid)], capture_output=True)
            for _ in range(REQUESTS):
                op()
            print(f"| {name} | {instructions() / REQUESTS / 1000:.1f}k |", flush=True)

        key = "session:" + "a" * 64
        now, ttl, value = 1700000000000, 86400000, '"0123456789abcdef0123456789abcdef"'
        r.call("HSET", key, "__created", now, "__touched", now, "user", '"alice"', "uid", "42",
               "admin", "false", "roles", '["dev"]', "theme", '"dark"')
        r.call("PEXPIRE", key, ttl)
        print(f"Redis instructions per operation (callgrind, {REQUESTS} operations each):\n")
        print("| operation | Ir / op |\n|---|---:|")
        measure("HGETALL (the read)", lambda: r.call("HGETALL", key))
        measure("HSET + PEXPIRE, two commands, no script (not atomic: reference only)",
                lambda: (r.call("HSET", key, "__touched", now, "last", value), r.call("PEXPIRE", key, ttl)))
        for name, (script, args) in VARIANTS.items():
            sha = r.call("SCRIPT", "LOAD", script)
            if args == "update":
                op = lambda: r.call("EVALSHA", sha, 1, key, ttl, now, 1, "last", value)
            elif args == "update-deadline":
                # The sidecar's layout: ARGV[4] is the index deadline (0: no index key given).
                op = lambda: r.call("EVALSHA", sha, 1, key, ttl, now, 1, 0, "last", value)
            elif args == "write":
                op = lambda: r.call("EVALSHA", sha, 1, key, "update", now, ttl, 1, "last", value)
            else:
                op = lambda: r.call("EVALSHA", sha, 1, key)
            measure(name, op)
        body = rust_const("UPDATE_SCRIPT").replace("KEYS[", "keys[")
        r.call("FUNCTION", "LOAD", "REPLACE", "#!lua name=sessbench\n"
               "redis.register_function('sess_update', function(keys, ARGV)\n" + body + "\nend)\n")
        measure("the update script as a Redis 7 function (FCALL)",
                lambda: r.call("FCALL", "sess_update", 1, key, ttl, now, 1, 0, "last", value))
    finally:
        redis.terminate()
        redis.wait()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
