"""The ``docker`` driver: source and destination in separate containers.

Per driver (a run, or each worker of ``--jobs N``): one user-defined bridge network and
two containers of the endpoint image (``containers/Dockerfile``; ``MIGMATRIX_DOCKER_IMAGE``
overrides the name), a source and a destination container, both with the run's temporary
directory bind-mounted at ``/run/migmatrix``. Each runs the endpoint fork server
(:mod:`harness.emulator.endpoint.forkserver`) instead of an endpoint: every cell still
gets two fresh endpoint processes, one forked in each container, with the cell's own
directory under the mount, but neither a container start (about 1 s here) nor an
interpreter start is on a cell's path any more. The QMP monitors are unix sockets in the
cell's directory, reached from the host; the destination listens on a port the kernel
picks and the source migrates over TCP to the destination container's name. An endpoint
is killed through its fork server (its pid belongs to the container's namespace); a fork
server that stopped answering is replaced by a fresh container. The containers and the
network are removed when the driver closes or its process exits; a killed run leaves them
to ``containers/start-dockerd.sh``, which removes whatever carries the ``migmatrix``
label. The engine is the one the docker SDK finds (``DOCKER_HOST``; see
containers/README.md for starting one here).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing.util
import os
import shlex
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..matrix import Cell, Endpoint
from ..sources import source_digest
from .processes import ForkedEndpoint, ProcessHandle, fork_endpoint
from .qmp import CONNECT_TIMEOUT, LOG_TAIL_LINES, EndpointHandle, Launcher, QMPDriver

__all__ = ["DEFAULT_IMAGE", "DockerDriver", "DockerLauncher", "engine_problem", "source_digest"]

DEFAULT_IMAGE = "migmatrix-endpoint:latest"
MOUNT = "/run/migmatrix"
ROLES = ("destination", "source")
FORK_SERVER = ["python", "-m", "harness.emulator.endpoint.forkserver"]


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
    """Endpoints forked in two long-lived containers (see the module docstring)."""

    def __init__(self, image: str | None = None) -> None:
        self.image = image or image_name()
        self.client: Any = None  # connected at the first cell: no engine -> error cells
        self.tag = ""
        self.run_dir: Path | None = None  # mounted at MOUNT in both containers
        self.network: Any = None
        self.containers: dict[str, Any] = {}  # role -> its container (a fork server)
        self.names: dict[str, str] = {}  # role -> that container's name and host name
        self._started = 0
        self.workdir: Path | None = None
        self._exit_hooks = False

    def new_workdir(self) -> Path:
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="mm-docker-"))
            os.chmod(self.run_dir, 0o777)  # the containers' user may not be this one
        workdir = Path(tempfile.mkdtemp(prefix="cell-", dir=self.run_dir))
        os.chmod(workdir, 0o777)
        return workdir

    async def open_cell(self, cell: Cell, workdir: Path) -> None:
        self.workdir = workdir
        missing = [role for role in ROLES if role not in self.containers]
        if missing:
            await asyncio.to_thread(self._start_servers, missing)

    async def close_cell(self) -> None:
        self.workdir = None

    def _socket(self, role: str) -> Path:
        assert self.run_dir is not None
        return self.run_dir / f"{role}.fork"

    def _start_servers(self, roles: list[str]) -> None:
        """(Re)start the fork server containers of ``roles``, side by side, and wait
        until each listens."""
        if self.client is None:
            import docker

            self.client = docker.from_env(timeout=60)
            if not self._exit_hooks:  # the driver's process may end without closing it
                atexit.register(self.shutdown)
                # Pool workers leave through multiprocessing's exit, which skips atexit.
                multiprocessing.util.Finalize(self, self.shutdown, exitpriority=10)
                self._exit_hooks = True
        if self.network is None:
            self.tag = f"mm-{uuid.uuid4().hex[:10]}"
            self.network = self.client.networks.create(self.tag, driver="bridge",
                                                       labels={"migmatrix": "run"})
        with ThreadPoolExecutor(len(roles)) as pool:
            list(pool.map(self._start_server, roles))  # raises what a start raised

    def _start_server(self, role: str) -> None:
        assert self.run_dir is not None
        old = self.containers.pop(role, None)
        if old is not None:
            _remove(old)
        sock = self._socket(role)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        # A new name for a replacement: the one it replaces may still be on its way out.
        self._started += 1
        name = self.names[role] = f"{self.tag}-{role[:3]}{self._started}"
        container = self.client.containers.run(
            self.image, [f"{MOUNT}/{sock.name}"], entrypoint=FORK_SERVER, name=name,
            hostname=name, network=self.tag, detach=True, labels={"migmatrix": role},
            volumes={str(self.run_dir): {"bind": MOUNT, "mode": "rw"}},
            auto_remove=True)  # gone by itself once its server ends (its socket removed)
        self.containers[role] = container
        deadline = time.monotonic() + CONNECT_TIMEOUT
        polls = 0
        while not sock.exists():
            polls += 1
            if polls % 50 == 0:  # every half second: has it died meanwhile?
                container.reload()
                if container.status not in ("created", "running"):
                    raise RuntimeError(f"the {role} container ({self.image}) exited: "
                                       f"{self._server_log(role)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {role} container ({self.image}) did not start its "
                                   f"fork server within {CONNECT_TIMEOUT:g} s")
            time.sleep(0.01)

    def _fork(self, role: str, args: list[str], log: Path) -> ForkedEndpoint:
        """An endpoint forked in the container of ``role``; a server that does not answer
        is replaced by a fresh container once."""
        assert self.workdir is not None
        where = f"{MOUNT}/{self.workdir.name}"
        request = {"argv": args, "log": f"{where}/{log.name}", "cwd": where}
        log.write_bytes(b"")
        for attempt in range(2):
            if attempt:
                self._start_servers([role])
            forked = fork_endpoint(str(self._socket(role)), request, remote=True)
            if forked is not None:
                return forked
        raise RuntimeError(f"the fork server of the {role} container does not answer; its "
                           f"output: {self._server_log(role)}")

    async def launch(self, endpoint: Endpoint, role: str, *, incoming: bool,
                     extra_args: list[str]) -> EndpointHandle:
        assert self.workdir is not None and self.run_dir is not None
        where = f"{MOUNT}/{self.workdir.name}"
        args = ["--release", endpoint.release, "--machine", endpoint.machine,
                "--ram", str(endpoint.ram_size), "--qmp", f"unix:{where}/{role}.qmp"]
        if incoming:
            args += ["--incoming", "defer"]
        args += extra_args
        # What it runs as, as one command (it is forked from the container's server).
        argv = ["docker", "run", "--network", self.tag, "-v", f"{self.run_dir}:{MOUNT}",
                self.image, *args]
        log = self.workdir / f"{role}.log"
        forked = await asyncio.to_thread(self._fork, role, args, log)
        return ProcessHandle(role, [shlex.quote(a) for a in argv], forked,
                             str(self.workdir / f"{role}.qmp"), log)

    def incoming_uri(self, destination: EndpointHandle) -> str:
        return "tcp:0.0.0.0:0"  # the port the kernel picks: query-migrate tells it

    def outgoing_uri(self, destination: EndpointHandle,
                     socket_address: list[dict[str, Any]]) -> str:
        for addr in socket_address:
            if addr.get("type") == "inet":
                return f"tcp:{self.names[destination.role]}:{int(addr['port'])}"
        raise RuntimeError(f"the destination reports no listening port ({socket_address})")

    def endpoint_path(self, handle: EndpointHandle, name: str) -> str:
        assert self.workdir is not None
        return f"{MOUNT}/{self.workdir.name}/{name}"

    def _server_log(self, role: str) -> str:
        """The last lines of a fork server container's output."""
        container = self.containers.get(role)
        if container is None:
            return ""
        try:
            return str(container.logs(tail=LOG_TAIL_LINES).decode("utf-8", "replace"))
        except Exception as e:
            return f"(logs unavailable: {type(e).__name__}: {e})"

    def shutdown(self) -> None:
        """Remove the containers (side by side), the network and the run's directory.
        Also at interpreter exit, where an executor no longer takes work: plain threads."""
        containers, self.containers = list(self.containers.values()), {}
        removers = [threading.Thread(target=_remove, args=(c,)) for c in containers]
        for t in removers:
            t.start()
        for t in removers:
            t.join()
        if self.network is not None:
            with contextlib.suppress(Exception):
                self.network.remove()
            self.network = None
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None


def _remove(container: Any) -> None:
    with contextlib.suppress(Exception):
        container.remove(force=True)


class DockerDriver(QMPDriver):
    name = "docker"

    def __init__(self, *, image: str | None = None, **kwargs: Any) -> None:
        super().__init__(DockerLauncher(image), **kwargs)

    def close(self) -> None:
        launcher = self.launcher
        assert isinstance(launcher, DockerLauncher)
        launcher.shutdown()
