"""The ``docker`` driver: source and destination in separate containers.

Per cell: a user-defined bridge network, a destination and a source container of the
endpoint image (``containers/Dockerfile``; ``MIGMATRIX_DOCKER_IMAGE`` overrides the name),
both with the cell's temporary directory bind-mounted at ``/run/migmatrix``. Their QMP
monitors are unix sockets in that directory, reached from the host; the source migrates
over TCP to the destination's container name on the network. Containers and the network
are removed when the cell ends, whatever happened in it. The engine is the one the docker
SDK finds (``DOCKER_HOST``; see containers/README.md for starting one here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import uuid
from pathlib import Path
from typing import Any

from ..matrix import Cell, Endpoint
from ..sources import source_digest
from .qmp import LOG_TAIL_LINES, EndpointHandle, Launcher, QMPDriver

__all__ = ["DEFAULT_IMAGE", "DockerDriver", "DockerLauncher", "engine_problem", "source_digest"]

DEFAULT_IMAGE = "migmatrix-endpoint:latest"
MOUNT = "/run/migmatrix"
MIGRATION_PORT = 4444


def image_name() -> str:
    return os.environ.get("MIGMATRIX_DOCKER_IMAGE", DEFAULT_IMAGE)


def engine_problem(image: str | None = None) -> str | None:
    """Why the docker driver cannot run here (no SDK, no engine, no image), or ``None``."""
    try:
        import docker
    except ImportError:
        return "the docker SDK for Python is not installed (pip install 'docker>=7')"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as e:
        host = os.environ.get("DOCKER_HOST", "the default socket")
        return f"no Docker engine at {host} ({type(e).__name__}); see containers/README.md"
    image = image or image_name()
    try:
        labels = client.images.get(image).labels or {}
    except Exception:
        return f"image {image} not built: run containers/build-base.sh and build-endpoint.sh"
    finally:
        client.close()
    if labels.get("migmatrix.source") != source_digest():
        return (f"image {image} was built from other sources than this checkout: "
                "run containers/build-endpoint.sh")
    return None


class ContainerHandle(EndpointHandle):
    def __init__(self, role: str, argv: list[str], container: Any, workdir: Path) -> None:
        self.role = role
        self.argv = argv
        self.container = container
        self.workdir = workdir
        self._code: int | None = None
        self._logs: str | None = None
        self._waiter: asyncio.Future[Any] | None = None

    @property
    def qmp_address(self) -> str:
        return str(self.workdir / f"{self.role}.qmp")

    def exit_code(self) -> int | None:
        if self._code is None and self._waiter is not None and self._waiter.done():
            self._collect()
        return self._code

    def _collect(self) -> None:
        assert self._waiter is not None
        try:
            result = self._waiter.result()
            self._code = int(result.get("StatusCode", -1))
        except Exception:
            self._code = -1

    def start_waiting(self) -> None:
        self._waiter = asyncio.ensure_future(asyncio.to_thread(self.container.wait))

    async def wait_exit(self) -> int:
        assert self._waiter is not None
        await asyncio.shield(self._waiter)
        self._collect()
        assert self._code is not None
        return self._code

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.container.kill()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self._logs is None:
            try:
                self._logs = self.container.logs(tail=lines).decode("utf-8", "replace")
            except Exception as e:
                return f"(logs unavailable: {type(e).__name__}: {e})"
        return self._logs

    def remove(self) -> None:
        if self._logs is None:
            with contextlib.suppress(Exception):
                self._logs = self.container.logs(tail=LOG_TAIL_LINES).decode("utf-8", "replace")
        with contextlib.suppress(Exception):
            self.container.remove(force=True)


class DockerLauncher(Launcher):
    def __init__(self, image: str | None = None) -> None:
        self.image = image or image_name()
        self.client: Any = None  # connected at the first cell: no engine -> error cells
        self.workdir: Path | None = None
        self.network: Any = None
        self.tag = ""
        self.handles: list[ContainerHandle] = []

    async def open_cell(self, cell: Cell, workdir: Path) -> None:
        if self.client is None:
            import docker

            self.client = docker.from_env(timeout=60)
        self.workdir = workdir
        os.chmod(workdir, 0o777)
        self.tag = f"mm-{uuid.uuid4().hex[:10]}"
        self.network = await asyncio.to_thread(
            self.client.networks.create, self.tag, driver="bridge",
            labels={"migmatrix": "cell"})

    async def close_cell(self) -> None:
        for h in self.handles:
            await asyncio.to_thread(h.remove)
        self.handles = []
        if self.network is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.network.remove)
            self.network = None

    def _name(self, role: str) -> str:
        return f"{self.tag}-{role[:3]}"

    async def launch(self, endpoint: Endpoint, role: str, *, incoming: bool,
                     extra_args: list[str]) -> EndpointHandle:
        assert self.workdir is not None
        args = ["--release", endpoint.release, "--machine", endpoint.machine,
                "--ram", str(endpoint.ram_size), "--qmp", f"unix:{MOUNT}/{role}.qmp"]
        if incoming:
            args += ["--incoming", "defer"]
        args += extra_args
        name = self._name(role)
        argv = ["docker", "run", "--name", name, "--network", self.tag,
                "-v", f"{self.workdir}:{MOUNT}", self.image, *args]
        container = await asyncio.to_thread(
            self.client.containers.run, self.image, args, name=name, hostname=name,
            network=self.tag, detach=True, labels={"migmatrix": role},
            volumes={str(self.workdir): {"bind": MOUNT, "mode": "rw"}})
        handle = ContainerHandle(role, [shlex.quote(a) for a in argv], container, self.workdir)
        handle.start_waiting()
        self.handles.append(handle)
        return handle

    def incoming_uri(self, destination: EndpointHandle) -> str:
        return f"tcp:0.0.0.0:{MIGRATION_PORT}"

    def outgoing_uri(self, destination: EndpointHandle,
                     socket_address: list[dict[str, Any]]) -> str:
        port = MIGRATION_PORT
        for addr in socket_address:
            if addr.get("type") == "inet":
                port = int(addr["port"])
        return f"tcp:{self._name(destination.role)}:{port}"

    def endpoint_path(self, handle: EndpointHandle, name: str) -> str:
        return f"{MOUNT}/{name}"


class DockerDriver(QMPDriver):
    name = "docker"

    def __init__(self, *, image: str | None = None, **kwargs: Any) -> None:
        super().__init__(DockerLauncher(image), **kwargs)

    def close(self) -> None:
        launcher = self.launcher
        assert isinstance(launcher, DockerLauncher)
        if launcher.client is not None:
            launcher.client.close()
            launcher.client = None
