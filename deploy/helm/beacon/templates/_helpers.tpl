{{/* The release's resource name. */}}
{{- define "beacon.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "beacon.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels that select the pods. */}}
{{- define "beacon.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret the pods read their environment from. */}}
{{- define "beacon.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "beacon.fullname" .) -}}
{{- end -}}

{{/* Seconds the kubelet waits after SIGTERM: preStop + drain + grace + flush, plus margin. */}}
{{- define "beacon.terminationGrace" -}}
{{- $s := .Values.shutdown -}}
{{- add $s.preStopSleepSeconds $s.drainDelaySeconds $s.graceSeconds $s.flushDeadlineSeconds 5 -}}
{{- end -}}
