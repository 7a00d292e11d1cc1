"""Device APIs: cgminer-compatible TCP API (4028), REST with OpenAPI, Prometheus metrics, the web page.

Owns the wire formats other tools speak and the access rules for them (allow lists, tokens, roles).
Everything reads the agent through ``DeviceView`` and acts through the agent's own methods. Imports
``miner``, ``tuning``, ``hw`` and below; nothing imports it but the CLI.
"""
