"""Protocol 2, the whole job: StageWorkspaceSnapshot, PrepareRuntime, RunJob,
CollectArtifacts, Cleanup, Sweep (docs/contract.md, second half)."""

import asyncio
import contextvars
import datetime
import json
import os
import posixpath
import secrets
import stat
import tarfile
import tempfile
import urllib.parse

import executor_pb2 as pb

from . import contract as c
from .contract import CONFLICT, INVALID, NOT_FOUND, UNAVAILABLE, PluginError, show
from .executor import EXT_VIRTIOFS, Executor, device_config, server_extensions
from .remote import DEADLINE, IncusError

MARKER = "pikaci-snapshot.json"
KILL_GRACE, FORCE_STOP_GRACE = 10.0, 5.0   # seconds: SIGTERM → SIGKILL → force stop
FILE_TIMEOUT = 30.0                        # one guest file read
STOP_BOUND = 60.0                          # signals, force stop and the last wait, once started
TRANSFER_TIMEOUT = 3600.0                  # the snapshot's tar stream
LIFECYCLE_TIMEOUT = 600.0                  # an instance's create, start, stop or delete


def no_deadline():
    """A context without the call's deadline: for what must outlive the call (stopping a
    job the host cancelled, waiting for its exec), each with a bound of its own."""
    ctx = contextvars.copy_context()
    ctx.run(DEADLINE.set, None)
    return ctx


def q(s):
    return urllib.parse.quote(s, safe="")


def project_of(spec):
    return spec.remote.incus.project or "default"


def instance_path(spec, name, sub=""):
    return f"/1.0/instances/{q(name)}{sub}?project={q(project_of(spec))}"


class WholeJob(Executor):
    def __init__(self):
        super().__init__()
        self.stage_locks = {}

    # --- StageWorkspaceSnapshot -----------------------------------------------

    async def stage(self, job, dry_run):
        spec = job.spec
        l = c.derive(spec)
        local = spec.host.snapshot_dir
        c.check_abs_clean("host.snapshot_dir", local)
        marker = os.path.join(local, MARKER)
        try:
            with open(marker, "rb") as f:
                h = json.loads(f.read(1 << 20)).get("content_hash", "")
        except (OSError, ValueError, AttributeError) as e:
            raise PluginError(NOT_FOUND, "host.snapshot_dir", local,
                              f"stage snapshot: read the local marker {marker}: {e}")
        given = spec.host.snapshot_content_hash
        if given and given != h:
            raise PluginError(INVALID, "host.snapshot_content_hash", given,
                              f"host.snapshot_content_hash {show(given)} differs from {show(h)} in {marker}")
        remote, dir_ = self.remote(spec.remote.host), l["snapshot_dir"]
        res = pb.StageResult(snapshot_dir=dir_, content_hash=h, dry_run=dry_run)
        lock = self.stage_locks.setdefault((spec.remote.host, dir_), asyncio.Lock())
        async with lock:  # jobs sharing a hash send it once
            if await self.remote_marker(remote, dir_, h) or dry_run:
                res.reused = not dry_run or res.reused
                return res
            res.bytes_sent = await self.transfer(remote, local, dir_)
            if not await self.remote_marker(remote, dir_, h):
                raise PluginError(NOT_FOUND, "snapshot_dir", dir_,
                                  f"snapshot dir {show(dir_)} on {remote.alias} has no {MARKER} after publishing")
        return res

    async def remote_marker(self, remote, dir_, h):
        """True: reuse it. False: send it. A marker of another hash (or of none while
        ours has one) is refused, never overwritten."""
        m = c.quote(posixpath.join(dir_, MARKER))
        _, out, _ = await remote.run(f"if test -f {m}; then echo marker && head -c 1048576 -- {m}; else echo none; fi")
        first, _, rest = out.partition(b"\n")
        if first != b"marker":
            return False
        try:
            remote_hash = json.loads(rest).get("content_hash", "")
        except (ValueError, AttributeError):
            remote_hash = ""
        if remote_hash == h or h == "":
            return True
        raise PluginError(CONFLICT, "snapshot_dir", dir_,
                          f"snapshot dir {show(dir_)} on {remote.alias} holds content_hash {show(remote_hash)}, "
                          f"the local snapshot has {show(h)}: refusing to reuse or overwrite it")

    async def transfer(self, remote, local, dir_):
        """One tar stream into a new sibling, then published by rename."""
        tmp = posixpath.join(posixpath.dirname(dir_), ".pikaci-sync-snapshot-" + secrets.token_hex(8))
        with tempfile.SpooledTemporaryFile(8 << 20) as buf:
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
                add_tree(tar, local)
            size = buf.tell()
            buf.seek(0)
            try:
                await remote.run(f"set -euo pipefail; mkdir -p -- {c.quote(posixpath.dirname(dir_))}; "
                                 f"mkdir -- {c.quote(tmp)}; tar -x -f - -C {c.quote(tmp)}", stdin=buf, timeout=TRANSFER_TIMEOUT)
                await remote.run(f"if test -e {c.quote(dir_)} || test -L {c.quote(dir_)}; then rm -rf -- {c.quote(tmp)}; "
                                 f"else mv -T {c.quote(tmp)} {c.quote(dir_)}; fi")
            except BaseException:
                await asyncio.shield(remote.run(f"rm -rf -- {c.quote(tmp)}", check=False))
                raise
        return size

    # --- PrepareRuntime -------------------------------------------------------

    async def prepare_runtime(self, job, dry_run):
        spec = job.spec
        if not job.HasField("runtime"):
            raise PluginError(INVALID, "runtime", "", f"job {show(spec.job.id)} has no runtime")
        rt = job.runtime
        typ, cpu = rt.instance_type or "virtual-machine", rt.limits.cpu or 2
        memory, ready = rt.limits.memory or "4GiB", rt.ready_timeout_secs or 120
        if not rt.image:
            raise PluginError(INVALID, "runtime.image", "", "runtime.image is empty: name the image alias to create the instance from")
        if typ not in ("virtual-machine", "container"):
            raise PluginError(INVALID, "runtime.instance_type", typ,
                              f'runtime.instance_type {show(typ)}: want "virtual-machine" or "container"')
        c.check_range("runtime.limits.cpu", cpu, 1, 8192, "a number of CPUs")
        c.check_range("runtime.ready_timeout_secs", rt.ready_timeout_secs, 0, 86400, "seconds (0: the default)")
        l, devices = await self.plan(spec)
        inc, project = self.incus(spec), project_of(spec)
        extensions = await server_extensions(inc)
        try:
            _, _, env = await inc.request("GET", f"/1.0/images/aliases/{q(rt.image)}?project={q(project)}")
        except IncusError as e:
            if e.kind != NOT_FOUND:
                raise
            raise PluginError(NOT_FOUND, "runtime.image", rt.image,
                              f"image {show(rt.image)} is not in project {show(project)} on host {show(spec.remote.host)}: "
                              f"import it first (incus image import … --alias {rt.image} --project {project})")
        planned, warnings = device_config(devices, typ == "virtual-machine", EXT_VIRTIOFS in extensions)
        config = {"limits.cpu": str(cpu), "limits.memory": memory, "user.pikaci.run": l["run"],
                  "user.pikaci.job": l["job"],
                  "user.pikaci.created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        profiles = ["default", *rt.profiles]
        res = pb.RuntimeResult(instance=l["instance"], project=project, type=typ, profiles=profiles, config=config,
                               devices={k: pb.Device(config=v) for k, v in planned.items()}, warnings=warnings,
                               dry_run=dry_run,
                               image=pb.Image(project=project, alias=rt.image, fingerprint=env["metadata"].get("target", "")))
        if dry_run:
            return res
        res.stale_deleted = await self.delete_own(spec, l)
        d = c.quote(l["artifacts_dir"])
        await self.remote(spec.remote.host).run(
            f"set -euo pipefail; mkdir -p -- {d}; find {d} -mindepth 1 -maxdepth 1 -exec rm -rf -- {{}} +")
        await inc.call("POST", f"/1.0/instances?project={q(project)}", {
            "name": l["instance"], "type": typ, "source": {"type": "image", "alias": rt.image}, "profiles": profiles,
            "config": config, "devices": planned, "ephemeral": False}, timeout=LIFECYCLE_TIMEOUT)
        await inc.call("PUT", instance_path(spec, l["instance"], "/state"), {"action": "start"}, timeout=LIFECYCLE_TIMEOUT)
        await self.wait_ready(inc, spec, l["instance"], ready)
        return res

    async def wait_ready(self, inc, spec, name, limit):
        loop = asyncio.get_running_loop()
        end, delay, last = loop.time() + limit, 0.1, None
        while True:
            try:
                code = await asyncio.wait_for(Exec(inc, spec, name, ["true"], {}, None, 0, 0).run(), max(0.1, end - loop.time()))
                if code == 0:
                    return
                last = f"`true` exited {code}"
            except (PluginError, asyncio.TimeoutError) as e:
                last = str(e) or "timed out"
            if loop.time() + delay > end:
                raise PluginError(UNAVAILABLE, "runtime.ready_timeout_secs", str(limit),
                                  f"instance {show(name)} did not accept an exec within runtime.ready_timeout_secs "
                                  f"({limit}s): last attempt: {last}")
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)

    async def delete_own(self, spec, l):
        """Force-deletes the job's instance when its labels are this job's."""
        inc, name = self.incus(spec), l["instance"]
        try:
            _, _, env = await inc.request("GET", instance_path(spec, name))
        except IncusError as e:
            if e.kind == NOT_FOUND:
                return False
            raise
        cfg = (env.get("metadata") or {}).get("config") or {}
        got = (cfg.get("user.pikaci.run"), cfg.get("user.pikaci.job"))
        if got != (l["run"], l["job"]):
            shown = [show(v) if v is not None else "(missing)" for v in got]
            raise PluginError(CONFLICT, "instance", name,
                              f"instance {show(name)} is not this job's: its labels are user.pikaci.run={shown[0]} "
                              f"user.pikaci.job={shown[1]}, this job's user.pikaci.run={show(l['run'])} "
                              f"user.pikaci.job={show(l['job'])}; it is left alone")
        return await self.force_delete(inc, spec, name)

    async def force_delete(self, inc, spec, name):
        try:
            await inc.call("PUT", instance_path(spec, name, "/state"), {"action": "stop", "force": True},
                           timeout=LIFECYCLE_TIMEOUT)
        except IncusError as e:
            if e.kind == NOT_FOUND:
                return False
            if "already stopped" not in e.incus_message and "not running" not in e.incus_message:
                raise
        try:
            await inc.call("DELETE", instance_path(spec, name), timeout=LIFECYCLE_TIMEOUT)
        except IncusError as e:
            if e.kind == NOT_FOUND:
                return False
            raise
        return True

    # --- RunJob ---------------------------------------------------------------

    async def run_job(self, job, emit):
        spec = job.spec
        if not job.HasField("command"):
            raise PluginError(INVALID, "command", "", f"job {show(spec.job.id)} has no command")
        cmd = job.command
        cwd = cmd.cwd or "/workspace/snapshot"
        if not cmd.argv or not cmd.argv[0]:
            raise PluginError(INVALID, "command.argv", "", "command.argv is empty: name the job's program")
        if not cwd.startswith("/"):
            raise PluginError(INVALID, "command.cwd", cwd, f"command.cwd {show(cwd)}: want an absolute guest path")
        c.check_range("command.user", cmd.user, 0, 4294967294, "a uid")
        c.check_range("command.timeout_secs", cmd.timeout_secs, 0, 604800, "seconds (0 means no limit)")
        l = c.derive(spec)
        inc, name = self.incus(spec), l["instance"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cmd.timeout_secs if cmd.timeout_secs else None
        await self.check_cwd(inc, spec, name, cwd)
        env, gid = dict(cmd.env), cmd.user
        if cmd.user != 0:
            gid = await self.user_env(inc, spec, name, cmd.user, env)
        ex = Exec(inc, spec, name, list(cmd.argv), env, cwd, cmd.user, gid, emit)
        await ex.start()
        timed_out = False
        try:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            done = await ex.wait_main(left)
            if not done:
                timed_out = True
                await asyncio.wait_for(ex.terminate(), STOP_BOUND)
            elif not await ex.wait_done(FORCE_STOP_GRACE):
                # The main process is gone; a child still holds the output open.
                await asyncio.wait_for(ex.force_stop(), STOP_BOUND)
            code = await asyncio.wait_for(ex.exit_code(), STOP_BOUND)
        except asyncio.CancelledError:
            # The host cancelled the call: stop the job before returning.
            stopper = asyncio.get_running_loop().create_task(asyncio.wait_for(ex.terminate(), STOP_BOUND),
                                                             context=no_deadline())
            await asyncio.wait({stopper})
            raise
        finally:
            ex.close()
        return pb.RunResult(exit_code=code, timed_out=timed_out, timeout_secs=cmd.timeout_secs)

    async def guest_file(self, inc, spec, name, path):
        """(type, headers, body) of a guest path through the file API, in FILE_TIMEOUT."""
        try:
            _, hdrs, body = await inc.request("GET", instance_path(spec, name, "/files") + f"&path={q(path)}",
                                              timeout=FILE_TIMEOUT, raw=True)
        except PluginError as e:
            if isinstance(e, IncusError):
                raise
            raise PluginError(UNAVAILABLE, "path", path, f"read {show(path)} in the guest: {e}")
        typ = hdrs.get("x-incus-type") or hdrs.get("x-lxd-type", "")
        return typ, hdrs, body

    async def check_cwd(self, inc, spec, name, cwd):
        p = cwd
        for _ in range(40):
            try:
                typ, _, body = await self.guest_file(inc, spec, name, p)
            except IncusError as e:
                if e.kind == NOT_FOUND:
                    raise PluginError(NOT_FOUND, "command.cwd", cwd, f"command.cwd {show(cwd)} does not exist in the guest")
                raise
            if typ == "directory":
                return
            if typ != "symlink":
                raise PluginError(INVALID, "command.cwd", cwd, f"command.cwd {show(cwd)} is a {typ} in the guest, not a directory")
            p = body.decode()
        raise PluginError(INVALID, "command.cwd", cwd, f"command.cwd {show(cwd)}: more than 40 symlinks")

    async def user_env(self, inc, spec, name, uid, env):
        """HOME and USER from the guest's /etc/passwd, and the user's primary gid."""
        try:
            typ, _, body = await self.guest_file(inc, spec, name, "/etc/passwd")
        except IncusError as e:
            if e.kind == NOT_FOUND:
                return uid
            raise
        for line in body.decode(errors="replace").splitlines():
            f = line.split(":")
            if len(f) >= 7 and f[2] == str(uid):
                if f[5]:
                    env.setdefault("HOME", f[5])
                if f[0]:
                    env.setdefault("USER", f[0])
                return int(f[3]) if f[3].isdigit() else uid
        return uid

    # --- CollectArtifacts -------------------------------------------------------

    async def collect(self, job):
        spec = job.spec
        l = c.derive(spec)
        src = job.artifacts.path or "/run/pika-cloud/artifacts"
        cap = job.artifacts.max_bytes or (1 << 30)
        c.check_range("artifacts.max_bytes", cap, 1, 1 << 50, "bytes")
        dest = os.path.join(spec.host.job_dir, "artifacts")
        if os.path.islink(dest):
            raise PluginError(INVALID, "host.job_dir", spec.host.job_dir, f"{dest} is a symlink: refusing to write through it")
        os.makedirs(dest, exist_ok=True)
        res = pb.CollectResult(dir=dest)
        inc = self.incus(spec)
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            await self.copy_dir(inc, spec, l["instance"], src, src, fd, cap, res, first=True)
        finally:
            os.close(fd)
        return res

    async def copy_dir(self, inc, spec, name, root, path, dirfd, cap, res, first=False):
        try:
            typ, hdrs, body = await self.guest_file(inc, spec, name, path)
        except IncusError as e:
            if e.kind == NOT_FOUND and first:
                return  # no artifacts directory: nothing to collect
            raise PluginError(e.kind, "artifacts.path", path, f"collect artifacts: {e}")
        if typ != "directory":
            raise PluginError(INVALID, "artifacts.path", path, f"collect artifacts: {show(path)} is a {typ}, not a directory")
        names = sorted((json.loads(body).get("metadata") or []))
        for n in names:
            child = posixpath.join(path, n)
            if not n or "/" in n or n in (".", ".."):
                res.warnings.append(f"skipped {show(child)}: not a plain file name")
                continue
            typ, hdrs, body = await self.guest_file(inc, spec, name, child)
            if typ == "directory":
                try:
                    os.mkdir(n, 0o755, dir_fd=dirfd)
                except FileExistsError:
                    pass
                sub = os.open(n, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
                try:
                    await self.copy_dir(inc, spec, name, root, child, sub, cap, res)
                finally:
                    os.close(sub)
            elif typ == "symlink":
                # The file API answers the link's target resolved to an absolute guest path.
                target = body.decode()
                if not c.inside(target, root):
                    res.warnings.append(f"skipped symlink {show(child)} -> {show(target)}: it leads out of the artifacts directory")
                    continue
                os.symlink(posixpath.relpath(target, posixpath.dirname(child)), n, dir_fd=dirfd)
            elif typ == "file":
                if res.bytes + len(body) > cap:
                    raise PluginError(INVALID, "artifacts.max_bytes", str(cap),
                                      f"collect artifacts: {show(child)} ({len(body)} bytes) would take the total past "
                                      f"artifacts.max_bytes {cap}; what was copied before it is kept")
                mode = int(hdrs.get("x-incus-mode") or hdrs.get("x-lxd-mode") or "644", 8) & 0o777
                f = os.open(n, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dirfd)
                try:
                    os.write(f, body)
                    os.fchmod(f, mode)
                finally:
                    os.close(f)
                res.files += 1
                res.bytes += len(body)
            else:
                res.warnings.append(f"skipped {show(child)}: a {typ or 'special file'}")

    # --- Cleanup, Sweep -----------------------------------------------------------

    async def cleanup(self, job):
        l = c.derive(job.spec)
        return pb.CleanupResult(instance=l["instance"], deleted=await self.delete_own(job.spec, l))

    async def sweep(self, req):
        fake = pb.JobSpec(remote=req.remote)
        inc = self.incus(fake)
        _, _, env = await inc.request("GET", f"/1.0/instances?recursion=1&project={q(project_of(fake))}")
        now = datetime.datetime.now(datetime.timezone.utc)
        live, res = set(req.live), pb.SweepResult(dry_run=req.dry_run)
        for inst in env.get("metadata") or []:
            cfg = inst.get("config") or {}
            run, job, created = cfg.get("user.pikaci.run"), cfg.get("user.pikaci.job", ""), cfg.get("user.pikaci.created")
            try:
                born = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
            except (AttributeError, ValueError):
                continue
            if run is None or f"{run}:{job}" in live or (now - born).total_seconds() * 1e9 <= req.older_than_ns:
                continue
            if not req.dry_run:
                await self.force_delete(inc, fake, inst["name"])
            res.deleted.append(inst["name"])
        return res


def add_tree(tar, local):
    """Directories, regular files (permission bits only) and symlinks; anything
    else is refused naming its path."""
    for dirpath, dirnames, filenames in os.walk(local):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, local)
            st = os.lstat(full)
            info = tarfile.TarInfo(rel)
            info.mtime, info.mode = int(st.st_mtime), st.st_mode & 0o777
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
                tar.addfile(info)
            else:
                raise PluginError(INVALID, "host.snapshot_dir", rel,
                                  f"snapshot entry {show(rel)} is neither a directory, a regular file nor a symlink: refused")


class Exec:
    """One command in the guest through the exec API and its four websockets."""

    def __init__(self, inc, spec, name, argv, env, cwd, uid, gid, emit=None):
        self.inc, self.spec, self.name = inc, spec, name
        self.body = {"command": argv, "environment": env, "wait-for-websocket": True, "interactive": False,
                     "record-output": False, "user": uid, "group": gid}
        if cwd:
            self.body["cwd"] = cwd
        self.emit = emit
        self.socks, self.tasks = [], []

    async def run(self):
        await self.start()
        try:
            await self.wait_main(None)
            await self.wait_done(None)
            return await self.exit_code()
        finally:
            self.close()

    async def start(self):
        _, _, env = await self.inc.request("POST", instance_path(self.spec, self.name, "/exec"), self.body)
        self.op = env["operation"]
        md = env["metadata"]
        fds = md["metadata"]["fds"]
        # Control first; the command starts once 0, 1 and 2 are connected, and a
        # command that ends at once refuses any socket connected after that.
        self.control = await self.inc.websocket(md["id"], fds["control"])
        self.socks.append(self.control)
        stdin, out, err = await asyncio.gather(*(self.inc.websocket(md["id"], fds[k]) for k in "012"))
        self.socks += [stdin, out, err]
        stdin.send(1, b"")  # an empty text message: stdin is at its end
        self.op_task = asyncio.get_running_loop().create_task(self.inc.wait(self.op, timeout=365 * 86400),
                                                              context=no_deadline())
        self.control_task = asyncio.ensure_future(self.control.recv())
        self.out_tasks = [asyncio.ensure_future(self.copy(out, pb.STREAM_STDOUT)),
                          asyncio.ensure_future(self.copy(err, pb.STREAM_STDERR))]
        self.tasks = [self.op_task, self.control_task, *self.out_tasks]

    async def copy(self, ws, stream):
        while True:
            op, data = await ws.recv()
            if op is None or (op == 1 and not data):
                return
            if data and self.emit:
                self.emit(pb.OutputChunk(stream=stream, data=data))

    async def wait_main(self, timeout):
        """True once the main process exited (control closed or the operation ended)."""
        done, _ = await asyncio.wait({self.op_task, self.control_task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        return bool(done)

    async def wait_done(self, timeout):
        done, pending = await asyncio.wait({self.op_task, *self.out_tasks}, timeout=timeout)
        return not pending

    async def signal(self, sig):
        self.control.send(1, json.dumps({"command": "signal", "signal": sig}).encode())

    async def terminate(self):
        if not await self.wait_main(0):
            await self.signal(15)
            if await self.wait_done(KILL_GRACE):
                return
            await self.signal(9)
        if await self.wait_done(FORCE_STOP_GRACE):
            return
        await self.force_stop()

    async def force_stop(self):
        try:
            await self.inc.call("PUT", instance_path(self.spec, self.name, "/state"), {"action": "stop", "force": True})
        except PluginError:
            pass
        await self.wait_done(STOP_BOUND)

    async def exit_code(self):
        md = await self.op_task
        code = (md.get("metadata") or {}).get("return")
        if code is None:
            raise PluginError(UNAVAILABLE, "instance", self.name, f"exec in instance {show(self.name)}: no exit code")
        return code

    def close(self):
        for t in self.tasks:
            t.cancel()
        for s in self.socks:
            s.close()
