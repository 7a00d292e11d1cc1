"""Template Distribution Protocol messages (sv2-spec section 7, types 0x70-0x76), as frozen dataclasses.

Registered in ``messages.MESSAGES``; none carries the channel_msg bit. ``TdpSetNewPrevHash`` is the
TDP's SetNewPrevHash (0x72), distinct from the Mining Protocol's (0x20). ``NewTemplate.coinbase_tx_outputs``
is the bare concatenation of ``coinbase_tx_outputs_count`` serialized outputs (no CompactSize prefix),
unlike the Job Declaration and SetCustomMiningJob fields of the same name.
"""

from __future__ import annotations

from typing import Annotated

from openmos.stratum.v2.codec import B0_16M, B0_64K, B0_255, BOOL, SEQ0_64K, SEQ0_255, STR0_255, U16, U32, U64, U256
from openmos.stratum.v2.messages import Message, message


@message(0x70, channel=False)
class CoinbaseOutputConstraints(Message):
    coinbase_output_max_additional_size: Annotated[int, U32]
    coinbase_output_max_additional_sigops: Annotated[int, U16]


@message(0x71, channel=False)
class NewTemplate(Message):
    template_id: Annotated[int, U64]
    future_template: Annotated[bool, BOOL]
    version: Annotated[int, U32]
    coinbase_tx_version: Annotated[int, U32]
    coinbase_prefix: Annotated[bytes, B0_255]
    coinbase_tx_input_sequence: Annotated[int, U32]
    coinbase_tx_value_remaining: Annotated[int, U64]
    coinbase_tx_outputs_count: Annotated[int, U32]
    coinbase_tx_outputs: Annotated[bytes, B0_64K]
    coinbase_tx_locktime: Annotated[int, U32]
    merkle_path: Annotated[tuple[bytes, ...], SEQ0_255(U256)]


@message(0x72, channel=False)
class TdpSetNewPrevHash(Message):
    template_id: Annotated[int, U64]
    prev_hash: Annotated[bytes, U256]
    header_timestamp: Annotated[int, U32]
    n_bits: Annotated[int, U32]
    target: Annotated[bytes, U256]


@message(0x73, channel=False)
class RequestTransactionData(Message):
    template_id: Annotated[int, U64]


@message(0x74, channel=False)
class RequestTransactionDataSuccess(Message):
    template_id: Annotated[int, U64]
    excess_data: Annotated[bytes, B0_64K]
    transaction_list: Annotated[tuple[bytes, ...], SEQ0_64K(B0_16M)]


@message(0x75, channel=False)
class RequestTransactionDataError(Message):
    template_id: Annotated[int, U64]
    error_code: Annotated[str, STR0_255]


@message(0x76, channel=False)
class SubmitSolution(Message):
    template_id: Annotated[int, U64]
    version: Annotated[int, U32]
    header_timestamp: Annotated[int, U32]
    header_nonce: Annotated[int, U32]
    coinbase_tx: Annotated[bytes, B0_64K]  # full serialization, BIP141 fields not stripped


TEMPLATE_DISTRIBUTION: tuple[type[Message], ...] = (
    CoinbaseOutputConstraints, NewTemplate, TdpSetNewPrevHash, RequestTransactionData,
    RequestTransactionDataSuccess, RequestTransactionDataError, SubmitSolution,
)
