{{/* The name of everything the release makes: <release>-warden, or fullnameOverride. */}}
{{- define "warden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-warden" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "warden.selectorLabels" -}}
app.kubernetes.io/name: warden
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "warden.labels" -}}
{{ include "warden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The headless Service that gives each pod its DNS name for peers. */}}
{{- define "warden.headless" -}}
{{- printf "%s-peers" (include "warden.fullname" .) -}}
{{- end -}}

{{- define "warden.tokenSecret" -}}
{{- if .Values.operatorToken.existingSecret -}}
{{- .Values.operatorToken.existingSecret -}}
{{- else -}}
{{- printf "%s-operator" (include "warden.fullname" .) -}}
{{- end -}}
{{- end -}}
