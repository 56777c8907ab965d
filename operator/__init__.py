"""The control plane: kopf handlers, scaling policy, dead-letter mover, status.

Entry point: `streamscale.operator.running.run(namespaces, all_namespaces)` (what
`streamscale operate` calls), or `operate(...)` to run it inside an event loop.

Layers, from the bottom: `constants`; `forecasting` (arrival, service and per-replica rates from
consecutive polls); `settings` and the pure `scaling` policy with its
`Actuator` protocol; `specs` (a StreamConsumer's spec, typed); `deployment` (the Deployment made
from it); `observing` (XINFO GROUPS / CONSUMERS, with the NULL-lag estimate), `reclaiming` (the
dead-letter mover), `retention` (XTRIM MINID); `kube` (a small API client), `status`, `metrics`,
`redis_failures`; `reconciling` (the runtime and the per-StreamConsumer poller); `handlers`
(kopf); `running`. A module imports only from layers below its own, and the modules of one layer
not from each other: pyproject.toml's import-linter contract checks it.
"""
