"""Programs the tests run that pip cannot install (HAProxy, nginx): a pinned Debian package's binary,
fetched with `apt-get download` (no root: nothing is installed) and unpacked with `dpkg-deb -x`
into .cache/debian/<package>-<version>/, once: later runs reuse the folder. Libraries the machine
lacks come from pinned library packages unpacked beside it (LD_LIBRARY_PATH). A system binary of
a compatible version is preferred when one is on PATH.

A test that needs one skips, saying why, only when apt-get/dpkg-deb are missing or Debian's
archive is unreachable; a pinned version the archive no longer has, or a library still missing,
fails the test (the pin must be updated, not silently skipped)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .gateway import ROOT

LIB_DIR = "usr/lib/x86_64-linux-gnu"
UNREACHABLE = re.compile(r"Temporary failure resolving|Could not resolve|Failed to fetch|Could not connect|"
                         r"Connection failed|Network is unreachable")


@dataclass(frozen=True)
class Spec:
    package: str
    version: str  # Debian 12 (bookworm): `apt-cache policy <package>` shows what the archive has
    binary: str  # path inside the package
    libraries: tuple[str, ...] = ()  # "name=version" of library packages the machine may lack
    version_args: tuple[str, ...] = ("-v",)
    compatible: str = ""  # regex a system binary's version output must match to be used instead


SPECS = {
    "haproxy": Spec("haproxy", "2.6.12-1+deb12u3", "usr/sbin/haproxy",
                    ("liblua5.3-0=5.3.6-2", "libopentracing-c-wrapper0=1.1.3-3+b1", "libopentracing1=1.6.0-4"),
                    compatible=r"HAProxy version (2\.[4-9]|2\.\d\d|3\.)"),
    "nginx": Spec("nginx", "1.22.1-9+deb12u9", "usr/sbin/nginx", version_args=("-v",),
                  compatible=r"nginx/1\.(1[89]|2\d)\."),
}


@dataclass
class Tool:
    path: Path
    env: dict[str, str] = field(default_factory=dict)  # LD_LIBRARY_PATH for unpacked libraries

    def command(self, *args: str) -> list[str]:
        return [str(self.path), *args]

    @property
    def full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def _version_output(tool: Tool, spec: Spec) -> str:
    done = subprocess.run(tool.command(*spec.version_args), capture_output=True, text=True, timeout=30,
                          env=tool.full_env)
    return done.stdout + done.stderr


def _system(spec: Spec) -> Tool | None:
    found = shutil.which(spec.package) or (Path("/usr/sbin") / spec.package if
                                           (Path("/usr/sbin") / spec.package).exists() else None)
    if found is None:
        return None
    tool = Tool(Path(found))
    return tool if re.search(spec.compatible, _version_output(tool, spec)) else None


def _missing_libraries(tool: Tool) -> list[str]:
    done = subprocess.run(["ldd", str(tool.path)], capture_output=True, text=True, timeout=30, env=tool.full_env)
    return re.findall(r"^\s*(\S+) => not found", done.stdout, re.M)


def _download(staging: Path, specs: list[str], name: str) -> None:
    done = subprocess.run(["apt-get", "download", *specs], cwd=staging, capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return
    shutil.rmtree(staging, ignore_errors=True)
    if UNREACHABLE.search(done.stderr):
        pytest.skip(f"Debian's archive is unreachable, so {name} cannot be fetched: {done.stderr.strip()[-300:]}")
    pytest.fail(f"apt-get download {' '.join(specs)} failed (is the pin still in `apt-cache policy`? "
                f"run `apt-get update` if the package lists are empty):\n{done.stderr}")


def tool(name: str) -> Tool:
    """The binary of SPECS[name]: the system's when compatible, else the pinned package's, cached."""
    spec = SPECS[name]
    system = _system(spec)
    if system is not None:
        return system
    for needed in ("apt-get", "dpkg-deb", "ldd"):
        if shutil.which(needed) is None:
            pytest.skip(f"{needed} is needed to fetch {name} {spec.version} (a Debian/Ubuntu machine)")
    folder = ROOT / ".cache" / "debian" / f"{spec.package}-{spec.version}"
    found = Tool(folder / spec.binary, {"LD_LIBRARY_PATH": str(folder / LIB_DIR)})
    if not found.path.exists():
        staging = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
        (staging / "debs").mkdir(parents=True)
        _download(staging / "debs", [f"{spec.package}={spec.version}", *spec.libraries], name)
        for deb in sorted((staging / "debs").glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, capture_output=True, timeout=120)
        shutil.rmtree(staging / "debs")
        try:
            staging.rename(folder)  # atomic: a concurrent run that got there first wins, and this copy goes
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    missing = _missing_libraries(found)
    if missing:
        pytest.fail(f"{name} {spec.version} needs libraries this machine lacks: {missing}; "
                    f"add their packages to SPECS[{name!r}].libraries")
    output = _version_output(found, spec)
    if not re.search(spec.compatible, output):
        pytest.fail(f"{found.path} does not run: {output[-500:]}")
    return found
