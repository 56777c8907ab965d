"""The control plane: kopf handlers, scaling policy, dead-letter mover, status.

Entry point: `streamscale.operator.running.run(namespaces, all_namespaces)` (what
`streamscale operate` calls), or `operate(...)` to run it inside an event loop.

Layers, from the bottom: `constants`, `settings`; the pure `scaling` policy and its `Actuator`
protocol; `specs` (a StreamConsumer's spec, typed) and `deployment` (the Deployment made from it);
`observing` (XINFO GROUPS / CONSUMERS, with the NULL-lag estimate), `reclaiming` (the
dead-letter mover), `retention` (XTRIM MINID); `kube` (a small API client), `status`,
`metrics`; `reconciling` (the runtime and the per-StreamConsumer poller); `handlers` (kopf);
`running`.
"""
