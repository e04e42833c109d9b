"""The remote host: one SSH connection per host (asyncssh), commands, and the Incus
REST API over OpenSSH streamlocal forwarding, with its exec websockets."""

import asyncio
import base64
import contextvars
import fnmatch
import json
import os
import shlex
import struct
import urllib.parse

import asyncssh

from .contract import CONFLICT, CTX_DEADLINE, INVALID, NOT_FOUND, PERMISSION, UNAVAILABLE, PluginError, show

CONNECT_TIMEOUT = 30.0       # seconds, when the config sets no ConnectTimeout
REQUEST_TIMEOUT = 60.0       # one Incus request and its answer
MAX_BODY = 64 << 20          # the largest Incus answer read
MAX_OUTPUT = 16 << 20        # the largest output of a remote command kept
MAX_HEAD = 64 << 10          # the largest HTTP header block read
COMMAND_TIMEOUT = 120.0      # one remote command, unless the caller says otherwise


# The gRPC deadline of the call being served (event loop time), set by main.py. Every
# bound below ends a little before it, so that the plugin answers, with an error that
# says what it knows, before the host gives up on the call.
DEADLINE = contextvars.ContextVar("deadline", default=None)
DEADLINE_MARGIN = 1.0


def bound(timeout):
    """(seconds, whether the call's deadline is what bounds them)."""
    dl = DEADLINE.get()
    if dl is None:
        return timeout, False
    left = max(0.05, dl - asyncio.get_running_loop().time() - DEADLINE_MARGIN)
    return (left, True) if left < timeout else (timeout, False)


# --- OpenSSH client config: the subset the plugin needs ---------------------

def read_ssh_config(path, alias):
    """The options for alias in an OpenSSH client config: Host blocks, first value
    wins, keys case-insensitive (Match blocks are ignored)."""
    opts, active = {}, True
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise PluginError(INVALID, "ssh_config_path", path, f"read the OpenSSH client config {show(path)}: {e.strerror}")
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.replace("=", " ", 1).partition(" ")
        key, value = key.lower(), value.strip()
        if key == "host":
            pats = shlex.split(value)
            active = any(fnmatch.fnmatchcase(alias, p) for p in pats if not p.startswith("!")) and \
                not any(fnmatch.fnmatchcase(alias, p[1:]) for p in pats if p.startswith("!"))
        elif key == "match":
            active = False
        elif active and key not in opts:
            opts[key] = value
    return opts


class Remote:
    """One SSH connection to one remote host, opened on first use."""

    def __init__(self, config_path, alias):
        self.alias = alias
        self.config_path = config_path or os.path.expanduser("~/.ssh/config")
        self._conn = None
        self._lock = asyncio.Lock()

    async def connect(self):
        async with self._lock:
            if self._conn is not None:
                return self._conn
            o = read_ssh_config(self.config_path, self.alias)
            strict = o.get("stricthostkeychecking", "yes").lower()
            if strict not in ("yes", "ask"):
                # "no"/"off" would skip verification; "accept-new" would trust a
                # first-seen key: this example does neither.
                raise PluginError(PERMISSION, "StrictHostKeyChecking", strict,
                                  f"ssh {self.alias}: StrictHostKeyChecking {show(strict)} would connect without "
                                  f"verifying the host key against known_hosts; refused (want yes or ask)")
            known = os.path.expanduser(o.get("userknownhostsfile", "~/.ssh/known_hosts").split()[0])
            host, port = o.get("hostname", self.alias), int(o.get("port", "22"))
            try:
                timeout = float(o.get("connecttimeout", CONNECT_TIMEOUT))
            except ValueError:
                raise PluginError(INVALID, "ConnectTimeout", o["connecttimeout"],
                                  f"ssh {self.alias}: ConnectTimeout {show(o['connecttimeout'])}: want a number of seconds")
            keys = [os.path.expanduser(o["identityfile"])] if "identityfile" in o else ()
            limit, by_deadline = bound(timeout)
            try:
                # One bound over the TCP connect and the whole SSH handshake.
                self._conn = await asyncio.wait_for(asyncssh.connect(
                    host, port, username=o.get("user"), known_hosts=known, client_keys=keys,
                    config=[], agent_path=None, keepalive_interval=30), limit)
            except asyncio.TimeoutError:
                what = "the call's deadline" if by_deadline else f"ConnectTimeout {timeout:g}s"
                raise PluginError(UNAVAILABLE, "remote.host", self.alias,
                                  f"ssh {self.alias} ({host}:{port}): no SSH handshake within {what}",
                                  CTX_DEADLINE if by_deadline else 0)
            except asyncssh.HostKeyNotVerifiable as e:
                raise PluginError(PERMISSION, "remote.host", self.alias,
                                  f"ssh {self.alias} ({host}:{port}): host key not verified against {known}: {e}")
            except (OSError, asyncssh.Error) as e:
                raise PluginError(UNAVAILABLE, "remote.host", self.alias, f"ssh {self.alias} ({host}:{port}): {e}")
            return self._conn

    async def run(self, command, stdin=None, check=True, timeout=COMMAND_TIMEOUT):
        """Runs one command within timeout; returns (exit status, stdout, stderr)."""
        limit, by_deadline = bound(timeout)
        try:
            return await asyncio.wait_for(self._run(command, stdin, check), limit)
        except asyncio.TimeoutError:
            raise PluginError(UNAVAILABLE, "remote.host", self.alias,
                              f"ssh {self.alias}: {show(command[:200])} did not end within {limit:g}s",
                              CTX_DEADLINE if by_deadline else 0)

    async def _run(self, command, stdin, check):
        conn = await self.connect()
        try:
            proc = await conn.create_process(command, encoding=None, stdin=asyncssh.PIPE)
            if stdin is not None:
                while chunk := stdin.read(1 << 16):
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
            proc.stdin.write_eof()
            out, err = await asyncio.gather(_read_all(proc.stdout), _read_all(proc.stderr))
            await proc.wait_closed()
        except (OSError, asyncssh.Error) as e:
            self._conn = None  # opened again on next use
            raise PluginError(UNAVAILABLE, "remote.host", self.alias, f"ssh {self.alias}: run {show(command[:80])}: {e}")
        status = proc.exit_status if proc.exit_status is not None else -1
        if check and status != 0:
            raise PluginError(UNAVAILABLE, "remote.host", self.alias,
                              f"ssh {self.alias}: {show(command[:200])} exited {status}: {err.decode(errors='replace').strip()}")
        return status, out, err

    async def close(self):
        if self._conn is not None:
            self._conn.close()


async def _read_all(stream):
    """A stream to its end, keeping at most MAX_OUTPUT bytes."""
    out = bytearray()
    while chunk := await stream.read(1 << 16):
        out += chunk[:MAX_OUTPUT - len(out)]
    return bytes(out)


# --- Incus over the SSH connection ------------------------------------------

class IncusError(PluginError):
    def __init__(self, kind, status, message, method, path):
        super().__init__(kind, "", "", f"incus: {method} {path}: {status} {message}")
        self.status, self.incus_message = status, message


def _kind(status):
    return {400: INVALID, 403: PERMISSION, 404: NOT_FOUND, 409: CONFLICT, 412: CONFLICT}.get(status, UNAVAILABLE)


class Incus:
    """The Incus REST API behind a Unix socket on the remote host
    (https://linuxcontainers.org/incus/docs/main/rest-api/)."""

    def __init__(self, remote, socket="/var/lib/incus/unix.socket"):
        self.remote, self.socket = remote, socket

    async def _open(self):
        conn = await self.remote.connect()
        try:
            return await conn.open_unix_connection(self.socket)
        except (OSError, asyncssh.Error) as e:
            self.remote._conn = None
            raise PluginError(UNAVAILABLE, "remote.host", self.remote.alias,
                              f"incus: open {self.socket} on {self.remote.alias}: {e}")

    async def request(self, method, path, body=None, headers=None, timeout=REQUEST_TIMEOUT, raw=False):
        # Every answer is read through a BufReader: no read is larger than MAX_BODY.
        """One request on its own channel; returns (status, headers, envelope or body bytes)."""
        data = json.dumps(body).encode() if body is not None else b""
        head = [f"{method} {path} HTTP/1.1", "Host: incus", "Connection: close", f"Content-Length: {len(data)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        reader, writer = await self._open()
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
            limit, by_deadline = bound(timeout)
            status, hdrs, payload = await asyncio.wait_for(_read_response(BufReader(reader), method, path), limit)
        except asyncio.TimeoutError:
            err = PluginError(UNAVAILABLE, "", "", f"incus: {method} {path}: no answer within {limit:g}s",
                              CTX_DEADLINE if by_deadline else 0)
            err.sent = True
            raise err
        except (OSError, asyncssh.Error, asyncio.IncompleteReadError, ValueError) as e:
            err = PluginError(UNAVAILABLE, "", "", f"incus: {method} {path}: the connection broke: {e}")
            err.sent = True
            raise err
        except PluginError as e:  # an answer past a bound: the request was read all the same
            e.sent = True
            raise
        finally:
            writer.close()
        if raw and status < 400:
            return status, hdrs, payload
        try:
            env = json.loads(payload) if payload else {}
        except ValueError:
            raise PluginError(UNAVAILABLE, "", "", f"incus: {method} {path}: {status}: an answer that is not JSON")
        if status >= 400 or env.get("type") == "error":
            code = env.get("error_code") or status
            raise IncusError(_kind(code), code, env.get("error", ""), method, path)
        return status, hdrs, env

    async def call(self, method, path, body=None, headers=None, timeout=REQUEST_TIMEOUT):
        """A request, then its operation to its end when the answer is async."""
        _, hdrs, env = await self.request(method, path, body, headers, timeout)
        if env.get("type") == "async":
            env = {"metadata": await self.wait(env["operation"], timeout)}
        return env

    async def wait(self, op, timeout=REQUEST_TIMEOUT):
        """Waits for an operation; returns its metadata, or raises its error."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            left = max(1, int(end - loop.time()))
            _, _, env = await self.request("GET", f"{op}/wait?timeout={min(left, 30)}", timeout=min(left, 30) + 10)
            md = env.get("metadata") or {}
            if md.get("status_code", 0) >= 200:
                if md["status_code"] != 200 and (md.get("metadata") or {}).get("return") is None:
                    raise IncusError(UNAVAILABLE, md["status_code"], md.get("err", ""), "operation", op)
                return md
            if loop.time() >= end:
                raise PluginError(UNAVAILABLE, "", "", f"incus: operation {op} did not end within {timeout:g}s")

    async def websocket(self, op_id, secret):
        raw_reader, writer = await self._open()
        reader = BufReader(raw_reader)
        key = base64.b64encode(os.urandom(16)).decode()
        path = f"/1.0/operations/{op_id}/websocket?secret={urllib.parse.quote(secret)}"
        writer.write((f"GET {path} HTTP/1.1\r\nHost: incus\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        status, _ = await asyncio.wait_for(_read_head(reader), REQUEST_TIMEOUT)
        if status != 101:
            writer.close()
            raise PluginError(UNAVAILABLE, "", "", f"incus: websocket of operation {op_id}: answered {status}")
        return WebSocket(reader, writer)


class BufReader:
    """Reads from an SSH channel with a bound on every read."""

    def __init__(self, reader):
        self.reader, self.buf = reader, bytearray()

    async def _fill(self):
        data = await self.reader.read(1 << 16)
        if not data:
            raise asyncio.IncompleteReadError(bytes(self.buf), None)
        self.buf += data

    async def until(self, sep, limit):
        while (i := self.buf.find(sep)) < 0:
            if len(self.buf) > limit:
                raise PluginError(UNAVAILABLE, "", "", f"incus: no {sep!r} within {limit} bytes of the answer")
            await self._fill()
        out = bytes(self.buf[:i + len(sep)])
        del self.buf[:i + len(sep)]
        return out

    async def readexactly(self, n):
        while len(self.buf) < n:
            await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def to_eof(self, limit):
        """Everything up to the end, or None past limit bytes."""
        try:
            while len(self.buf) <= limit:
                await self._fill()
        except asyncio.IncompleteReadError:
            return bytes(self.buf)
        return None


async def _read_head(reader):
    head = await reader.until(b"\r\n\r\n", MAX_HEAD)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return status, hdrs


async def _read_response(reader, method, path):
    status, hdrs = await _read_head(reader)
    too_big = PluginError(UNAVAILABLE, "", "", f"incus: {method} {path}: the answer is larger than {MAX_BODY} bytes")
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.until(b"\r\n", 1024)).split(b";")[0], 16)
            if len(body) + size > MAX_BODY:
                raise too_big
            body += await reader.readexactly(size + 2)
            del body[len(body) - 2:]
            if size == 0:
                return status, hdrs, bytes(body)
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        if n > MAX_BODY:
            raise too_big
        return status, hdrs, await reader.readexactly(n)
    body = await reader.to_eof(MAX_BODY)
    if body is None:
        raise too_big
    return status, hdrs, body


class WebSocket:
    """A minimal RFC 6455 client: masked frames out, pings answered."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def send(self, opcode, data=b""):
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        try:
            self.writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        except (OSError, asyncssh.Error):
            pass  # the server closed this socket: what it would carry is moot

    async def recv(self):
        """The next data frame as (opcode, payload); (None, b"") once closed."""
        try:
            while True:
                b0, b1 = await self.reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", await self.reader.readexactly(8))[0]
                if n > MAX_BODY:
                    return None, b""
                mask = await self.reader.readexactly(4) if b1 & 0x80 else None
                data = await self.reader.readexactly(n)
                if mask:
                    data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
                op = b0 & 0x0F
                if op == 9:
                    self.send(10, data)
                elif op == 8:
                    return None, b""
                elif op != 10:
                    return op, data
        except (asyncio.IncompleteReadError, OSError, asyncssh.Error):
            return None, b""

    def close(self):
        self.writer.close()
