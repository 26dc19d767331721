"""The fleet benchmark: how many gateways one Redis carries.

N simulated gateway replicas (threads in a few simulator processes) each make the Redis
traffic a gateway's background work makes, through the registry_client code and the
gateway's own quality and rollout classes, at the gateway's default settings: the hint
subscription, the epoch poll and rule reads, the heartbeat, statistics and sketch flushes,
the prediction log, the label joiner's and rollout controller's leases, the quality configs
and gauges, the drift monitor. Against one redis-server and a Redis Cluster of three shards,
each pinned to the server CPU (the simulator to the client CPU), it reports per N Redis's
commands, bytes, memory and CPU per replica, what dominates its CPU, and how long a rule
written with RegistryClient.set_route takes to reach every gateway; and whether the simulator
kept its schedule.

    python -m benchmarks.fleet [--replicas 10,50,200,500] [--deployments single,cluster]
        [--rounds 3] [--duration 30] [--warmup 10] [--changes 20] [--models 5]
        [--requests-per-second 50] [--setting NAME=VALUE ...] [--json-out FILE]

A smoke run in about a minute:

    python -m benchmarks.fleet --replicas 10 --deployments single --rounds 1 --duration 10 \\
        --warmup 3 --changes 5
"""
