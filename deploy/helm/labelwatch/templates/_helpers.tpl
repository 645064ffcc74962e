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

{{/*
A component's pods (embedder, desk, label-studio) have a name of their own, so that nothing of the
judge's selects them. Call with (dict "root" $ "component" "desk").
*/}}
{{- define "labelwatch.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "labelwatch.name" .root }}-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A component's Deployment, Service and ServiceMonitor carry these. */}}
{{- define "labelwatch.componentLabels" -}}
helm.sh/chart: {{ include "labelwatch.chart" .root }}
{{ include "labelwatch.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "labelwatch.embedderSelectorLabels" -}}
{{ include "labelwatch.componentSelectorLabels" (dict "root" . "component" "embedder") }}
{{- end -}}

{{- define "labelwatch.embedderLabels" -}}
{{ include "labelwatch.componentLabels" (dict "root" . "component" "embedder") }}
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

{{/* The desk's Secret (LABELWATCH_REVIEWERS, LABELWATCH_SESSION_SECRET) and the bridge's (LABELWATCH_LABEL_STUDIO_TOKEN). */}}
{{- define "labelwatch.deskSecretName" -}}
{{- default (printf "%s-desk" (include "labelwatch.fullname" .)) .Values.desk.existingSecret -}}
{{- end -}}
{{- define "labelwatch.labelStudioSecretName" -}}
{{- default (printf "%s-label-studio" (include "labelwatch.fullname" .)) .Values.labelStudio.existingSecret -}}
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
{{- if and .Values.desk.enabled (not .Values.desk.existingSecret) (not .Values.desk.reviewers) -}}
{{- fail "desk.enabled needs desk.reviewers (id:token,id:token) or desk.existingSecret: nobody could sign in" -}}
{{- end -}}
{{- if and .Values.desk.enabled (gt (int .Values.desk.replicaCount) 1) (not .Values.desk.existingSecret) (not .Values.desk.sessionSecret) -}}
{{- fail "desk.replicaCount > 1 needs desk.sessionSecret (or desk.existingSecret): a sign-in must work on every replica" -}}
{{- end -}}
{{- if .Values.labelStudio.enabled -}}
{{- if and (not .Values.labelStudio.existingSecret) (not .Values.labelStudio.token) -}}
{{- fail "labelStudio.enabled needs labelStudio.token or labelStudio.existingSecret: the bridge calls Label Studio's API" -}}
{{- end -}}
{{- if not (or .Values.labelStudio.sourceProject .Values.labelStudio.reviewProject) -}}
{{- fail "labelStudio.enabled needs labelStudio.sourceProject and/or labelStudio.reviewProject" -}}
{{- end -}}
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
