{{/*
The rules in two blocks: what kopf itself needs, and what streamscale needs. No wildcards: every
group, resource and verb is named. The same streamscale block serves the ClusterRole and the Roles.
*/}}
{{- define "streamscale.rbac.operatorRules" -}}
# --- streamscale: what the operator itself needs ---
# The StreamConsumers it reconciles: read, watch, add its finalizer and annotations, write status.
- apiGroups: ["streamscale.io"]
  resources: ["streamconsumers"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["streamscale.io"]
  resources: ["streamconsumers/status"]
  verbs: ["get", "patch", "update"]
# The consumer Deployment's owner reference blocks the owner's deletion (blockOwnerDeletion),
# which clusters with OwnerReferencesPermissionEnforcement (OpenShift) allow only with this.
- apiGroups: ["streamscale.io"]
  resources: ["streamconsumers/finalizers"]
  verbs: ["update"]
# The consumer Deployment of each StreamConsumer: created, scaled and deleted by the operator.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Consumer pods: a group consumer whose pod is gone is cleaned up, never one that still runs.
# `patch`: before a scale-in, each pod's controller.kubernetes.io/pod-deletion-cost is set from
# its pending entries, so the ReplicaSet removes idle pods first.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
# spec.redis.urlSecretRef: the operator reads the Redis URL of a StreamConsumer itself, to poll
# its group's lag and pending. Only `get` by name (never list or watch); but Kubernetes cannot
# narrow `get` to the Secrets some StreamConsumer names, so with rbac.clusterWide=true this reaches
# every Secret in the cluster. rbac.clusterWide=false limits it to operator.watchNamespaces.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Its Events (scaling, dead letters) go through the kopf block's `events: create` grant.
{{- end }}
