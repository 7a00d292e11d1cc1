"""Pool URLs for the Stratum clients: the one implementation lives in :mod:`openmos.base.url` (shared with the
APIs, the pool-state enforcement and the scanner); these names stay importable from here."""

from openmos.base.url import MAX_URL, PoolUrl, normal_host, normalise_url

__all__ = ["MAX_URL", "PoolUrl", "normal_host", "normalise_url"]
