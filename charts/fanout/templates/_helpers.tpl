{{/*
Names, labels and derived values shared by the templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "fanout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else the release name,
plus the chart name when the release name does not already contain it.
Truncated so that "<fullname>-redis-headless" stays a valid DNS label.
*/}}
{{- define "fanout.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "fanout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "fanout.labels" -}}
helm.sh/chart: {{ include "fanout.chart" . }}
app.kubernetes.io/name: {{ include "fanout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fanout
{{- end }}

{{/* Selector labels of the operator. */}}
{{- define "fanout.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fanout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the bundled Redis. */}}
{{- define "fanout.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fanout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "fanout.operator.fullname" -}}
{{- printf "%s-operator" (include "fanout.fullname" .) }}
{{- end }}

{{- define "fanout.redis.fullname" -}}
{{- printf "%s-redis" (include "fanout.fullname" .) }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "fanout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fanout.operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The fanout image: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "fanout.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Whether the chart runs its own Redis. */}}
{{- define "fanout.redis.bundled" -}}
{{- if not .Values.redis.external.url }}true{{ end }}
{{- end }}

{{/*
The Redis URL the operator uses and passes on to the data plane. The bundled
Redis is addressed as <service>.<namespace>.svc so that route pods in every
namespace reach it, whatever the cluster domain. An external Redis with a
password gets ":$(REDIS_PASSWORD)@" spliced in; Kubernetes expands it from
the REDIS_PASSWORD variable defined before FANOUT_REDIS_URL in the container.
*/}}
{{- define "fanout.redisURL" -}}
{{- if and .Values.redis.external.url .Values.redis.external.passwordSecret.name }}
{{- regexReplaceAll "^(rediss?://)" .Values.redis.external.url "${1}:$(REDIS_PASSWORD)@" }}
{{- else if .Values.redis.external.url }}
{{- .Values.redis.external.url }}
{{- else }}
{{- printf "redis://%s.%s.svc:6379" (include "fanout.redis.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}
