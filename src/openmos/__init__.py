"""OpenMOS: an open, modular mining operating system for Bitcoin SHA-256 miners.

Layers, lowest first (a layer imports only the ones below it):

- ``base``     clocks, atomic file writes, the one asyncio server lifecycle (used by every layer)
- ``control``  the one typed device control surface (commands, status, ``UnsupportedControl``)
- ``bitcoin``  pure primitives: hashing, headers, targets, merkle, version rolling
- ``security`` signed updates, integrity scanner, pool desired state (imports ``base`` only)
- ``emulator`` wire-level BM13xx / Bitaxe emulator on ptys (independent of ``hw``: imports ``base`` only)
- ``integrations`` third-party tools (pyasic) over the devices' public wire APIs
- ``stratum``  Stratum V1 wire protocol, job model and asyncio client; ``stratum.v2``: SV2 codec, Noise, client
- ``node``     Bitcoin node access: Core JSON-RPC client/server, block templates, template policy
- ``hw``       hardware abstraction layer and backends (CPU, simulator, BM13xx chips on Bitaxe and serial boards)
- ``energy``   site economics, optimiser, Modbus meters, OpenADR, curtailment (imports ``base``, ``control``)
- ``pool``     the built-in local pool, Stratum V1 and V2 (template chain, vardiff, validation)
- ``maintenance`` predictive maintenance: health features from telemetry, an explainable model, its scoring
- ``tuning``   autotuner, performance targets and profiles, cooling and thermal protection (uses ``hw``)
- ``miner``    the device agent: pool manager, work dispatch, nonce re-validation
- ``api``      cgminer API (4028), REST with OpenAPI, Prometheus, the web page, access rules
- ``jd``       Job Declarator Client: miner-built templates declared to the pool (``mos jd``)
- ``proxy``    farm proxy: Stratum V1 miners -> one encrypted Stratum V2 extended channel
- ``mqtt``     MQTT with Home Assistant discovery for agents and fleet devices (uses ``control``, ``miner``)
- ``fleet``    fleet control plane over eclipse-zenoh: nodes, polling, bulk actions, rollouts
- ``testbed``  simulated devices, sites (with a Modbus site meter) and cgminer farms on the control surface
               (physics stays in ``hw.sim``)
- ``cli``      the ``mos`` command line
"""

__version__ = "0.1.0"
