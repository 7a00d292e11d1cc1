"""A Template Distribution Protocol client (sv2-spec 7): templates pushed by a V2 Template Provider.

``connect()`` sets up protocol 2 and sends ``CoinbaseOutputConstraints``; ``NewTemplate`` and
``SetNewPrevHash`` then arrive unsolicited and are kept (bounded) with the active template marked;
``request_transactions`` asks for a template's transaction data and ``submit_solution`` hands a solved block
back to the provider.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

from openmos.jd.client import DeclarationFailed, _Upstream
from openmos.stratum.v2.messages import PROTOCOL_TEMPLATE_DISTRIBUTION, Message, SetupConnection
from openmos.stratum.v2.template_distribution import (
    CoinbaseOutputConstraints,
    NewTemplate,
    RequestTransactionData,
    RequestTransactionDataError,
    RequestTransactionDataSuccess,
    SubmitSolution,
    TdpSetNewPrevHash,
)

log = logging.getLogger(__name__)

MAX_TEMPLATES = 64
TDP_MAX_PAYLOAD = 16 << 20  # RequestTransactionData.Success carries a whole block's transactions


class TdpClient(_Upstream):
    def __init__(self, host: str, port: int, authority: bytes, *, max_additional_size: int = 100,
                 max_additional_sigops: int = 400, timeout: float = 10.0,
                 on_template: Callable[[NewTemplate, TdpSetNewPrevHash], None] | None = None) -> None:
        super().__init__(host, port, authority, timeout)
        self.constraints = CoinbaseOutputConstraints(max_additional_size, max_additional_sigops)
        self.templates: OrderedDict[int, NewTemplate] = OrderedDict()
        self.prev: TdpSetNewPrevHash | None = None
        self.on_template = on_template
        self.changed = asyncio.Event()
        self._tdp_waiting: dict[int, asyncio.Future[Message]] = {}

    async def connect(self) -> None:
        await self._open(SetupConnection(PROTOCOL_TEMPLATE_DISTRIBUTION, 2, 2, 0, self.host, self.port, "OpenMOS",
                                         "", "openmos-jdc", ""), TDP_MAX_PAYLOAD)
        assert self.conn is not None
        await self.conn.send(self.constraints)

    @property
    def active(self) -> NewTemplate | None:
        """The template to mine now: the one the last SetNewPrevHash activated, or a later non-future one."""
        if self.prev is None:
            return None
        current = [t for t in self.templates.values()
                   if t.template_id == self.prev.template_id or (not t.future_template
                                                                 and t.template_id > self.prev.template_id)]
        return max(current, key=lambda t: t.template_id, default=None)

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, NewTemplate):
            self.templates[msg.template_id] = msg
            while len(self.templates) > MAX_TEMPLATES:
                self.templates.popitem(last=False)
        elif isinstance(msg, TdpSetNewPrevHash):
            if msg.template_id not in self.templates:
                self.protocol_errors += 1
                log.warning("tdp: SetNewPrevHash for unknown template %d", msg.template_id)
                return
            self.prev = msg
            self.templates = OrderedDict((k, v) for k, v in self.templates.items() if k >= msg.template_id)
        else:
            super().on_message(msg)
            return
        active = self.active
        if active is not None and self.prev is not None:
            self.changed.set()
            if self.on_template is not None:
                self.on_template(active, self.prev)

    async def request_transactions(self, template_id: int) -> tuple[bytes, ...]:
        """The template's transactions (without the coinbase); DeclarationFailed if the provider refuses."""
        assert self.conn is not None
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        key = template_id & 0xFFFFFFFF  # replies carry template_id, routed here by hand
        self._tdp_waiting[key] = fut
        try:
            await self.conn.send(RequestTransactionData(template_id))
            reply = await asyncio.wait_for(fut, self.timeout)
        finally:
            self._tdp_waiting.pop(key, None)
        if isinstance(reply, RequestTransactionDataError):
            raise DeclarationFailed(reply.error_code)
        assert isinstance(reply, RequestTransactionDataSuccess)
        return reply.transaction_list

    def _route(self, msg: Message) -> None:
        if isinstance(msg, RequestTransactionDataSuccess | RequestTransactionDataError):
            fut = self._tdp_waiting.pop(msg.template_id & 0xFFFFFFFF, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
                return
        super()._route(msg)

    async def submit_solution(self, template_id: int, version: int, ntime: int, nonce: int, coinbase: bytes) -> None:
        assert self.conn is not None
        await self.conn.send(SubmitSolution(template_id, version, ntime, nonce, coinbase))
