"""Security: signed updates (TUF metadata via python-tuf) with A/B install and automatic revert, the
integrity / malware scanner, pool desired-state enforcement and pool-vs-device hashrate reconciliation.
Imports ``base`` (and the standard crypto libraries) only, so any layer above may use it.
"""
