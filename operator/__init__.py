"""The control plane: kopf handlers, scaling policy, dead-letter mover, status."""
