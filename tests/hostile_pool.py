"""A scripted hostile/quirky Stratum V1 pool for agent tests.

It answers the handshake like a normal pool, accepts every share (recording which job it was for and
when), and lets a test push whatever it likes down the wire: new tips without the clean flag, absurd
difficulties, garbage, floods. ``sync()`` sends a ``mining.ping`` and waits for the answer: the agent reads
its socket in order, so once the pong is back every earlier message has been processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

PREV_A = "11" * 32
PREV_B = "22" * 32


def notify(job_id: str, prev: str = PREV_A, clean: bool = True, ntime: str = "5f5e1000") -> list[Any]:
    return [job_id, prev, "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff",
            "ffffffff0100f2052a01000000160014000000000000000000000000000000000000000000000000", [],
            "20000000", "207fffff", ntime, clean]


@dataclass
class Submit:
    job_id: str
    params: list[Any]
    after_sync: int  # how many sync() round trips had completed when it arrived


@dataclass
class HostileSession:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    submits: list[Submit] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    syncs: int = 0
    mute: bool = False  # stop answering anything (the TCP connection stays open): a stalled pool
    answer_delay: float = 0.0  # answer submits (and probes) this late (a slow but healthy pool)
    # How mining.extranonce.subscribe (the agent's liveness probe) is answered: None: never (as ckpool and
    # public-pool do); else raw lines, "{id}" replaced by the request's id, taken in turn (hostile replies).
    probe_replies: list[str] | None = None
    probes: int = 0  # mining.extranonce.subscribe requests received
    unanswered: list[Any] = field(default_factory=list)  # submit ids received while mute
    held_probes: list[bytes] = field(default_factory=list)  # probe answers held while mute
    _pongs: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10_000))

    async def send(self, obj: dict[str, Any] | bytes) -> None:
        self.writer.write(obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\n")
        await self.writer.drain()

    async def notify(self, params: list[Any]) -> None:
        await self.send({"id": None, "method": "mining.notify", "params": params})

    async def set_difficulty(self, raw: str) -> None:
        """``raw`` is the JSON text of the value, so 1e400 and NaN go out exactly as a hostile pool sends them."""
        await self.send(f'{{"id":null,"method":"mining.set_difficulty","params":[{raw}]}}\n'.encode())

    async def sync(self, timeout: float = 30.0) -> None:
        msg_id = next(self._ids)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[msg_id] = fut
        await self.send({"id": msg_id, "method": "mining.ping", "params": []})
        await asyncio.wait_for(fut, timeout)

    def jobs_submitted(self, job_id: str, after_sync: int = 0) -> int:
        return sum(1 for s in self.submits if s.job_id == job_id and s.after_sync >= after_sync)

    async def serve(self, difficulty: str = "0.001", job: list[Any] | None = None, *, send_job: bool = True,
                    accept: bool = True) -> None:
        """Handshake, then answer pings and submits until the agent hangs up."""
        while True:
            line = await self.reader.readline()
            if not line:
                return
            msg = json.loads(line)
            self.received.append(msg)
            method, msg_id = msg.get("method"), msg.get("id")
            if self.mute:
                if method == "mining.submit":
                    self.submits.append(Submit(msg["params"][1], msg["params"], self.syncs))
                    self.unanswered.append(msg_id)
                elif method == "mining.extranonce.subscribe" and self.probe_replies:
                    self.probes += 1
                    self.held_probes.append(self._probe_reply(msg_id))
                continue
            if method is None:
                fut = self._pongs.pop(msg_id, None)
                if fut is not None and not fut.done():
                    self.syncs += 1
                    fut.set_result(None)
            elif method == "mining.configure":
                await self.send({"id": msg_id, "result": {"version-rolling": True,
                                                          "version-rolling.mask": "1fffe000"}, "error": None})
            elif method == "mining.subscribe":
                await self.send({"id": msg_id, "result": [[["mining.notify", "s1"]], "abcd0001", 4],
                                 "error": None})
            elif method == "mining.authorize":
                await self.send({"id": msg_id, "result": True, "error": None})
                await self.set_difficulty(difficulty)
                if send_job:
                    await self.notify(job or notify("a1"))
            elif method == "mining.extranonce.subscribe":
                self.probes += 1
                if self.probe_replies:
                    raw = self._probe_reply(msg_id)
                    if self.answer_delay:
                        asyncio.get_running_loop().call_later(self.answer_delay, self._answer_later, raw)
                    else:
                        await self.send(raw)
            elif method == "mining.submit":
                self.submits.append(Submit(msg["params"][1], msg["params"], self.syncs))
                error = None if accept else [23, "Low difficulty share", None]
                answer = {"id": msg_id, "result": accept, "error": error}
                if self.answer_delay:
                    asyncio.get_running_loop().call_later(self.answer_delay, self._answer_later, answer)
                else:
                    await self.send(answer)

    def _probe_reply(self, msg_id: Any) -> bytes:
        assert self.probe_replies
        reply = self.probe_replies[(self.probes - 1) % len(self.probe_replies)]
        return reply.replace("{id}", json.dumps(msg_id)).encode() + b"\n"

    def _answer_later(self, answer: dict[str, Any] | bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(answer if isinstance(answer, bytes) else json.dumps(answer).encode() + b"\n")

    async def unmute(self) -> None:
        """Answer again: first every submit (accepted) and probe that arrived while mute, then as usual."""
        self.mute = False
        for msg_id in self.unanswered:
            await self.send({"id": msg_id, "result": True, "error": None})
        self.unanswered.clear()
        for raw in self.held_probes:
            await self.send(raw)
        self.held_probes.clear()


class HostilePool:
    """Listens on loopback; each connection is served by ``handler`` (default: a normal ``serve()``)."""

    def __init__(self, **serve_args: Any) -> None:
        self.serve_args = serve_args
        self.sessions: list[HostileSession] = []
        self.new_session = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.garbage = False
        self.flood = False  # after the handshake: absurd difficulties and fresh jobs as fast as the socket takes
        self.probe_replies: list[str] | None = None  # each new session's (see HostileSession.probe_replies)

    @property
    def url(self) -> str:
        return f"stratum+tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = HostileSession(reader, writer, probe_replies=self.probe_replies)
        self.sessions.append(session)
        self.new_session.set()
        try:
            if self.garbage:
                while True:  # accepts the connection, then only talks nonsense
                    await session.send(b"\x00garbage, not JSON\n")
                    await asyncio.sleep(0.01)
            if self.flood:
                flood = asyncio.create_task(self._flood(session))
                try:
                    await session.serve(**self.serve_args)
                finally:
                    flood.cancel()
            else:
                await session.serve(**self.serve_args)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _flood(session: HostileSession) -> None:
        while not any(m.get("method") == "mining.authorize" for m in session.received):
            await asyncio.sleep(0.01)
        for n in itertools.count():
            await session.set_difficulty("1e-300")
            await session.notify(notify(f"f{n}", clean=n % 2 == 0))

    async def session(self, index: int = 0, timeout: float = 30.0) -> HostileSession:
        while len(self.sessions) <= index:
            self.new_session.clear()
            await asyncio.wait_for(self.new_session.wait(), timeout)
        return self.sessions[index]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for s in self.sessions:
                s.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
