"""npm packages the tests run (the official TypeScript SDK, the MCP conformance suite), installed
with `npm ci` from a lock file committed under tests/ into .cache/<name>-<lock hash>/, once: later
runs reuse the folder. Tests that need one skip, saying why, only when node or npm is missing."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from .gateway import ROOT


def installed(spec: Path, name: str, marker: str, *, ignore_scripts: bool = True) -> Path:
    """The folder holding node_modules for spec/package.json and spec/package-lock.json. `marker`
    is a path inside node_modules that exists once the install is complete."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(f"node and npm are needed for {name} (Node >= 18; these machines have 20)")
    digest = hashlib.sha256((spec / "package-lock.json").read_bytes() + (spec / "package.json").read_bytes())
    folder = ROOT / ".cache" / f"{name}-{digest.hexdigest()[:16]}"
    if (folder / "node_modules" / marker).exists():
        return folder
    staging = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    for file in ("package.json", "package-lock.json"):
        shutil.copy(spec / file, staging / file)
    command = ["npm", "ci", "--no-audit", "--no-fund", *(["--ignore-scripts"] if ignore_scripts else [])]
    done = subprocess.run(command, cwd=staging, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not (staging / "node_modules" / marker).exists():
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"npm ci for {name} failed:\n{done.stdout}\n{done.stderr}")
    try:
        staging.rename(folder)  # atomic: a concurrent run that got there first wins, and this copy goes
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
