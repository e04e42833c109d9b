"""The contract's pure parts: validation, the remote layout, quoting, device names
and payload manifests (docs/contract.md). No I/O here."""

import hashlib
import json
import posixpath
import unicodedata

# Error kinds, as in ErrorDetail.kind (shared/executorpb/executor.proto).
INVALID, NOT_FOUND, CONFLICT, PERMISSION, UNAVAILABLE = 1, 2, 3, 4, 5
CTX_CANCELED, CTX_DEADLINE = 1, 2


class PluginError(Exception):
    """An error the host rebuilds from its ErrorDetail: kind, field, value."""

    def __init__(self, kind, field, value, message, context=0):
        super().__init__(message)
        self.kind, self.field, self.value, self.context = kind, field, value, context

    def wrap(self, prefix):
        """The same error with "prefix: " in front of its message."""
        return PluginError(self.kind, self.field, self.value, f"{prefix}: {self}", self.context)


MAX_COMPONENT, MAX_PATH = 255, 4095


def is_control(ch):
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F or o in (0x200E, 0x200F) or 0x202A <= o <= 0x202E or 0x2066 <= o <= 0x2069


def _go_quote(s):
    """Go's strconv.Quote for a valid UTF-8 string (docs/contract.md, "Quoting")."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == " " or (unicodedata.category(ch)[0] in "LMNPS"):
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        elif o < 0x10000:
            out.append("\\u%04x" % o)
        else:
            out.append("\\U%08x" % o)
    out.append('"')
    return "".join(out)


def show(v):
    """A value in an error message: in double quotes as is, or Go-quoted when it
    holds a control character."""
    if any(is_control(c) for c in v):
        return _go_quote(v)
    return '"' + v + '"'


def quote(s):
    """One POSIX shell word: '...' with every ' written as '"'"'."""
    return "'" + s.replace("'", "'\"'\"'") + "'"


def _blen(s):
    return len(s.encode())


def check_abs_clean(field, p):
    if p == "":
        raise PluginError(INVALID, field, p, f"{field} is empty")
    if "\0" in p:
        raise PluginError(INVALID, field, p, f"{field} {show(p)} contains a NUL byte")
    if not p.startswith("/"):
        raise PluginError(INVALID, field, p, f"{field} {show(p)} is not absolute")
    if posixpath.normpath(p) != p or p.startswith("//"):
        raise PluginError(INVALID, field, p,
                          f'{field} {show(p)} is not clean (empty, "." or ".." component, or trailing slash)')


def check_component(field, v):
    if v == "":
        raise PluginError(INVALID, field, v, f"{field} is empty")
    if v in (".", ".."):
        raise PluginError(INVALID, field, v, f"{field} {show(v)} is not a valid path component")
    if "/" in v:
        raise PluginError(INVALID, field, v, f'{field} {show(v)} contains "/": it must be one path component')
    if any(is_control(c) for c in v):
        raise PluginError(INVALID, field, v,
                          f"{field} {show(v)} contains a control character (C0, C1 or bidi formatting)")
    if _blen(v) > MAX_COMPONENT:
        raise PluginError(INVALID, field, v,
                          f"{field} {show(v)} is {_blen(v)} bytes long: a path component is at most {MAX_COMPONENT} bytes")


def check_lengths(field, p):
    if _blen(p) > MAX_PATH:
        raise PluginError(INVALID, field, p, f"{field} {show(p)} is {_blen(p)} bytes long: a path is at most {MAX_PATH} bytes")
    for c in p.split("/"):
        if _blen(c) > MAX_COMPONENT:
            raise PluginError(INVALID, field, p,
                              f"{field} {show(p)} has a component of {_blen(c)} bytes: a path component is at most {MAX_COMPONENT} bytes")


def check_range(field, v, lo, hi, what):
    """Refuses v outside [lo, hi] (docs/contract.md, "Ranges")."""
    if not lo <= v <= hi:
        raise PluginError(INVALID, field, str(v), f"{field} {v} is out of range: {what} from {lo} to {hi}")


def is_local(host):
    return host in ("localhost", "127.0.0.1", "::1")


JOB_DIR_SHAPE = "<root>/<run id>/jobs/<job>"


def derive(spec):
    """Validates a JobSpec (protobuf) and returns its remote layout as a dict."""
    job_dir, work = spec.host.job_dir, spec.remote.work_dir
    check_abs_clean("host.job_dir", job_dir)
    check_abs_clean("remote.work_dir", work)
    grand = posixpath.dirname(posixpath.dirname(job_dir))
    if grand == "/":
        raise PluginError(INVALID, "host.job_dir", job_dir,
                          f"host.job_dir {show(job_dir)} has no run id: its grandparent is / (a job dir is shaped {JOB_DIR_SHAPE})")
    parent = posixpath.basename(posixpath.dirname(job_dir))
    if parent != "jobs":
        raise PluginError(INVALID, "host.job_dir", job_dir,
                          f"host.job_dir {show(job_dir)} is not shaped {JOB_DIR_SHAPE}: its parent is {show(parent)}, not \"jobs\", so it names no run id")
    run = posixpath.basename(grand)
    try:
        check_component("run id", run)
    except PluginError as e:
        raise PluginError(INVALID, "host.job_dir", job_dir, f"host.job_dir {show(job_dir)}: {e}")
    check_component("job.id", spec.job.id)
    h = spec.host.snapshot_content_hash
    if h:
        check_component("host.snapshot_content_hash", h)
    if not spec.remote.host:
        raise PluginError(INVALID, "remote.host", "", "remote.host is empty")
    if spec.remote.incus.HasField("cluster") or spec.remote.member:
        raise PluginError(INVALID, "remote.incus.cluster", "",
                          "remote.incus.cluster: this example plugin runs jobs on single hosts only, not on clusters")
    l = {"run": run, "job": spec.job.id, "work": work, "local_job_dir": job_dir,
         "local": is_local(spec.remote.host)}
    l["run_dir"] = f"{work}/runs/{run}" if work != "/" else f"/runs/{run}"
    l["job_dir"] = f"{l['run_dir']}/jobs/{spec.job.id}"
    l["vm_dir"] = l["job_dir"] + "/vm"
    l["artifacts_dir"] = l["job_dir"] + "/artifacts"
    l["cache"] = [posixpath.join(work, "cache", "cargo-home"), posixpath.join(work, "cache", "cargo-target")]
    if spec.job.staged and h:
        l["snapshot_dir"] = posixpath.join(work, "snapshots", h, "snapshot")
    else:
        l["snapshot_dir"] = l["run_dir"] + "/snapshot"
    l["instance"] = "pikaci-" + hashlib.sha256(f"{run}:{spec.job.id}".encode()).hexdigest()[:12]
    l["payloads"] = []
    prefix = job_dir + "/" if job_dir != "/" else "/"
    for i, p in enumerate(spec.host.staged_payloads):
        check_component(f"host.staged_payloads[{i}].name", p.name)
        field = f"host.staged_payloads[{i}].local_dir"
        check_abs_clean(field, p.local_dir)
        if not p.local_dir.startswith(prefix) or len(p.local_dir) == len(prefix):
            raise PluginError(INVALID, field, p.local_dir,
                              f"{field} {show(p.local_dir)} is not inside the job dir {show(job_dir)}")
        rel = p.local_dir[len(prefix):]
        l["payloads"].append({"name": p.name, "local_dir": p.local_dir, "remote_dir": l["job_dir"] + "/" + rel})
    checks = [("host.job_dir", job_dir), ("remote.work_dir", work), ("remote job dir", l["job_dir"]),
              ("remote snapshot dir", l["snapshot_dir"]), ("remote vm dir", l["vm_dir"]),
              ("remote artifacts dir", l["artifacts_dir"])]
    for i, p in enumerate(l["payloads"]):
        checks += [(f"host.staged_payloads[{i}].local_dir", p["local_dir"]),
                   (f"remote dir of host.staged_payloads[{i}].name", p["remote_dir"])]
    for field, p in checks:
        check_lengths(field, p)
    return l


def directories(l):
    return [l["job_dir"], posixpath.dirname(l["snapshot_dir"]), l["vm_dir"], l["artifacts_dir"],
            *l["cache"], *(p["remote_dir"] for p in l["payloads"])]


def mkdir_command(dirs):
    return "set -euo pipefail; mkdir -p" + "".join(" " + quote(d) for d in dirs)


# Device names (docs/contract.md, ConfigureDevices 2 and 3).
SNAPSHOT_GUEST_PATH = "/workspace/snapshot"


def sanitize(s):
    """ASCII letters and digits lower-cased, every other character (not byte:
    one "-" per Unicode character) "-", "-" trimmed at both ends."""
    return "".join(c.lower() if c.isascii() and c.isalnum() else "-" for c in s).strip("-")


def snapshot_device_name(source, guest_path):
    h = 0xCBF29CE484222325
    for b in ("snapshot-" + sanitize(source) + "-" + sanitize(guest_path)).encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "pk-snapsh-%08x" % (h & 0xFFFFFFFF)


def payload_device_name(payload, mount):
    p = sanitize(payload)
    long = "pk-" + p + "-" + sanitize(mount)
    if len(long) <= 20:
        return long
    return "pk-" + p[:8] + "-" + hashlib.sha256(long.encode()).hexdigest()[:8]


# Payload manifests (docs/contract.md, ConfigureDevices 3).
MANIFEST_PATH = "share/pikaci/payload-manifest.json"
MAX_MANIFEST_BYTES, MAX_MOUNTS = 1 << 20, 256
_TOP_KEYS = {"schema_version", "kind", "mounts", "entrypoints", "asset_roots"}
_MOUNT_KEYS = {"name", "relative_path", "guest_path", "read_only"}


def _no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {json.dumps(k)}")
        seen[k] = v
    return seen


def _case_variants(obj, known, where):
    for k in obj:
        if k not in known and k.lower() in {x.lower() for x in known}:
            raise ValueError(f"key {json.dumps(k)}{where} differs from a known key only in letter case")


def parse_manifest(data, file, payload):
    who = f"staged payload {show(payload)}: manifest {file}"
    if len(data) > MAX_MANIFEST_BYTES:
        raise PluginError(INVALID, "manifest", file, f"{who} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        m = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
        _case_variants(m, _TOP_KEYS, "")
        mounts = m.get("mounts") or []
        if not isinstance(mounts, list) or not all(isinstance(x, dict) for x in mounts):
            raise ValueError("mounts is not a list of objects")
        for i, mt in enumerate(mounts):
            _case_variants(mt, _MOUNT_KEYS, f" in mounts[{i}]")
            for k, typ in (("name", str), ("relative_path", str), ("guest_path", str), ("read_only", bool)):
                if k in mt and mt[k] is not None and not isinstance(mt[k], typ):
                    raise ValueError(f"mounts[{i}].{k} has the wrong type")
        version = m.get("schema_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError("schema_version is not a number")
    except (ValueError, UnicodeDecodeError) as e:
        raise PluginError(INVALID, "manifest", file, f"{who} is not valid JSON: {e}")
    if len(mounts) > MAX_MOUNTS:
        raise PluginError(INVALID, "mounts", file, f"{who} declares {len(mounts)} mounts, more than {MAX_MOUNTS}")
    if version != 1:
        raise PluginError(INVALID, "schema_version", file, f"{who} has schema_version {version}, want 1")
    out = []
    for i, mt in enumerate(mounts):
        out.append(_check_mount(payload, i, mt.get("name") or "", mt.get("relative_path") or "",
                                mt.get("guest_path") or "", bool(mt.get("read_only"))))
    return out


def _check_mount(payload, i, name, rel, guest, ro):
    who = f"staged payload {show(payload)} mount {show(name)} (mounts[{i}])"
    ctl = lambda s: any(is_control(c) for c in s)  # noqa: E731
    if name.strip() == "":
        raise PluginError(INVALID, "name", name, f"{who}: name is blank")
    if ctl(name):
        raise PluginError(INVALID, "name", name, f"{who}: name contains a control character")
    for field, v, absolute in (("relative_path", rel, False), ("guest_path", guest, True)):
        if ctl(v):
            raise PluginError(INVALID, field, v, f"{who}: {field} {show(v)} contains a control character")
        if v.startswith("/") != absolute:
            raise PluginError(INVALID, field, v, f"{who}: {field} {show(v)} is not {'absolute' if absolute else 'relative'}")
        if ".." in v.split("/"):
            raise PluginError(INVALID, field, v, f'{who}: {field} {show(v)} has a ".." component')
        try:
            check_lengths(field, v)
        except PluginError as e:
            raise e.wrap(who)
    return {"name": name, "relative_path": rel, "guest_path": guest, "read_only": ro}


def inside(p, root):
    if p == root or root == "/":
        return p.startswith("/")
    return p.startswith(root + "/")


def clean(p):
    return posixpath.normpath(p) if p else p
