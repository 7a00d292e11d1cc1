"""Device signatures verified in batches by worker processes (``fleet.sigworker``) and a query's replies checked
as they arrive (``trust.CheckedReplies``): every forged, tampered, foreign or unenrolled reply among thousands
is still refused, a dead worker never lets one through, and a worker is never reused out of step."""

from __future__ import annotations

import base64
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from openmos.fleet.enroll import EnrollmentRegistry
from openmos.fleet.envelope import DeviceKey, split_payload
from openmos.fleet.messages import BusMetrics, DeviceDoc
from openmos.fleet.sigworker import SignatureWorkers, record, verify_records
from openmos.fleet.trust import CHECK_BATCH, DeviceVerifier

SITE = "north"


def telemetry(key: DeviceKey, device: str, seq: int = 1, **body: Any) -> bytes:
    return key.sign_payload({"kind": "telemetry", "site": SITE, "device": device, "ts": time.time(), "seq": seq,
                             "body": {"hashrate_ths": 100.0, **body}})


def item(key: DeviceKey, payload: bytes) -> tuple[bytes, bytes, bytes]:
    compact = split_payload(payload)
    assert compact is not None
    return (base64.b64decode(key.public_b64), *compact)


@pytest.fixture
def workers() -> Iterator[SignatureWorkers]:
    pool = SignatureWorkers(processes=2)
    try:
        yield pool
    finally:
        pool.close()


def forged_items(count: int) -> tuple[list[tuple[bytes, bytes, bytes]], bytes]:
    """``count`` items, every third one forged in turn (other bytes, another key, a zero signature)."""
    keys = [DeviceKey() for _ in range(count)]
    items, expected = [], bytearray()
    for i, key in enumerate(keys):
        raw, signature, document = item(key, telemetry(key, f"d{i}", seq=i))
        if i % 3 == 1:
            document = document.replace(b'"hashrate_ths":100.0', b'"hashrate_ths":900.0')
        elif i % 3 == 2 and i % 2:
            raw = base64.b64decode(keys[i - 1].public_b64)
        elif i % 3 == 2:
            signature = bytes(64)
        items.append((raw, signature, document))
        expected.append(i % 3 == 0)
    return items, bytes(expected)


def test_records_verify_only_the_enrolled_keys_signature_over_those_very_bytes() -> None:
    key, other = DeviceKey(), DeviceKey()
    raw, signature, document = item(key, telemetry(key, "d0"))
    records = b"".join([
        record(raw, signature, document),
        record(base64.b64decode(other.public_b64), signature, document),  # another key
        record(raw, signature, document + b" "),  # other bytes
        record(raw, bytes(64), document),  # no signature
        record(b"\xff" * 32, signature, document),  # not a point on the curve
    ])
    assert verify_records(records) == b"\x01\x00\x00\x00\x00"


def test_worker_processes_answer_batches_in_order_and_forged_ones_fail(workers: SignatureWorkers) -> None:
    items, expected = forged_items(3 * CHECK_BATCH)
    batches = workers.batches()
    for at in range(0, len(items), CHECK_BATCH):
        batches.send(items[at:at + CHECK_BATCH])
    answers = b"".join(batches.receive() for _ in range(3))
    batches.close()
    assert answers == expected
    assert len(workers.pids()) == 2 and workers.verified == len(items)  # both processes took batches


def test_a_worker_killed_mid_batch_lets_nothing_through(workers: SignatureWorkers,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    items, expected = forged_items(2 * CHECK_BATCH)
    batches = workers.batches()
    batches.send(items[:CHECK_BATCH])
    assert batches.receive() == expected[:CHECK_BATCH]
    batches.close()
    for pid in workers.pids():
        os.kill(pid, signal.SIGKILL)
    batches = workers.batches()
    with caplog.at_level(logging.WARNING, "openmos.fleet.sigworker"):
        batches.send(items[CHECK_BATCH:])
        assert batches.receive() == expected[CHECK_BATCH:]  # verified in this process instead
    batches.close()
    assert "signature worker failed" in caplog.text


def test_a_query_that_ends_with_answers_due_never_leaves_a_worker_out_of_step(workers: SignatureWorkers) -> None:
    items, expected = forged_items(2 * CHECK_BATCH)
    batches = workers.batches()
    batches.send(items[:CHECK_BATCH])
    batches.close()  # its answer never read (the query failed): that worker must not answer the next one
    batches = workers.batches()
    batches.send(items[CHECK_BATCH:])
    assert batches.receive() == expected[CHECK_BATCH:]
    batches.close()


def test_a_poll_of_thousands_checks_every_reply_as_check_does(workers: SignatureWorkers) -> None:
    """Replies of enrolled devices checked in batches (signatures in the workers): the honest ones believed,
    in arrival order; each forgery refused and counted for its reason, wherever it falls in a batch."""
    count = 5 * CHECK_BATCH + 7  # a partial last batch
    keys = [DeviceKey() for _ in range(count)]
    registry = EnrollmentRegistry(None)
    registry.pin_many([(SITE, f"d{i}", key.public_b64) for i, key in enumerate(keys)])
    metrics = BusMetrics()
    verifier = DeviceVerifier(registry, metrics, rate_per_s=100, burst=100)
    intruder = DeviceKey()
    replies: list[tuple[str, bytes]] = []
    refused = {"bad_signature": 0, "identity_mismatch": 0, "not_enrolled": 0, "unsigned": 0}
    for i, key in enumerate(keys):
        payload, at = telemetry(key, f"d{i}"), f"openmos/{SITE}/dev/d{i}/telemetry"
        if i % 50 == 7:
            payload, reason = payload.replace(b'"hashrate_ths":100.0', b'"hashrate_ths":1e6'), "bad_signature"
        elif i % 50 == 19:
            payload, reason = telemetry(intruder, f"d{i}"), "bad_signature"  # in its name, another key
        elif i % 50 == 23:
            payload, reason = telemetry(key, f"d{i - 1}"), "identity_mismatch"  # its own key, another's name
        elif i % 50 == 31:
            at, reason = f"openmos/{SITE}/dev/ghost{i}/telemetry", "not_enrolled"
        elif i % 50 == 37:
            payload, reason = b'{"kind":"telemetry","site":"north"}', "unsigned"
        else:
            reason = ""
        if reason:
            refused[reason] += 1
        replies.append((at, payload))
    check = verifier.replies(("telemetry",), lambda doc, body: doc, snapshot=True, workers=workers)
    believed: list[DeviceDoc] = []
    try:
        for at, payload in replies:
            believed.extend(check.feed(at, payload))
        believed.extend(check.finish())
    finally:
        check.close()
    honest = count - sum(refused.values())
    assert len(believed) == honest and metrics.snapshot()["accepted"] == {"telemetry": honest}
    assert metrics.snapshot()["dropped"] == {k: v for k, v in refused.items() if v}
    order = [int(doc.device[1:]) for doc in believed]
    assert order == sorted(order)  # arrival order
    assert workers.verified == count - refused["not_enrolled"] - refused["unsigned"] and workers.pids()

    again = verifier.replies(("telemetry",), lambda doc, body: doc, snapshot=True, workers=workers)
    reread = [doc for at, payload in replies[:CHECK_BATCH] for doc in again.feed(at, payload)]  # the same bytes
    assert len(reread + again.finish()) == sum(1 for i in range(CHECK_BATCH) if i % 50 not in (7, 19, 23, 31, 37))
    again.close()
