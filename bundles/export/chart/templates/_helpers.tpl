{{/* The name every object of a release shares. */}}
{{- define "qwa.fullname" -}}
{{- printf "%s-qwen-appliance" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "qwa.labels" -}}
app.kubernetes.io/name: qwen-appliance
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.bundle.version | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "qwa.selector" -}}
app.kubernetes.io/name: qwen-appliance
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Pod Security "restricted", for every container. */}}
{{- define "qwa.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.uid }}
runAsGroup: {{ .Values.securityContext.uid }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "qwa.tokensSecret" -}}{{ .Values.secrets.tokens.name | default (printf "%s-tokens" (include "qwa.fullname" .)) }}{{- end -}}
{{- define "qwa.tlsSecret" -}}{{ .Values.secrets.tls.name | default (printf "%s-tls" (include "qwa.fullname" .)) }}{{- end -}}
{{- define "qwa.auditKeySecret" -}}{{ .Values.secrets.auditKey.name | default (printf "%s-audit-key" (include "qwa.fullname" .)) }}{{- end -}}
{{- define "qwa.auditClaim" -}}{{ .Values.audit.existingClaim | default (printf "%s-audit" (include "qwa.fullname" .)) }}{{- end -}}
