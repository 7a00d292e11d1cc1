"""The supply-chain check itself catches what it is meant to catch."""

from __future__ import annotations

from pathlib import Path

from helpers import REPO as ROOT
from helpers import load_script

supply_chain = load_script("scripts/supply_chain.py", "supply_chain")


def test_base58_checksum_separates_addresses_from_words() -> None:
    assert supply_chain.is_base58_address("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa")  # the genesis coinbase address
    assert not supply_chain.is_base58_address("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb")
    assert supply_chain.BECH32.search("send to bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq now")


def test_repository_is_clean() -> None:
    assert supply_chain.scan_sources() == []


def test_planted_wallet_pool_and_endpoint_are_found(tmp_path: Path, monkeypatch: object) -> None:
    bad = ROOT / "src" / "openmos" / "_planted_for_test.py"
    bad.write_text('FEE = "stratum+tcp://fee.evilpool.com:3333"\nWALLET = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"\n'
                   'PHONE_HOME = "https://auth.minerlink.com/check"\n')
    try:
        original = supply_chain.tracked_files
        supply_chain.tracked_files = lambda: [*original(), bad]
        found = " ".join(supply_chain.scan_sources())
    finally:
        supply_chain.tracked_files = original
        bad.unlink()
    assert "hard-coded pool" in found and "base58 address" in found and "auth.minerlink.com" in found


def test_an_unreachable_audit_service_is_one_clear_line() -> None:
    """Offline, `make test` printed the first 300 characters of pip-audit's traceback ("Traceback (most recent
    call last): File ...") instead of what went wrong."""
    stderr = ('Traceback (most recent call last):\n  File "x/urllib3/connection.py", line 239, in _new_conn\n'
              "    sock = connection.create_connection(\nsocket.gaierror: [Errno -3] Temporary failure\n\n"
              "During handling of the above exception, another exception occurred:\n\n"
              "Traceback (most recent call last):\n  File \"y.py\", line 1, in <module>\n"
              "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='pypi.org', port=443): Max retries\n")
    line = supply_chain.audit_failure(stderr)
    assert line.startswith("requests.exceptions.ConnectionError: HTTPSConnectionPool(host='pypi.org'")
    assert "Traceback" not in line and "File " not in line
    assert supply_chain.audit_failure("") == "no output"
    assert len(supply_chain.audit_failure("E: " + "x" * 1000)) <= 240
