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

{{/* The gateway's pods: serve, the only pods clients reach. */}}
{{- define "qwa.gatewaySelector" -}}
{{ include "qwa.selector" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* The runtime's pods: vLLM, reached by the gateway's pods alone. */}}
{{- define "qwa.runtimeSelector" -}}
{{ include "qwa.selector" . }}
app.kubernetes.io/component: runtime
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

{{/* The pod-level half of "restricted"; fsGroup makes Secrets readable to the pods' user. */}}
{{- define "qwa.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.uid }}
runAsGroup: {{ .Values.securityContext.uid }}
fsGroup: {{ .Values.securityContext.uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "qwa.tokensSecret" -}}{{ .Values.secrets.tokens.name | default (printf "%s-tokens" (include "qwa.fullname" .)) }}{{- end -}}
{{- define "qwa.tlsSecret" -}}{{ .Values.secrets.tls.name | default (printf "%s-tls" (include "qwa.fullname" .)) }}{{- end -}}
{{- define "qwa.auditKeySecret" -}}{{ .Values.secrets.auditKey.name | default (printf "%s-audit-key" (include "qwa.fullname" .)) }}{{- end -}}
{{- define "qwa.runtimeTLSSecret" -}}{{ .Values.secrets.runtimeTLS.name | default (printf "%s-runtime-tls" (include "qwa.fullname" .)) }}{{- end -}}
{{- define "qwa.upstreamTLSSecret" -}}{{ .Values.secrets.upstreamTLS.name | default (printf "%s-upstream-tls" (include "qwa.fullname" .)) }}{{- end -}}

{{/* The runtime's Service, and the name its certificate must carry. */}}
{{- define "qwa.runtimeService" -}}{{ printf "%s-runtime" (include "qwa.fullname" .) | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "qwa.runtimeServerName" -}}{{ printf "%s.%s.svc" (include "qwa.runtimeService" .) .Release.Namespace }}{{- end -}}
{{/* The environment variable kubelet sets to the runtime Service's cluster IP (service links). */}}
{{- define "qwa.runtimeHostEnv" -}}{{ printf "%s_SERVICE_HOST" (include "qwa.runtimeService" . | upper | replace "-" "_") }}{{- end -}}
