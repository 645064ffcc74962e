{{/* Chart name, at most 63 characters. */}}
{{- define "labelwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release and chart, unless the release name already contains the chart name. */}}
{{- define "labelwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "labelwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "labelwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "labelwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The embedder pods' own name: the judge's Deployment and Service must not select them. */}}
{{- define "labelwatch.embedderSelectorLabels" -}}
app.kubernetes.io/name: {{ include "labelwatch.name" . }}-embedder
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: embedder
{{- end -}}

{{/* The embedder's Deployment and Service carry these: its own name, so nothing of the judge's selects them. */}}
{{- define "labelwatch.embedderLabels" -}}
helm.sh/chart: {{ include "labelwatch.chart" . }}
{{ include "labelwatch.embedderSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "labelwatch.labels" -}}
helm.sh/chart: {{ include "labelwatch.chart" . }}
{{ include "labelwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Secret with LABELWATCH_SASL_PASSWORD / LABELWATCH_SSL_PASSWORD. */}}
{{- define "labelwatch.secretName" -}}
{{- default (include "labelwatch.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The claim that holds the checkpoints. */}}
{{- define "labelwatch.claimName" -}}
{{- default (include "labelwatch.fullname" .) .Values.persistence.existingClaim -}}
{{- end -}}

{{/*
Render-time guards. More consumers than input partitions leave the extra pods idle, and several
pods need their per-dataset checkpoints on storage they all share (a dataset's partition moves
between pods on every rebalance).
*/}}
{{- define "labelwatch.validate" -}}
{{- if gt (int .Values.replicaCount) (int .Values.kafka.inputTopicPartitions) -}}
{{- fail (printf "replicaCount (%d) must not exceed kafka.inputTopicPartitions (%d): extra consumers in the group would sit idle" (int .Values.replicaCount) (int .Values.kafka.inputTopicPartitions)) -}}
{{- end -}}
{{- if and .Values.embedder.enabled (gt (int .Values.embedder.replicaCount) (int .Values.kafka.inputTopicPartitions)) -}}
{{- fail (printf "embedder.replicaCount (%d) must not exceed kafka.inputTopicPartitions (%d): extra embedders would sit idle" (int .Values.embedder.replicaCount) (int .Values.kafka.inputTopicPartitions)) -}}
{{- end -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- if not .Values.persistence.enabled -}}
{{- fail "replicaCount > 1 needs persistence.enabled: every pod must see every dataset's checkpoints" -}}
{{- end -}}
{{- if ne .Values.persistence.accessMode "ReadWriteMany" -}}
{{- fail "replicaCount > 1 needs persistence.accessMode ReadWriteMany: the checkpoints must be on storage shared by all pods" -}}
{{- end -}}
{{- end -}}
{{- end -}}
