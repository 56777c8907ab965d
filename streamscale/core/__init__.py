"""What the consumer, the operator and the CLI share; imports no other streamscale package.

Modules: `constants` (entry and dead-letter fields, reasons, HTTP paths), `streams` (typed
wrappers over the stream commands), `deadletter` (the atomic move and leave scripts), `backoff`,
`tasks` (spawning and cancelling long-lived tasks), `logs`, `serving` (the HTTP health and
metrics server).
"""
