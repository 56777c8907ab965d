{{/*
The chart name, overridable with nameOverride; 63 characters is the limit of a label value.
*/}}
{{- define "streamscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: `<release>-<chart>` unless the release name already holds the
chart name. Everything a release creates starts with it, so two releases in one namespace never
collide.
*/}}
{{- define "streamscale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "streamscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every resource; pass a dict with "ctx" (the root context) and "component".
*/}}
{{- define "streamscale.labels" -}}
helm.sh/chart: {{ include "streamscale.chart" .ctx }}
{{ include "streamscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: streamscale
{{- end }}

{{/*
Selector labels (immutable in a Deployment's selector): name, instance and component.
*/}}
{{- define "streamscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamscale.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "streamscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: a digest pins it, else the tag (the chart's appVersion by default).
*/}}
{{- define "streamscale.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The kopf peering object's name (STREAMSCALE_PEERING_NAME). A ClusterKopfPeering is cluster-scoped,
so the release namespace is part of it: releases in different namespaces never share one.
*/}}
{{- define "streamscale.peeringName" -}}
{{- printf "%s-%s" .Release.Namespace (include "streamscale.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The demo Redis's name and the URL the operator gets for it.
*/}}
{{- define "streamscale.demoRedisName" -}}
{{- printf "%s-redis" (include "streamscale.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamscale.demoRedisUrl" -}}
{{- printf "redis://%s.%s.svc:6379/0" (include "streamscale.demoRedisName" .) .Release.Namespace }}
{{- end }}

{{/*
The namespaces that get a Role when rbac.clusterWide is false.
*/}}
{{- define "streamscale.roleNamespaces" -}}
{{- join "," (uniq .Values.operator.watchNamespaces) }}
{{- end }}

{{/*
Guards for value combinations values.schema.json cannot express (or not with a clear message).
Every template includes it, so `helm template` fails whatever is rendered.
*/}}
{{- define "streamscale.validate" -}}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "redis.url and redis.existingSecret are both set: the operator takes its Redis URL from one of them. Keep redis.existingSecret (a URL with a password belongs in a Secret) and clear redis.url." }}
{{- end }}
{{- if and .Values.demoRedis.enabled (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "demoRedis.enabled is true and redis.url or redis.existingSecret is set too: the operator can only use one Redis. Disable demoRedis or clear the Redis URL." }}
{{- end }}
{{- if and .Values.rbac.create (not .Values.rbac.clusterWide) (not .Values.operator.watchNamespaces) }}
{{- fail "rbac.clusterWide is false but operator.watchNamespaces is empty: an operator watching all namespaces needs a ClusterRole. List the namespaces to watch in operator.watchNamespaces, or set rbac.clusterWide=true." }}
{{- end }}
{{- if and .Values.example.enabled (not (or .Values.redis.url .Values.redis.existingSecret .Values.demoRedis.enabled)) }}
{{- fail "example.enabled is true but the operator has no Redis: the example StreamConsumer has no spec.redis and uses the operator's. Set redis.url or redis.existingSecret, or demoRedis.enabled=true for a first try." }}
{{- end }}
{{- if and .Values.example.enabled (not .Values.example.databaseSecret) }}
{{- fail "example.enabled is true but example.databaseSecret is empty: the operator refuses a StreamConsumer that stores rows without spec.database (the consumers would write SQLite inside their pods' emptyDir, and rows acked there are lost at the next scale-in). Create a Secret with a PostgreSQL URL and set example.databaseSecret to its name." }}
{{- end }}
{{- if and .Values.operator.watchNamespaces .Values.example.enabled (not (has .Release.Namespace .Values.operator.watchNamespaces)) }}
{{- fail (printf "example.enabled is true but the release namespace %q is not in operator.watchNamespaces, so the operator would never see the example StreamConsumer. Add it to operator.watchNamespaces." .Release.Namespace) }}
{{- end }}
{{- end }}
