"""The testbed's stock-firmware persona is read alike by stock pyasic and by the OpenMOS poller; the poller
survives hostile answers."""

from __future__ import annotations

from typing import Any

import pytest

from openmos.fleet.poller import parse_bmminer, poll_all
from openmos.testbed.farm import device_ip, serve


async def test_stock_s9_persona_is_read_alike_by_stock_pyasic_and_the_poller() -> None:
    from pyasic import get_miner
    from pyasic.miners.antminer.bmminer.X9.S9 import BMMinerS9

    servers = await serve(3, persona="stock-s9")
    try:
        snaps = await poll_all([device_ip(i) for i in range(3)], dialect="bmminer", timeout_s=10)
        assert all(s.ok for s in snaps)
        assert isinstance(await get_miner(device_ip(2)), BMMinerS9)  # stock pyasic detects it natively
        for snap in snaps:
            data = await BMMinerS9(snap.ip).get_data()
            assert float(data.hashrate) == pytest.approx(snap.hashrate_ths, abs=0.01)
            assert float(data.expected_hashrate) == pytest.approx(snap.expected_ths, abs=0.01)
            assert [b.chips for b in data.hashboards] == [b.chips for b in snap.board_list] == [63, 63, 63]
            assert [float(b.hashrate) for b in data.hashboards] == pytest.approx(
                [b.hashrate_ths for b in snap.board_list], abs=0.01)
            assert [f.speed for f in data.fans] == snap.fans_rpm and data.pools[0].user == snap.pool_user
    finally:
        for s in servers:
            await s.stop()


@pytest.mark.parametrize("doc", [
    {}, {"summary": "x"}, {"summary": [{"SUMMARY": [{"GHS 5s": "NaN"}]}]},
    {"stats": [{"STATS": [{}, {"chain_acn6": "1e400", "chain_rate6": "-inf", "fan1": [1]}]}]},
    {"pools": [{"POOLS": [None, 3, {"URL": {"a": 1}}]}]}, {"version": [{"VERSION": "nope"}]},
])
def test_bmminer_parser_survives_hostile_answers(doc: dict[str, Any]) -> None:
    snap = parse_bmminer("127.0.0.1", doc, 0.0)
    assert snap.ok and snap.hashrate_ths == 0.0 and not snap.board_list
