"""The audit file format: JSON lines linked by a SHA-256 hash chain.

Every record carries `seq` (1, 2, 3, ... across the whole chain), `prev` (the `hash` of the record
before it; 64 zeros for the first record of a chain) and, as its last member, `hash`: the SHA-256
of the record's own line with the `hash` member left out. Hashing the exact bytes written, rather
than a re-serialization, means the verifier needs no canonical JSON form.

    {"seq":1,"time":"...",...,"prev":"000...000","hash":"4be1..."}
    {"seq":2,"time":"...",...,"prev":"4be1...","hash":"91c0..."}

Editing a record breaks its hash; deleting, inserting or reordering records breaks `seq` or
`prev`. Removing records from the end of a file cannot be seen from the file alone: compare the
last `seq` and `hash` with what the gateway logged when it closed the file."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable

GENESIS = "0" * 64
_HASH_SUFFIX = re.compile(rb',"hash":"([0-9a-f]{64})"\}$')


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a chain stands: the last record's sequence number and hash."""

    seq: int = 0
    hash: str = GENESIS


def seal(record: dict[str, Any], head: ChainHead) -> tuple[bytes, ChainHead]:
    """Serialize `record` as the next line of the chain. Returns the line (with its newline) and
    the new head. `seq` goes first and `prev`/`hash` last, whatever the record holds."""
    seq = head.seq + 1
    body = json.dumps({"seq": seq, **record, "prev": head.hash}, ensure_ascii=True,
                      separators=(",", ":"), allow_nan=False).encode()
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + b',"hash":"' + digest.encode() + b'"}\n', ChainHead(seq, digest)


class BrokenRecord(ValueError):
    """A line that is not an intact record: not JSON, no hash, or content that does not match it."""


def parse_line(line: bytes) -> dict[str, Any]:
    """Check one line (without its newline) against its own hash and return the record."""
    m = _HASH_SUFFIX.search(line)
    if m is None:
        raise BrokenRecord("not an audit record (no hash at the end of the line: truncated or edited)")
    body = line[:m.start()] + b"}"
    if hashlib.sha256(body).hexdigest() != m.group(1).decode():
        raise BrokenRecord("content does not match its hash (the record was edited)")
    try:
        record = json.loads(line)
    except ValueError:
        raise BrokenRecord("not valid JSON") from None
    if not isinstance(record, dict) or type(record.get("seq")) is not int or not isinstance(record.get("prev"), str):
        raise BrokenRecord("record lacks an integer seq or a prev hash")
    return record


def read_head(path: Path) -> tuple[ChainHead, int]:
    """The head of an existing audit file, so that a restarted gateway continues its chain.

    Returns (head, damaged): lines at the end that are not intact records (a write cut short by a
    crash) are counted and skipped, the chain continues from the last intact record, and the
    verifier will report the damaged lines. Raises BrokenRecord if the file holds no record."""
    size = path.stat().st_size
    if size == 0:
        return ChainHead(), 0
    damaged = 0
    with open(path, "rb") as f:
        for line in _lines_backwards(f, size):
            try:
                record = parse_line(line)
            except BrokenRecord:
                damaged += 1
                continue
            return ChainHead(record["seq"], line[-66:-2].decode()), damaged
    raise BrokenRecord(f"{path} is not empty but holds no audit record; refusing to append to it")


def _lines_backwards(f: BinaryIO, size: int, block: int = 64 * 1024) -> Iterable[bytes]:
    pos, tail = size, b""
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step) + tail
        lines = chunk.split(b"\n")
        tail = lines.pop(0)  # may continue in the previous block
        for line in reversed(lines):
            if line:
                yield line
    if tail:
        yield tail


@dataclass(slots=True)
class Verification:
    """The outcome of verifying one or more audit files as a single chain."""

    records: int = 0
    head: ChainHead = ChainHead()
    first_seq: int | None = None
    problem: str | None = None  # the first problem found, with file and line
    file: str | None = None
    line: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(paths: list[Path], *, continued: bool = False) -> Verification:
    """Verify files (in order: oldest rotated file first) as one chain and stop at the first
    problem. With `continued`, the first record may continue a chain whose start is not given
    (a file rotated out earlier); otherwise the chain must start at seq 1."""
    result = Verification()
    expected: ChainHead | None = None if continued else ChainHead()
    for path in paths:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    return _fail(result, path, number, "the last line is incomplete (a write was cut short)")
                try:
                    record = parse_line(line[:-1])
                except BrokenRecord as e:
                    return _fail(result, path, number, str(e))
                seq, prev = record["seq"], record["prev"]
                if expected is None:  # continued: anchor on the first record
                    expected = ChainHead(seq - 1, prev)
                if problem := _link_problem(expected, seq, prev, first_line=number == 1):
                    return _fail(result, path, number, problem)
                if result.first_seq is None:
                    result.first_seq = seq
                expected = ChainHead(seq, line[-67:-3].decode())
                result.records += 1
    result.head = expected or ChainHead()
    return result


def _link_problem(expected: ChainHead, seq: int, prev: str, *, first_line: bool) -> str | None:
    if seq > expected.seq + 1:
        gap = f"seq {expected.seq + 1}" if seq == expected.seq + 2 else f"seq {expected.seq + 1} to {seq - 1}"
        where = "at the start of the file" if first_line else "before this line"
        return f"record seq {seq} follows seq {expected.seq}: {gap} missing {where} (deleted or moved)"
    if seq <= expected.seq:
        return f"record seq {seq} follows seq {expected.seq}: a record is repeated or out of order"
    if prev != expected.hash:
        what = "the chain does not continue the previous file" if first_line else \
            "the previous line was edited, replaced or moved"
        return f"record seq {seq} does not link to the record before it: {what}"
    return None


def _fail(result: Verification, path: Path, line: int, problem: str) -> Verification:
    result.file, result.line = str(path), line
    result.problem = f"{path}:{line}: {problem}"
    return result


def fsync(f: BinaryIO) -> None:
    """Flush Python's buffer and the OS's (a no-op for pipes and terminals)."""
    f.flush()
    try:
        os.fsync(f.fileno())
    except OSError:
        pass  # stdout may be a pipe or a terminal
