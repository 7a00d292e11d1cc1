"""Access to a Bitcoin node: Bitcoin Core's JSON-RPC (client and a small server for ``mos pool``), the
block-template model parsed from ``getblocktemplate``, the operator's template policy and the coinbase /
merkle work built from a template.

Imports ``openmos.base`` and ``openmos.bitcoin`` only; protocol layers (pool, jd) build on it.
"""

from openmos.node.rpc import NodeRpcClient, RpcError
from openmos.node.template import NodeTemplate, TemplatePolicy, TemplateTx, select_transactions

__all__ = ["NodeRpcClient", "NodeTemplate", "RpcError", "TemplatePolicy", "TemplateTx", "select_transactions"]
