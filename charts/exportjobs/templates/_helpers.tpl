{{/* Names, labels and small shared snippets of the exportjobs chart. */}}

{{/* The chart name (nameOverride wins), cut to 63 characters: a DNS label. */}}
{{- define "exportjobs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else "<release>-<name>" (or just the release
name when it already contains the chart name). 63 characters at most: a DNS label.
*/}}
{{- define "exportjobs.fullname" -}}
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
"<fullname>-<component>", at most 63 characters: the name of a component's objects. The prefix is
cut, never the suffix, so two components of one long-named release still get distinct names.
*/}}
{{- define "exportjobs.componentName" -}}
{{- $suffix := printf "-%s" .component }}
{{- $prefix := include "exportjobs.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s%s" $prefix $suffix }}
{{- end }}

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "exportjobs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "exportjobs.labels" -}}
helm.sh/chart: {{ include "exportjobs.chart" . }}
{{ include "exportjobs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: exportjobs
{{- end }}

{{/* Labels that select this release's pods (add app.kubernetes.io/component per workload). */}}
{{- define "exportjobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "exportjobs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Where the ExportJobs live. */}}
{{- define "exportjobs.exportsNamespace" -}}
{{- default .Release.Namespace .Values.exportsNamespace }}
{{- end }}

{{/* ServiceAccount names: given, else "<fullname>-<component>" (or "default" if not created). */}}
{{- define "exportjobs.serviceAccountName" -}}
{{- $sa := index .root.Values.serviceAccounts .component }}
{{- if $sa.create }}
{{- default (include "exportjobs.componentName" .) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* image reference: repository:tag, the tag defaulting to the appVersion. */}}
{{- define "exportjobs.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The Secret with AWS keys, if any: existingSecret, else the chart's when keys are given. */}}
{{- define "exportjobs.s3SecretName" -}}
{{- if .Values.s3.existingSecret }}
{{- .Values.s3.existingSecret }}
{{- else if .Values.s3.accessKeyId }}
{{- include "exportjobs.componentName" (dict "root" . "component" "s3") }}
{{- end }}
{{- end }}

{{/* The Secret with the webhook's tokens and API keys. */}}
{{- define "exportjobs.authSecretName" -}}
{{- default (include "exportjobs.componentName" (dict "root" . "component" "auth")) .Values.auth.existingSecret }}
{{- end }}

{{/* S3 settings shared by the webhook and the operator containers. */}}
{{- define "exportjobs.s3Env" -}}
{{- with .Values.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The Secret with one component's AWS keys (dict "root" . "component" NAME): its own
  (s3.componentKeys.NAME), else the shared one; empty when there is none. */}}
{{- define "exportjobs.s3SecretNameFor" -}}
{{- $own := index (.root.Values.s3.componentKeys | default dict) .component | default dict }}
{{- if $own.existingSecret }}
{{- $own.existingSecret }}
{{- else if $own.accessKeyId }}
{{- include "exportjobs.componentName" (dict "root" .root "component" (printf "s3-%s" .component)) }}
{{- else }}
{{- include "exportjobs.s3SecretName" .root }}
{{- end }}
{{- end }}

{{/* envFrom for a component's S3 keys Secret (dict "root" . "component" NAME), if any. */}}
{{- define "exportjobs.s3EnvFrom" -}}
{{- with include "exportjobs.s3SecretNameFor" . }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{/* The Secret with the completion callbacks' signing secrets; empty when there is none. */}}
{{- define "exportjobs.notifySecretName" -}}
{{- if .Values.notifications.existingSecret }}
{{- .Values.notifications.existingSecret }}
{{- else if .Values.notifications.secrets }}
{{- include "exportjobs.componentName" (dict "root" . "component" "notify") }}
{{- end }}
{{- end }}

{{/* Where completion callbacks may go: read by the webhook (at POST) and the operator. */}}
{{- define "exportjobs.callbackEnv" -}}
- name: EXPORTJOBS_CALLBACK_ALLOWLIST
  value: {{ join "," .Values.notifications.allowlist | quote }}
- name: EXPORTJOBS_CALLBACK_ALLOW_HTTP
  value: {{ .Values.notifications.allowHttp | quote }}
{{- end }}

{{/* imagePullSecrets of a component: the global ones, then its own (.component's values). */}}
{{- define "exportjobs.pullSecrets" -}}
{{- concat (.root.Values.imagePullSecrets | default list) (.values.imagePullSecrets | default list) | uniq | toJson }}
{{- end }}

{{/* Where a component's pods go and how they rank: pull secrets, priority, topology spread. */}}
{{- define "exportjobs.podPlacement" -}}
{{- with include "exportjobs.pullSecrets" . | fromJsonArray }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
