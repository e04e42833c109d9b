"""Protocol 1: Describe, Configure, PrepareDirectories, ConfigureDevices
(docs/contract.md, first half)."""

import posixpath
import urllib.parse

from . import contract as c
from .contract import CONFLICT, INVALID, NOT_FOUND, PERMISSION, UNAVAILABLE, PluginError, show
from .remote import Incus, IncusError, Remote

EXT_VIRTIOFS = "disk_io_bus_cache_filesystem"
WARN_NO_VIRTIOFS = "io.bus=virtiofs left out: the server does not list the " + EXT_VIRTIOFS + " API extension"


class Executor:
    def __init__(self):
        self.ssh_config = ""
        self.remotes = {}

    def remote(self, host):
        if c.is_local(host):
            raise PluginError(INVALID, "remote.host", host,
                              f"remote.host {show(host)}: this example plugin runs jobs on remote hosts only")
        if host not in self.remotes:
            self.remotes[host] = Remote(self.ssh_config, host)
        return self.remotes[host]

    def incus(self, spec):
        ep = spec.remote.incus.endpoint
        if ep and not ep.startswith("unix://"):
            raise PluginError(INVALID, "remote.incus.endpoint", ep,
                              f"remote.incus.endpoint {show(ep)}: this example speaks to Incus through a Unix socket only")
        return Incus(self.remote(spec.remote.host), ep[len("unix://"):] if ep else "/var/lib/incus/unix.socket")

    def configure(self, settings):
        self.ssh_config = settings.ssh_config_path
        self.remotes = {}

    # --- PrepareDirectories -------------------------------------------------

    async def prepare_directories(self, spec, dry_run):
        l = c.derive(spec)
        dirs = c.directories(l)
        cmd = c.mkdir_command(dirs)
        if not dry_run:
            await self.remote(spec.remote.host).run(cmd)
        return cmd, dirs

    # --- ConfigureDevices -----------------------------------------------------

    async def plan(self, spec):
        """Validates the job and returns (layout, planned devices without io.bus)."""
        l = check_devices(spec)
        remote = self.remote(spec.remote.host)
        snapshot = {"name": c.snapshot_device_name(l["snapshot_dir"], c.SNAPSHOT_GUEST_PATH), "payload": "",
                    "mount": "snapshot", "source": l["snapshot_dir"], "guest_path": c.SNAPSHOT_GUEST_PATH,
                    "read_only": True, "root": None}
        payloads = l["payloads"] if spec.job.staged else []
        files = []
        for p in payloads:
            f = posixpath.join(p["remote_dir"], c.MANIFEST_PATH)
            try:
                c.check_lengths("manifest", f)
            except PluginError as e:
                raise e.wrap(f"staged payload {show(p['name'])}")
            files.append(f)
        # Batch 1: the snapshot, every payload root and every manifest resolved.
        paths = [l["snapshot_dir"]] + [p["remote_dir"] for p in payloads] + files
        resolved = dict(zip(paths, await resolve(remote, paths)))
        devices, roots = [snapshot], []
        for p in payloads:
            root = p["remote_dir"]
            kind, real = resolved[root]
            if kind != "E":
                raise PluginError(NOT_FOUND, "remote dir", root,
                                  f"staged payload {show(p['name'])}: resolve payload root {root} on the remote host: {root} does not exist")
            if real == "/":
                raise PluginError(PERMISSION, "remote dir", root,
                                  f"staged payload {show(p['name'])}: payload root {root} resolves to {show(real)}: a payload's root may not be the filesystem root")
            roots.append(real)
        for p, f, real_root in zip(payloads, files, roots):
            kind, real = resolved[f]
            if kind == "X":
                raise PluginError(NOT_FOUND, "manifest", f,
                                  f"staged payload {show(p['name'])}: resolve manifest {f} under payload root {real_root}: a component is missing")
            if not c.inside(real, real_root):
                raise PluginError(PERMISSION, "manifest", f,
                                  f"staged payload {show(p['name'])}: manifest {f} resolves to {show(real)}, outside the payload's root {real_root}")
            status, data, _ = await remote.run(f"head -c {c.MAX_MANIFEST_BYTES + 1} -- {c.quote(f)}", check=False)
            if kind != "E" or status != 0:
                raise PluginError(NOT_FOUND, "manifest", f,
                                  f"staged payload {show(p['name'])}: read manifest {f} under payload root {p['remote_dir']}: missing or unreadable")
            for m in c.parse_manifest(data, f, p["name"]):
                rel = m["relative_path"]
                src = p["remote_dir"] if rel in ("", ".") else c.clean(posixpath.join(p["remote_dir"], rel))
                try:
                    c.check_lengths("source", src)
                except PluginError as e:
                    raise e.wrap(f"staged payload {show(p['name'])} mount {show(m['name'])}")
                devices.append({"name": c.payload_device_name(p["name"], m["name"]), "payload": p["name"],
                                "mount": m["name"], "source": src, "guest_path": m["guest_path"],
                                "read_only": m["read_only"], "root": real_root})
        check_unique(devices)
        # Batch 2: the sources below a root.
        more = [d["source"] for d in devices if d["source"] not in resolved]
        more = list(dict.fromkeys(more))
        if more:
            resolved.update(zip(more, await resolve(remote, more)))
        for d in devices:
            kind, real = resolved[d["source"]]
            if kind == "X":
                raise PluginError(NOT_FOUND, "source", d["source"],
                                  f"{who(d)}: resolve source {d['source']} on the remote host: a component is missing")
            if d["payload"] and not c.inside(real, d["root"]):
                raise PluginError(PERMISSION, "relative_path", d["source"],
                                  f"{who(d)}: source {d['source']} resolves to {show(real)}, outside the payload's root {d['root']}: a payload may only share its own contents")
            if kind != "E":
                raise PluginError(NOT_FOUND, "source", d["source"],
                                  f"{who(d)}: source {d['source']} does not exist on the remote host (resolved: {real})")
            d["resolved"] = real
        return l, devices

    async def configure_devices(self, spec, dry_run):
        l, devices = await self.plan(spec)
        inc = self.incus(spec)
        project = spec.remote.incus.project or "default"
        ipath = f"/1.0/instances/{urllib.parse.quote(l['instance'], safe='')}?project={urllib.parse.quote(project)}"
        extensions = await server_extensions(inc)
        for attempt in range(5):
            try:
                _, hdrs, env = await inc.request("GET", ipath)
            except IncusError as e:
                if e.kind == NOT_FOUND:
                    raise PluginError(NOT_FOUND, "instance", l["instance"],
                                      f"instance {show(l['instance'])} not found in project {show(project)}: {e}")
                raise
            inst = env.get("metadata") or {}
            current = inst.get("devices") or {}
            planned, warnings = device_config(devices, inst.get("type") == "virtual-machine", EXT_VIRTIOFS in extensions)
            check_instance(devices, current)
            merged = dict(current)
            merged.update(planned)
            changed = any(current.get(k) != v for k, v in planned.items())
            if dry_run or not changed:
                return l["instance"], project, merged, planned, changed, warnings
            try:
                await inc.request("PATCH", ipath, {"devices": merged}, {"If-Match": hdrs.get("etag", "")})
                return l["instance"], project, merged, planned, changed, warnings
            except IncusError as e:
                if e.status == 412 or (e.status == 500 and "operation" in e.incus_message):
                    continue  # the instance changed since our read: read it again
                raise PluginError(e.kind, "instance", l["instance"], f"update the devices of {show(l['instance'])}: {e}")
            except PluginError as e:
                if getattr(e, "sent", False):
                    raise PluginError(UNAVAILABLE, "instance", l["instance"],
                                      f"update the devices of instance {show(l['instance'])}: {e}; the update may have been applied: "
                                      f"running the same plan again is safe", e.context)
                raise
        raise PluginError(CONFLICT, "instance", l["instance"],
                          f"instance {show(l['instance'])} kept changing under the device update (5 attempts)")


def check_devices(spec):
    l = c.derive(spec)
    if spec.job.writable_workspace:
        raise PluginError(INVALID, "job.writable_workspace", "true",
                          f"job {show(spec.job.id)} asks for a writable workspace: the remote Linux VM executor shares the workspace read-only")
    return l


def who(d):
    if not d["payload"]:
        return "the workspace snapshot"
    return f"staged payload {show(d['payload'])} mount {show(d['mount'])}"


def check_unique(devices):
    names, paths = {}, {}
    for d in devices:
        if d["name"] in names:
            raise PluginError(INVALID, "device", d["name"],
                              f"{who(names[d['name']])} and {who(d)} both map to device name {d['name']}")
        names[d["name"]] = d
        gp = c.clean(d["guest_path"])
        if gp in paths:
            raise PluginError(INVALID, "guest_path", d["guest_path"],
                              f"{who(paths[gp])} and {who(d)} both mount at guest path {d['guest_path']}")
        paths[gp] = d


def check_instance(devices, current):
    """A planned device whose guest path another disk of the instance already uses."""
    planned = {d["name"] for d in devices}
    for d in devices:
        for name in sorted(current):
            cur = current[name]
            if name in planned or cur.get("type") != "disk" or not cur.get("path"):
                continue
            if c.clean(cur["path"]) == c.clean(d["guest_path"]):
                raise PluginError(CONFLICT, "guest_path", d["guest_path"],
                                  f"{who(d)} (device {d['name']}) needs guest path {d['guest_path']}, already used by the instance's disk device {show(name)}")


def device_config(devices, vm, virtiofs):
    out = {}
    for d in devices:
        cfg = {"type": "disk", "source": d["resolved"], "path": d["guest_path"], "shift": "false"}
        if d["read_only"]:
            cfg["readonly"] = "true"
        if vm and virtiofs:
            cfg["io.bus"] = "virtiofs"
        out[d["name"]] = cfg
    return out, ([WARN_NO_VIRTIOFS] if vm and not virtiofs and devices else [])


async def server_extensions(inc):
    _, _, env = await inc.request("GET", "/1.0")
    return set((env.get("metadata") or {}).get("api_extensions") or [])


async def resolve(remote, paths):
    """Each path with every symlink resolved on the remote host, in one command:
    ("E", path) exists, ("M", path) only its last component is missing, ("X", "")
    it cannot be resolved."""
    script = "".join(
        f"if p=$(realpath -- {c.quote(p)} 2>/dev/null); then if test -e \"$p\"; then printf 'E%s\\0' \"$p\"; "
        f"else printf 'M%s\\0' \"$p\"; fi; else printf 'X\\0'; fi; " for p in paths)
    _, out, _ = await remote.run(script)
    recs = out.decode().split("\0")[:-1]
    if len(recs) != len(paths):
        raise PluginError(UNAVAILABLE, "remote.host", remote.alias,
                          f"resolve {len(paths)} paths on {remote.alias}: {len(recs)} answers")
    return [(r[0], r[1:]) for r in recs]
