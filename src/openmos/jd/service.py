"""``mos jd``: a Job Declarator Client serving Stratum V1 miners with templates built from the operator's
own node, declared to the pool and mined on the pool's extended channel.

Loop: poll the node (``getbestblockhash``, ZMQ-free); on a new tip (or every ``refresh`` seconds) fetch
``getblocktemplate``, apply the ``TemplatePolicy``, build the coinbase paying the pool's outputs, declare
it to the JDS with a pre-allocated token, ``SetCustomMiningJob`` on the pool, then push the job to the
downstream miners. While healthy the job reaches the miners first and the declaration follows (sv2-spec
6.3 optimistic mining), and a new tip gets an empty-block job at once -- built from the previous
template and the new block's header (``getblockheader``) -- before the full template, as pools do.
Transactions already checked in the previous template are not hashed again (``TxCache``).

Downstream shares are validated locally (the embedded ``LocalPool``), forwarded to the
pool when they meet the channel target, and a block is submitted to our node (``submitblock``), to the
JDS (``PushSolution``) and, as a share, through the pool.

Fallback: if the node, the JDS or a declaration fails, the downstream miners get the pool's own jobs from
the same extended channel (same extranonce space, so shares on the previous job stay valid: nothing is
lost), and the service keeps trying to return to its own templates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal

from openmos.base.tasks import cancel_and_wait
from openmos.bitcoin import BlockHeader
from openmos.bitcoin.target import bits_to_target
from openmos.bitcoin.tx import TxError, TxOut, hex_hash, serialize_block, tx_hash_hex
from openmos.jd.client import DeclarationFailed, JdsClient, MiningUpstream, Token
from openmos.jd.tdp import TdpNode
from openmos.node.rpc import NodeRpcClient, RpcError
from openmos.node.template import (
    NodeTemplate,
    Selection,
    TemplateError,
    TemplatePolicy,
    TxCache,
    Work,
    build_work,
    select_transactions,
)
from openmos.pool.chain import BlockTemplate
from openmos.pool.server import EXTRANONCE1_SIZE, AcceptedShare, LocalPool, PoolJob, PoolSettings

log = logging.getLogger(__name__)

Mode = Literal["own", "pool", "none"]
STALE_CODES = frozenset({"invalid-coinbase-height", "invalid-prev-hash"})  # refused only because a block came
# An empty-block job reuses the previous template's bits and subsidy: not where either may change (mainnet /
# testnet / signet retarget every 2016 blocks, halvings every 210,000; regtest halves every 150).
EMPTY_JOB_UNSAFE_EVERY = (2016, 210_000, 150)
SPARE_TOKENS = 2


@dataclass(eq=False)
class Upstream:
    """Where a downstream job's shares go: the pool's job id (None while an optimistic job awaits
    SetCustomMiningJob.Success: its shares wait in ``queued``), and our work if it is our template."""

    job_id: int | None
    work: Work | None
    prev_hash: bytes
    queued: list[tuple[AcceptedShare, bytes]] = field(default_factory=list)
    refused: bool = False


@dataclass
class JdStatus:
    mode: Mode = "none"
    reason: str = "starting"
    height: int = 0
    fees: int = 0
    tx_count: int = 0
    weight: int = 0  # of the template's selected transactions
    excluded: int = 0  # node transactions the policy left out
    templates: int = 0
    empty_jobs: int = 0  # empty-block jobs sent the moment a new block arrived
    empty_jobs_accepted: int = 0  # ... that the JDS and the pool then accepted
    forwarded: int = 0
    blocks: list[str] = field(default_factory=list)
    fallbacks: int = 0
    stale_dropped: int = 0
    optimistic_lost: int = 0  # shares mined on an optimistic job the JDS or pool then refused
    last_switch: float = 0.0
    tip_seen_at: float = 0.0
    last_job_latency: float | None = None  # new tip seen -> first job on it pushed to the miners
    last_template_latency: float | None = None  # new tip seen -> the full template's job pushed
    build_seconds: float | None = None


class _Source:
    """The downstream pool's template chain: our current work or the pool's job, whichever is active."""

    def __init__(self) -> None:
        self.current: BlockTemplate | None = None
        self.network_difficulty = 0.0
        self.height = 0
        self.tip = b""

    def template(self) -> BlockTemplate:
        if self.current is None:
            raise RuntimeError("no work yet")
        return self.current

    def submit_block(self, header: BlockHeader) -> bool:
        return False  # blocks are submitted upstream by the service (node, JDS and pool)


class JdService:
    def __init__(self, node: NodeRpcClient | TdpNode, pool_host: str, pool_port: int, jds_host: str, jds_port: int,
                 authority: bytes, user: str, *, policy: TemplatePolicy | None = None,
                 downstream: PoolSettings | None = None, poll_interval: float = 0.02, refresh: float = 30.0,
                 retry: float = 2.0, tag: bytes = b"/omjd/", check_node_txs: str = "hash",
                 empty_jobs: bool = True, cache_txs: bool = True) -> None:
        self.node = node  # Bitcoin Core JSON-RPC, or a V2 Template Provider (TdpNode)
        self.policy = policy or TemplatePolicy()
        if isinstance(node, TdpNode) and self.policy != TemplatePolicy():
            raise ValueError("a template provider chooses the transactions and TDP carries no per-transaction fees: "
                             "a template policy needs the node's JSON-RPC (getblocktemplate)")
        self.mining = MiningUpstream(pool_host, pool_port, authority, user, on_pool_job=self._on_pool_job)
        self.jds = JdsClient(jds_host, jds_port, authority, user)
        self.user = user
        self.poll_interval, self.refresh, self.retry = poll_interval, refresh, retry
        self.tag = tag
        self.check_node_txs = check_node_txs  # "full" or "hash" (see NodeTemplate.from_rpc)
        self.status = JdStatus()
        self.source = _Source()
        self.downstream_settings = downstream or PoolSettings(port=3333)
        self.downstream: LocalPool | None = None
        self.upstream_of: dict[BlockTemplate, Upstream] = {}
        self._pending_upstream: Upstream | None = None
        self._spares: list[Token] = []
        self._pool_outputs: tuple[TxOut, ...] | None = None  # the pool's outputs named with the last token
        self._last: NodeTemplate | None = None  # the last own template (the base of an empty-block job)
        self._last_at = 0.0
        self._first_push_due = False
        self.unverifiable: set[bytes] = set()  # txids whose fee the JDS could not verify: left out since
        self.empty_jobs = empty_jobs  # an empty-block job the moment a new block arrives
        self.tx_cache = TxCache() if cache_txs else None
        self._tip: str | None = None
        self._next_try = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._pool_prev: bytes = b""
        self._bg: set[asyncio.Task[None]] = set()
        self.jobs_pushed = asyncio.Event()  # set whenever new work reaches the downstream miners

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.mining.connect(min_extranonce_size=EXTRANONCE1_SIZE + 2)
        en2 = self.mining.extranonce_size - EXTRANONCE1_SIZE
        if en2 < 2:
            raise DeclarationFailed("extranonce-too-small", f"the pool's extended channel gives "
                                    f"{self.mining.extranonce_size} extranonce bytes; need >= {EXTRANONCE1_SIZE + 2}")
        settings = dataclasses.replace(self.downstream_settings, extranonce2_size=en2, job_interval=10.0**9)
        self.downstream = LocalPool(settings, chain=self.source)  # type: ignore[arg-type]
        self.downstream.share_listeners.append(self._on_share)
        with contextlib.suppress(Exception):
            await self._connect_jds()
        await self._step()
        if self.source.current is None:  # neither our node nor the pool gave work yet: wait for the pool
            await asyncio.wait_for(self._wait_pool_job(), 30)
        await self.downstream.start()
        self._task = asyncio.create_task(self._loop(), name="jd-loop")

    async def _wait_pool_job(self) -> None:
        while self.source.current is None:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stopping = True  # (Python 3.11's wait_for can swallow a cancel: the loop also checks this flag)
        await cancel_and_wait(self._task)
        for t in list(self._bg):
            t.cancel()
        if self.downstream is not None:
            await self.downstream.stop()
        await self.jds.close()
        await self.mining.close()
        await self.node.close()

    @property
    def url(self) -> str:
        assert self.downstream is not None
        return self.downstream.url

    # -- the loop ---------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.poll_interval)
            with contextlib.suppress(Exception):
                await self._step()

    async def _connect_jds(self) -> None:
        if not self.jds.connected:
            self.jds = JdsClient(self.jds.host, self.jds.port, self.jds.authority, self.user)
            await self.jds.connect()
            self._spares.clear()

    async def _step(self) -> None:
        now = time.monotonic()
        try:
            tip = await self.node.getbestblockhash()
        except RpcError as exc:
            self._fallback(f"node unreachable: {exc}")
            return
        changed = tip != self._tip
        if changed:
            self.status.tip_seen_at = time.perf_counter()
            self._first_push_due = True
        stale = self.status.mode != "own" and now >= self._next_try
        if not (changed or stale or now - self.status.last_switch > self.refresh):
            return
        try:
            await self._connect_jds()
            empty = changed and await self._empty_job(tip)
            await self._own_work(clean=changed and not empty)
            self._tip = tip
        except (RpcError, TemplateError, DeclarationFailed, ConnectionError, OSError, TimeoutError) as exc:
            if isinstance(exc, DeclarationFailed) and exc.code in STALE_CODES and await self._tip_moved(tip):
                return  # the chain moved while we declared: the next step builds on the new tip, no fallback
            self._next_try = time.monotonic() + self.retry
            self._tip = tip
            self._fallback(f"{type(exc).__name__}: {exc}")

    async def _tip_moved(self, tip: str) -> bool:
        try:
            return await self.node.getbestblockhash() != tip
        except RpcError:
            return False

    async def _token(self) -> Token:
        token = self._spares.pop(0) if self._spares else await self.jds.allocate()
        self._pool_outputs = token.pool_outputs
        return token

    def _work(self, template: NodeTemplate, selection: Selection, pool_outputs: tuple[TxOut, ...]) -> Work:
        return build_work(template, selection, pool_outputs,
                          len(self.mining.extranonce_prefix) + self.mining.extranonce_size, self.tag)

    def _job_of(self, work: Work) -> tuple[BlockTemplate, Upstream]:
        t = work.template
        bt = BlockTemplate(t.height, t.prev_hash, t.version, t.bits, max(t.curtime, t.mintime),
                           work.coinbase.stripped_prefix + self.mining.extranonce_prefix, work.coinbase.stripped_suffix,
                           work.txids, work.merkle_path)
        return bt, Upstream(None, work, t.prev_hash)

    async def _own_work(self, *, clean: bool, again: bool = True) -> None:
        t0 = time.perf_counter()
        template = NodeTemplate.from_rpc(await self.node.getblocktemplate(), verify=self.check_node_txs,
                                         cache=self.tx_cache)
        token = await self._token()
        policy = self.policy
        if self.unverifiable:
            policy = dataclasses.replace(policy, excluded_txids=policy.excluded_txids | self.unverifiable)
        selection = select_transactions(template, policy, len(token.pool_outputs[0].serialize()) * 2)
        work = self._work(template, selection, token.pool_outputs)
        self.status.build_seconds = time.perf_counter() - t0
        bt, up = self._job_of(work)
        optimistic = self.status.mode == "own"  # sv2-spec 6.3: mine at once, hold shares until acknowledged
        if optimistic:
            self._switch("own", "own template", bt, up, clean=clean)
            self._note_template_latency()
        try:
            await self._declare(up, work, token)
        except DeclarationFailed as exc:
            if not (again and exc.code == "invalid-coinbase-value" and self.jds.last_missing):
                raise
            # The pool cannot verify the fees of transactions its node does not know: leave them out.
            if len(self.unverifiable) > 100_000:
                self.unverifiable.clear()
            self.unverifiable.update(self.jds.last_missing)
            log.warning("jd: the pool cannot verify the fees of %d transaction(s) its node does not know (%s); "
                        "building without them", len(self.jds.last_missing), exc)
            await self._own_work(clean=clean, again=False)
            return
        if not optimistic:
            self._switch("own", "own template", bt, up, clean=clean)
            self._note_template_latency()
        self._last, self._last_at = template, time.monotonic()
        s = self.status
        s.height, s.fees, s.tx_count, s.templates = template.height, selection.fees, len(selection.txs), s.templates + 1
        s.weight, s.excluded = selection.weight, selection.excluded
        self._prefetch_token()

    def _note_template_latency(self) -> None:
        if self.status.tip_seen_at:
            self.status.last_template_latency = time.perf_counter() - self.status.tip_seen_at

    async def _declare(self, up: Upstream, work: Work, token: Token | None,
                       built_for: tuple[TxOut, ...] | None = None) -> None:
        """Declare ``work`` to the JDS and set it as a custom job on the pool; shares held meanwhile go up
        once the pool has acknowledged it (or are counted lost if either refuses). ``built_for``: the pool
        outputs ``work`` pays when it was built before its token was in hand."""
        try:
            token = token or await self._token()
            if built_for is not None and token.pool_outputs != built_for:
                raise DeclarationFailed("pool-outputs-changed", "the pool's required outputs changed; rebuilding")
            declared = await self.jds.declare(token.token, work)
            up.job_id = await self.mining.set_custom_job(declared, work, max(work.template.curtime,
                                                                             work.template.mintime))
        except BaseException:
            up.refused = True
            self.status.optimistic_lost += len(up.queued)
            up.queued.clear()
            raise
        for share, extranonce in up.queued:
            self._forward(up, share, extranonce)
        up.queued.clear()

    async def _empty_job(self, tip: str) -> bool:
        """A job on the new block with no transactions, pushed at once (the full template follows): built from
        the previous own template when the new block extends it and neither the difficulty nor the subsidy
        can have changed. Declared in the background; its shares go up once the pool has it."""
        last, outputs = self._last, self._pool_outputs
        if not self.empty_jobs or self.status.mode != "own" or last is None or outputs is None:
            return False
        height = last.height + 1
        if any(height % n == 0 for n in EMPTY_JOB_UNSAFE_EVERY) or last.coinbase_value <= 0:
            return False
        try:
            header = await self.node.getblockheader(tip)
            prev, mtp = header.get("previousblockhash"), header.get("mediantime")
            if (prev != tx_hash_hex(last.prev_hash) or header.get("height") != last.height
                    or not isinstance(mtp, int) or isinstance(mtp, bool) or not 0 <= mtp < 0xFFFFFFFF):
                return False  # a reorg or several blocks at once: wait for the full template
            prev_hash = hex_hash(tip, "tip")
        except (RpcError, TxError):
            return False
        curtime = min(0xFFFFFFFF, max(last.curtime + math.floor(time.monotonic() - self._last_at), mtp + 1))
        template = dataclasses.replace(last, height=height, prev_hash=prev_hash, curtime=curtime, mintime=mtp + 1,
                                       coinbase_value=last.subsidy, transactions=(), longpollid=None)
        try:
            work = self._work(template, Selection((), 0, 0, 0), outputs)
        except TemplateError:
            return False
        token = self._spares.pop(0) if self._spares else None
        bt, up = self._job_of(work)
        self._switch("own", "own template (empty-block job while the full template is built)", bt, up, clean=True)
        self.status.empty_jobs += 1

        async def declare() -> None:
            try:
                await self._declare(up, work, token, outputs)
                self.status.empty_jobs_accepted += 1
            except Exception as exc:  # the full template follows: nothing to fall back from
                log.info("jd: the empty-block job for height %d was not accepted upstream: %s", height, exc)

        task = asyncio.create_task(declare())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return True

    def _prefetch_token(self) -> None:
        async def fetch() -> None:
            with contextlib.suppress(Exception):
                while len(self._spares) < SPARE_TOKENS:
                    self._spares.append(await self.jds.allocate())

        task = asyncio.create_task(fetch())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _fallback(self, reason: str) -> None:
        if self.status.mode != "pool":
            log.warning("jd: %s -> mining the pool's jobs until our own templates are back", reason)
            self.status.fallbacks += 1
        self.status.reason = reason
        self._use_pool_job(clean=False, force=self.status.mode != "pool")

    def _on_pool_job(self) -> None:
        prev = self.mining.pool.prev
        if prev is None:
            return
        new_prev = prev.prev_hash != self._pool_prev
        self._pool_prev = prev.prev_hash
        if self.status.mode == "own" and new_prev:
            return  # our node will show the same block; the loop rebuilds our template
        if self.status.mode != "own":
            self._use_pool_job(clean=new_prev, force=True)

    def _use_pool_job(self, *, clean: bool, force: bool) -> None:
        prev = self.mining.pool.prev
        job = max(self.mining.pool.jobs.values(), key=lambda j: j.job_id, default=None)
        if prev is None or job is None:
            return
        bt = BlockTemplate(0, prev.prev_hash, job.version, prev.nbits, prev.min_ntime,
                           job.coinbase_tx_prefix + self.mining.extranonce_prefix, job.coinbase_tx_suffix, (),
                           job.merkle_path)
        if force or self.status.mode != "pool":
            self._switch("pool", self.status.reason, bt, Upstream(job.job_id, None, prev.prev_hash), clean=clean)

    def _switch(self, mode: Mode, reason: str, bt: BlockTemplate, upstream: Upstream, *, clean: bool) -> None:
        if mode != self.status.mode:
            log.info("jd: now mining %s (%s)", "our own template" if mode == "own" else "the pool's jobs", reason)
            self.status.last_switch = time.monotonic()
        self.status.mode, self.status.reason = mode, reason
        if mode == "own":
            self.status.last_switch = time.monotonic()
        self.source.current = bt
        self.source.tip = bt.prev_hash
        self.upstream_of[bt] = upstream
        if len(self.upstream_of) > 256:
            self.upstream_of.pop(next(iter(self.upstream_of)))
        if self.downstream is not None and self.downstream.serving:
            self.downstream.push_job(clean=clean)
            if self._first_push_due and self.status.tip_seen_at:
                self.status.last_job_latency = time.perf_counter() - self.status.tip_seen_at
                self._first_push_due = False
            self.jobs_pushed.set()

    # -- shares -----------------------------------------------------------------------------------

    def _on_share(self, share: AcceptedShare, job: PoolJob) -> None:
        up = self.upstream_of.get(job.template)
        if up is None:
            return
        digest = int.from_bytes(share.hash, "little")
        extranonce = share.extranonce1 + share.extranonce2
        prev = self.mining.pool.prev
        if prev is not None and prev.prev_hash != job.template.prev_hash and up.work is None:
            self.status.stale_dropped += 1  # a pool job for a block the pool has moved past
            return
        if digest <= int.from_bytes(self.mining.pool.target, "little"):
            if up.job_id is None:
                if up.refused:
                    self.status.optimistic_lost += 1
                elif len(up.queued) < 100_000:
                    up.queued.append((share, extranonce))
            else:
                self._forward(up, share, extranonce)
        if up.work is not None and digest <= bits_to_target(job.template.bits):
            header = BlockHeader.parse(share.header)
            self.status.blocks.append(header.hash_hex())
            task = asyncio.get_running_loop().create_task(self._submit_block(up.work, header, extranonce))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)

    def _forward(self, up: Upstream, share: AcceptedShare, extranonce: bytes) -> None:
        assert up.job_id is not None
        try:
            self.mining.submit(up.job_id, share.nonce, share.ntime, share.version, extranonce, up.prev_hash)
            self.status.forwarded += 1
        except ConnectionError:
            log.warning("jd: pool connection down; share not forwarded")

    async def _submit_block(self, work: Work, header: BlockHeader, extranonce: bytes) -> None:
        full_en = self.mining.extranonce_prefix + extranonce
        txs = [work.coinbase.full(full_en), *(t.data for t in work.selection.txs)]
        block = serialize_block(header.serialize(), txs)
        log.info("jd: BLOCK %s at height %d with our %d transactions: submitting to our node and the JDS",
                 header.hash_hex(), work.template.height, len(work.selection.txs))
        with contextlib.suppress(Exception):
            await self.jds.push_solution(full_en, header.prev_hash, header.nonce, header.ntime, header.bits,
                                         header.version)
        try:
            result = await self.node.submitblock(block.hex())
            where = "our node" if isinstance(self.node, NodeRpcClient) else "the template provider (SubmitSolution)"
            log.info("jd: %s says %s", where, "accepted" if result is None else result)
        except RpcError as exc:
            log.warning("jd: submitblock to our node failed: %s (the pool and the JDS have it too)", exc)
