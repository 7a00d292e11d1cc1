"""Device APIs: cgminer-compatible TCP API (4028), REST with OpenAPI, Prometheus metrics, the web page.

Owns the wire formats other tools speak and the access rules for them (allow lists, tokens, roles, request
limits). Layout: ``cgminer/`` (``protocol`` wire format, ``server`` TCP framing and limits, ``handlers``
commands), ``app`` (REST assembly) with ``deps``, ``middleware``, ``errors``, ``models`` and one router per
resource in ``routers/``, ``auth`` (accounts, throttled logins), ``service`` (starts both next to an agent).
Everything reads the agent through ``DeviceView`` and changes it through the device control surface
(``openmos.control``), like the fleet and energy do. Imports ``base``, ``control``, ``bitcoin``, ``stratum``,
``hw``, ``tuning``, ``security``, ``miner`` and ``maintenance``; above it: ``fleet``, ``mqtt``, ``testbed``, the
CLI, and the HTTP and cgminer servers of ``jd`` and ``proxy``.
"""
