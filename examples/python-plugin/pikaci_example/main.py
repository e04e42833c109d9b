"""The plugin process: go-plugin's handshake, automatic mutual TLS, the gRPC
services, and errors as a google.rpc.Status carrying one ErrorDetail
(docs/plugin-authors.md)."""

import asyncio
import base64
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import any_pb2

import executor_pb2 as pb
import executor_pb2_grpc as pbg
import grpc_controller_pb2 as ctl_pb
import grpc_controller_pb2_grpc as ctl_grpc
import grpc_stdio_pb2_grpc as stdio_grpc
from google.rpc import status_pb2

from .contract import CTX_CANCELED, CTX_DEADLINE, PluginError
from .remote import DEADLINE
from .wholejob import WholeJob

COOKIE_KEY, COOKIE = "PIKACI_EXECUTOR_PLUGIN", "5c0d1f6e8a2b4e79b3a1c7d9e0f24a68"
# ErrorKind → gRPC code (docs/plugin-authors.md, "The executor service").
CODES = {1: grpc.StatusCode.INVALID_ARGUMENT, 2: grpc.StatusCode.NOT_FOUND, 3: grpc.StatusCode.ABORTED,
         4: grpc.StatusCode.PERMISSION_DENIED, 5: grpc.StatusCode.UNAVAILABLE}


def log(level, message):
    """One hclog JSON line on stderr; the host forwards it at its level."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    print(json.dumps({"@level": level, "@message": message, "@timestamp": now}), file=sys.stderr, flush=True)


async def fail(context, err):
    """Ends the call with the error's status and its ErrorDetail."""
    if isinstance(err, asyncio.CancelledError):
        err = PluginError(0, "", "", "cancelled", CTX_CANCELED)
    elif not isinstance(err, PluginError):
        log("error", f"unexpected: {err!r}")
        err = PluginError(0, "", "", f"{type(err).__name__}: {err}")
    code = CODES.get(err.kind, grpc.StatusCode.UNKNOWN)
    if err.context == CTX_CANCELED:
        code = grpc.StatusCode.CANCELLED
    elif err.context == CTX_DEADLINE:
        code = grpc.StatusCode.DEADLINE_EXCEEDED
    detail = any_pb2.Any()
    detail.Pack(pb.ErrorDetail(kind=err.kind, field=err.field, value=err.value, context=err.context))
    st = status_pb2.Status(code=code.value[0], message=str(err), details=[detail])
    await context.abort(code, str(err), trailing_metadata=(("grpc-status-details-bin", st.SerializeToString()),))


def with_deadline(context):
    """Makes the call's gRPC deadline the bound of everything it waits for."""
    left = context.time_remaining()
    if left is not None:
        DEADLINE.set(asyncio.get_running_loop().time() + left)


def devices_pb(m):
    return {k: pb.Device(config=v) for k, v in m.items()}


class ExecutorService(pbg.ExecutorServicer):
    def __init__(self, impl, protocol):
        self.impl, self.protocol = impl, protocol

    async def Describe(self, request, context):
        return pb.Info(name="python-example", version="0.1.0", protocol=self.protocol, capabilities=["dry-run"])

    async def Configure(self, request, context):
        self.impl.configure(request.settings)
        return pb.ConfigureResponse()

    async def PrepareDirectories(self, request, context):
        with_deadline(context)
        try:
            cmd, dirs = await self.impl.prepare_directories(request.spec, request.dry_run)
        except BaseException as e:  # noqa: B902 — every error becomes a status
            await fail(context, e)
        return pb.PrepareResult(command=cmd, directories=dirs, dry_run=request.dry_run)

    async def ConfigureDevices(self, request, context):
        with_deadline(context)
        try:
            inst, project, merged, planned, changed, warnings = await self.impl.configure_devices(request.spec, request.dry_run)
        except BaseException as e:  # noqa: B902
            await fail(context, e)
        return pb.DevicesResult(instance=inst, project=project, devices=devices_pb(merged), planned=devices_pb(planned),
                                changed=changed, warnings=warnings, dry_run=request.dry_run)


class WholeJobService(pbg.WholeJobServicer):
    def __init__(self, impl):
        self.impl = impl

    async def _call(self, context, coro):
        with_deadline(context)
        try:
            return await coro
        except BaseException as e:  # noqa: B902
            await fail(context, e)

    async def StageWorkspaceSnapshot(self, request, context):
        return await self._call(context, self.impl.stage(request.job, request.dry_run))

    async def PrepareRuntime(self, request, context):
        return await self._call(context, self.impl.prepare_runtime(request.job, request.dry_run))

    async def RunJob(self, request, context):
        with_deadline(context)
        queue = asyncio.Queue()
        task = asyncio.ensure_future(self.impl.run_job(request.job, queue.put_nowait))
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if get.done():
                    await context.write(pb.RunEvent(output=get.result()))
                    continue
                get.cancel()
                while not queue.empty():
                    await context.write(pb.RunEvent(output=queue.get_nowait()))
                await context.write(pb.RunEvent(result=task.result()))
                return
        except BaseException as e:  # noqa: B902 — cancelled by the host, or the job failed
            if not task.done():
                task.cancel()
                await asyncio.wait({task})  # run_job stops the job before it ends
            await fail(context, e)

    async def CollectArtifacts(self, request, context):
        return await self._call(context, self.impl.collect(request.job))

    async def Cleanup(self, request, context):
        return await self._call(context, self.impl.cleanup(request.job))

    async def Sweep(self, request, context):
        return await self._call(context, self.impl.sweep(request))


class Controller(ctl_grpc.GRPCControllerServicer):
    def __init__(self, stop):
        self.stop = stop

    async def Shutdown(self, request, context):
        self.stop.set()
        return ctl_pb.Empty()


class Stdio(stdio_grpc.GRPCStdioServicer):
    """Nothing is written to stdout after the handshake; the stream stays open."""

    async def StreamStdio(self, request, context):
        await asyncio.Event().wait()
        yield  # never reached: this is an async generator


def self_signed():
    """go-plugin's AutoMTLS server certificate: ECDSA, SAN DNS localhost."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HashiCorp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=30)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                         content_commitment=False, data_encipherment=False, key_agreement=True,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.DER)


async def serve():
    offered = {v.strip() for v in os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "1").split(",")}
    protocol = 2 if "2" in offered else 1
    impl = WholeJob()
    stop = asyncio.Event()
    server = grpc.aio.server()
    pbg.add_ExecutorServicer_to_server(ExecutorService(impl, protocol), server)
    if protocol == 2:
        pbg.add_WholeJobServicer_to_server(WholeJobService(impl), server)
    ctl_grpc.add_GRPCControllerServicer_to_server(Controller(stop), server)
    stdio_grpc.add_GRPCStdioServicer_to_server(Stdio(), server)
    sock_dir = tempfile.mkdtemp(prefix="plugin", dir=os.environ.get("PLUGIN_UNIX_SOCKET_DIR") or None)
    sock = os.path.join(sock_dir, "plugin.sock")
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT", "")
    cert_field = ""
    if client_cert:
        key_pem, cert_pem, cert_der = self_signed()
        creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=client_cert.encode(),
                                            require_client_auth=True)
        server.add_secure_port("unix:" + sock, creds)
        cert_field = base64.b64encode(cert_der).decode().rstrip("=")
    else:
        server.add_insecure_port("unix:" + sock)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await server.start()
        print(f"1|{protocol}|unix|{sock}|grpc|{cert_field}", flush=True)
        log("info", f"python-example serving protocol {protocol} on {sock}")
        await stop.wait()
        await server.stop(grace=1)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def main():
    if os.environ.get(COOKIE_KEY) != COOKIE:
        print("This binary is a pikaci executor plugin: the runner host starts it; it is not run by hand.", file=sys.stderr)
        sys.exit(1)
    # Ctrl-C reaches the whole process group; the host decides when to stop us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(serve())
