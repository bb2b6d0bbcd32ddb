{{/* The release's base name: "aima" for a release called aima, else "<release>-aima". */}}
{{- define "aima.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aima.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aima.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels of every object; "component" is passed as (dict "ctx" $ "component" "operator"). */}}
{{- define "aima.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: aima
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "aima.selectorLabels" . }}
{{- end -}}

{{- define "aima.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aima.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "aima.operatorName" -}}{{ include "aima.fullname" . }}-operator{{- end -}}
{{- define "aima.gatewayName" -}}{{ include "aima.fullname" . }}-gateway{{- end -}}
{{- define "aima.gatewayNamespace" -}}{{ default .Release.Namespace .Values.gateway.namespace }}{{- end -}}
{{- define "aima.mcpName" -}}{{ include "aima.fullname" . }}-mcp{{- end -}}
{{- define "aima.deviceAgentName" -}}{{ include "aima.fullname" . }}-device-agent{{- end -}}

{{/*
The gateway and operator pods of this release, as a JSON label selector: the peers that engine pods
accept connections from (aima.domain.network_policy). These are the labels their pod templates carry.
*/}}
{{- define "aima.platformPodSelector" -}}
{{- $component := dict "key" "app.kubernetes.io/component" "operator" "In" "values" (list "gateway" "operator") -}}
{{- $release := dict "app.kubernetes.io/name" (include "aima.name" .) "app.kubernetes.io/instance" .Release.Name -}}
{{- dict "matchLabels" $release "matchExpressions" (list $component) | toJson -}}
{{- end -}}

{{/* The pod template parts every AIMA Deployment shares. */}}
{{- define "aima.podCommon" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Extra AIMA_* environment variables from a map, in a stable order. */}}
{{- define "aima.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
The operator's Secrets: an AlertRule's webhook URL is read from a Secret beside it, and a
PipelineRun's binary outputs are kept in a Secret it owns. Never listed or watched, so it cannot
enumerate them; cluster-wide only when it serves the whole cluster (else a Role per namespace).
*/}}
{{- define "aima.operatorSecretRules" -}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch]
{{- end -}}

{{/*
How the operator and the MCP server call the gateway (PipelineRuns, inference.* units): its Service,
with a ServiceAccount token whose audience is the gateway's own, so the token is useless against the
API server; the gateway trusts these two ServiceAccounts (gateway.trustedServiceAccounts) through a
TokenReview. An API key from a Secret (`apiKeySecret`) replaces the token.
*/}}
{{- define "aima.gatewayClientEnv" -}}
{{- if .ctx.Values.gateway.enabled }}
- name: AIMA_GATEWAY_URL
  value: http://{{ include "aima.gatewayName" .ctx }}.{{ .ctx.Release.Namespace }}.svc:{{ .ctx.Values.gateway.service.port }}
{{- if .apiKeySecret }}
- name: AIMA_GATEWAY_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .apiKeySecret }}
      key: key
{{- else }}
- name: AIMA_GATEWAY_TOKEN_FILE
  value: /var/run/secrets/aima/gateway/token
{{- end }}
{{- end }}
{{- end -}}

{{- define "aima.gatewayClientMount" -}}
{{- if .Values.gateway.enabled }}
- name: gateway-token
  mountPath: /var/run/secrets/aima/gateway
  readOnly: true
{{- end }}
{{- end -}}

{{- define "aima.gatewayClientVolume" -}}
{{- if .Values.gateway.enabled }}
- name: gateway-token
  projected:
    sources:
      - serviceAccountToken:
          audience: aima-gateway
          expirationSeconds: 3600
          path: token
{{- end }}
{{- end -}}
