"""Job Declaration Protocol messages (sv2-spec section 6.4, types 0x50-0x60), as frozen dataclasses.

Registered in ``messages.MESSAGES`` like the Mining messages, so ``Frame.message()`` decodes them. None
carries the channel_msg bit. Field order and SV2 types follow the spec tables exactly; semantics (token
validity, output rules, transaction lists) are checked by the Job Declarator Server, not here.
"""

from __future__ import annotations

from typing import Annotated

from openmos.stratum.v2.codec import B0_16M, B0_32, B0_64K, B0_255, SEQ0_64K, STR0_255, U16, U32, U256
from openmos.stratum.v2.messages import Message, message

# SetupConnection.flags for the Job Declaration Protocol (client -> server)
DECLARE_TX_DATA = 1 << 0


@message(0x50, channel=False)
class AllocateMiningJobToken(Message):
    user_identifier: Annotated[str, STR0_255]
    request_id: Annotated[int, U32]


@message(0x51, channel=False)
class AllocateMiningJobTokenSuccess(Message):
    request_id: Annotated[int, U32]
    mining_job_token: Annotated[bytes, B0_255]
    coinbase_tx_outputs: Annotated[bytes, B0_64K]  # CompactSize-prefixed array of serialized outputs


@message(0x55, channel=False)
class ProvideMissingTransactions(Message):
    request_id: Annotated[int, U32]
    unknown_tx_position_list: Annotated[tuple[int, ...], SEQ0_64K(U16)]


@message(0x56, channel=False)
class ProvideMissingTransactionsSuccess(Message):
    request_id: Annotated[int, U32]
    transaction_list: Annotated[tuple[bytes, ...], SEQ0_64K(B0_16M)]


@message(0x57, channel=False)
class DeclareMiningJob(Message):
    request_id: Annotated[int, U32]
    mining_job_token: Annotated[bytes, B0_255]
    version: Annotated[int, U32]
    coinbase_tx_prefix: Annotated[bytes, B0_64K]  # full (non-stripped) serialization up to the extranonce
    coinbase_tx_suffix: Annotated[bytes, B0_64K]  # after the extranonce
    wtxid_list: Annotated[tuple[bytes, ...], SEQ0_64K(U256)]
    excess_data: Annotated[bytes, B0_64K]


@message(0x58, channel=False)
class DeclareMiningJobSuccess(Message):
    request_id: Annotated[int, U32]
    new_mining_job_token: Annotated[bytes, B0_255]


@message(0x59, channel=False)
class DeclareMiningJobError(Message):
    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]
    error_details: Annotated[bytes, B0_64K]


@message(0x60, channel=False)
class PushSolution(Message):
    extranonce: Annotated[bytes, B0_32]  # the full extranonce
    prev_hash: Annotated[bytes, U256]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]
    version: Annotated[int, U32]


JOB_DECLARATION: tuple[type[Message], ...] = (
    AllocateMiningJobToken, AllocateMiningJobTokenSuccess, ProvideMissingTransactions,
    ProvideMissingTransactionsSuccess, DeclareMiningJob, DeclareMiningJobSuccess, DeclareMiningJobError,
    PushSolution,
)
