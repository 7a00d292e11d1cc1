"""Device signatures verified in batches, in worker processes beside the controller.

A poll of 10k devices verifies 10k BIP340 signatures (~40 us of CPU each). In threads of the controller's
own process each verification hands the GIL back and forth, and the thread waits for the GIL after every
one while the thread reading the replies holds it (up to the switch interval: 5 ms by default): measured,
the signed poll of 10k devices took 2.6-3.7x the unauthenticated one on 2 cores. Here the controller sends
each batch to a worker process as plain bytes and reads the answers when they are ready: the replies keep
arriving and being checked on one thread while another core verifies.

A record is the enrolled key (32 bytes, x-only), the signature (64 bytes) and the digest it signs (32 bytes:
SHA-256 of the domain tag and the document bytes exactly as they arrived, computed by the controller); the
answer is one byte per record, 1 if the signature verifies. Nothing is cached but parsed public keys (by
their 32 bytes): every record is verified. A worker that dies, hangs (10 s) or answers wrongly is killed and
its batches are verified in the controller's own process: a failure never lets a message through.

Run as ``python -m openmos.fleet.sigworker`` (by ``SignatureWorkers``): requests on stdin, answers on stdout.
Imports ``coincurve`` and ``envelope`` only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO

from coincurve import PublicKeyXOnly

from openmos.fleet.envelope import DOMAIN

log = logging.getLogger(__name__)

RECORD = 128  # 32-byte x-only key | 64-byte signature | 32-byte digest
MAX_BATCH = 4096  # records per request (512 KiB)
MAX_KEYS = 200_000  # parsed public keys a worker keeps (by their bytes)
ANSWER_TIMEOUT_S = 10.0  # a worker silent this long is taken for hung: killed, its batches verified here
RESTART_AFTER_S = 60.0  # a worker that failed is not started again before this


def record(key: bytes, signature: bytes, document: bytes) -> bytes:
    """The record asking whether ``signature`` is ``key``'s over ``document`` (as ``envelope.verify_bytes``)."""
    return key + signature + hashlib.sha256(DOMAIN + document).digest()


def verify_records(records: bytes, keys: dict[bytes, PublicKeyXOnly] | None = None) -> bytes:
    """One byte per record: 1 if its signature verifies against its key over its digest, else 0."""
    cache = keys if keys is not None else {}
    count = len(records) // RECORD
    out = bytearray(count)
    for i in range(count):
        at = i * RECORD
        raw = records[at:at + 32]
        key = cache.get(raw)
        if key is None:
            try:
                key = PublicKeyXOnly(raw)
            except (ValueError, TypeError):
                continue
            if len(cache) >= MAX_KEYS:
                cache.clear()
            cache[raw] = key
        with contextlib.suppress(ValueError, TypeError):
            out[i] = key.verify(records[at + 32:at + 96], records[at + 96:at + RECORD])
    return bytes(out)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        part = stream.read(size)
        if not part:
            return b""
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer length-prefixed batches of records until the input ends (or is malformed)."""
    keys: dict[bytes, PublicKeyXOnly] = {}
    while True:
        head = _read_exact(requests, 4)
        count = int.from_bytes(head, "big") if head else 0
        if not 0 < count <= MAX_BATCH:
            return
        records = _read_exact(requests, count * RECORD)
        if not records:
            return
        answers.write(verify_records(records, keys))
        answers.flush()


class _Worker:
    """One worker process and its two pipes."""

    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the directory holding the ``openmos`` package
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "openmos.fleet.sigworker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests, self.answers = self.proc.stdin, self.proc.stdout

    def send(self, records: bytes) -> None:
        data = memoryview((len(records) // RECORD).to_bytes(4, "big") + records)
        while data:
            written = self.requests.write(data)
            if not written:
                raise BrokenPipeError("signature worker does not read")
            data = data[written:]

    def ready(self) -> bool:
        return bool(select.select([self.answers], [], [], 0)[0])

    def receive(self, count: int) -> bytes:
        parts: list[bytes] = []
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while count:
            if not select.select([self.answers], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("signature worker did not answer")
            part = os.read(self.answers.fileno(), count)
            if not part:
                raise EOFError("signature worker exited")
            parts.append(part)
            count -= len(part)
        return b"".join(parts)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for pipe in (self.requests, self.answers):
            with contextlib.suppress(OSError):
                pipe.close()

    def stop(self) -> None:
        """End of input: the worker exits by itself; killed if it does not."""
        with contextlib.suppress(OSError):
            self.requests.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.kill()


class SignatureWorkers:
    """Worker processes shared by a controller's queries; each query leases one for its duration (a query
    that finds none free verifies in its own process). Started on first use; ``close`` stops them all."""

    def __init__(self, processes: int | None = None) -> None:
        self.processes = processes if processes is not None else max(1, min(4, os.cpu_count() or 1))
        self._idle: list[_Worker] = []
        self._started = 0
        self._lock = threading.Lock()
        self._failed_at = -RESTART_AFTER_S
        self._closed = False
        self.verified = 0  # signatures verified for this controller's queries (in workers or in-process)

    @property
    def closed(self) -> bool:
        return self._closed

    def lease(self) -> _Worker | None:
        with self._lock:
            if self._closed:
                return None
            if self._idle:
                return self._idle.pop()
            if self._started >= self.processes or time.monotonic() - self._failed_at < RESTART_AFTER_S:
                return None
            self._started += 1
        try:
            return _Worker()
        except OSError as exc:
            self.failed(None, exc)
            return None

    def give_back(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.stop()

    def failed(self, worker: _Worker | None, why: BaseException) -> None:
        log.warning("fleet: a signature worker failed (%s); its batches are verified in the controller's "
                    "process, a new worker is tried in %.0f s", why or type(why).__name__, RESTART_AFTER_S)
        if worker is not None:
            worker.kill()
        with self._lock:
            self._started -= 1
            self._failed_at = time.monotonic()

    def discard(self, worker: _Worker) -> None:
        """A worker that cannot be used again (answers were due when its query ended): stopped, not failed."""
        worker.kill()
        with self._lock:
            self._started -= 1

    def count(self, signatures: int) -> None:
        with self._lock:
            self.verified += signatures

    def pids(self) -> list[int]:
        """The worker processes' ids that are idle now (for measurements)."""
        with self._lock:
            return [w.proc.pid for w in self._idle]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()

    def batches(self) -> SignatureBatches:
        return SignatureBatches(self)


class SignatureBatches:
    """One query's batches, verified in order: ``send`` a batch, ``ready`` says whether the oldest one's
    answer is in, ``receive`` returns it (waiting if needed). Batches go round the worker processes this
    query leased (up to ``SignatureWorkers.processes``); without one (none free, none started yet for a lone
    small batch, or it failed) they are verified here."""

    def __init__(self, workers: SignatureWorkers | None) -> None:
        self._workers = workers
        self._leased: list[_Worker] = []
        self._turn = 0
        self._pending: deque[tuple[_Worker | None, bytes]] = deque()
        self._keys: dict[bytes, PublicKeyXOnly] = {}

    def send(self, items: list[tuple[bytes, bytes, bytes]], last: bool = False) -> None:
        """``items``: (enrolled key bytes, signature, document bytes). ``last``: no batch follows (a lone
        small batch is verified here rather than starting a worker for it)."""
        records = b"".join(record(*item) for item in items)
        if self._workers is not None:
            self._workers.count(len(items))
        worker = self._next(lone=last and not self._pending and not self._leased)
        if worker is not None:
            try:
                worker.send(records)
            except OSError as exc:
                self._lose(worker, exc)
                worker = None
        self._pending.append((worker, records))

    def ready(self) -> bool:
        if not self._pending:
            return False
        worker = self._pending[0][0]
        if worker is None or worker not in self._leased:
            return True
        try:
            return worker.ready()
        except (OSError, ValueError):
            return True  # receive() finds out and verifies here

    def receive(self) -> bytes:
        """The oldest batch's answer: one byte per item, 1 if it verifies."""
        worker, records = self._pending.popleft()
        count = len(records) // RECORD
        if worker is not None and worker in self._leased:
            try:
                answer = worker.receive(count)
                if len(answer) == count and set(answer) <= {0, 1}:
                    return answer
                raise ValueError("malformed answer")
            except (OSError, EOFError, TimeoutError, ValueError) as exc:
                self._lose(worker, exc)
        return verify_records(records, self._keys)

    def close(self) -> None:
        """Give the workers back (one with answers still due is stopped instead: it would be out of step)."""
        leased, self._leased = self._leased, []
        due = {id(w) for w, _ in self._pending if w is not None}
        self._pending.clear()
        if self._workers is None:
            return
        for worker in leased:
            if id(worker) in due:
                self._workers.discard(worker)
            else:
                self._workers.give_back(worker)

    def _next(self, lone: bool) -> _Worker | None:
        if self._workers is None or lone:
            return None
        if len(self._leased) < self._workers.processes:
            worker = self._workers.lease()
            if worker is not None:
                self._leased.append(worker)
        if not self._leased:
            return None
        self._turn = (self._turn + 1) % len(self._leased)
        return self._leased[self._turn]

    def _lose(self, worker: _Worker, why: BaseException) -> None:
        if worker in self._leased:
            self._leased.remove(worker)
            if self._workers is not None:
                self._workers.failed(worker, why)


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
