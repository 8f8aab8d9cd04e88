{{/* The five services, their ports and what each does (the contract of DESIGN.md). */}}
{{- define "pooch.services" -}}
collector: 8001
featurizer: 8002
trainer: 8003
scorer: 8004
supervisor: 8005
{{- end -}}

{{- define "pooch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pooch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "pooch.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "pooch.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pooch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "pooch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pooch-predictor
{{- end -}}

{{/* Selects every pod of this release (NetworkPolicies). */}}
{{- define "pooch.releaseSelector" -}}
app.kubernetes.io/name: {{ include "pooch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component; call with (dict "root" $ "component" "scorer"). */}}
{{- define "pooch.selectorLabels" -}}
{{ include "pooch.releaseSelector" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pooch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pooch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pooch.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* Pod-level security: non-root (the image's uid), RuntimeDefault seccomp. */}}
{{- define "pooch.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "pooch.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The Redis URL; a password from an existing Secret is interpolated by Kubernetes from
     POOCH_REDIS_PASSWORD (defined before it), so it never appears in values or manifests. */}}
{{- define "pooch.redisUrl" -}}
{{- $r := .Values.redis -}}
{{- $scheme := ternary "rediss" "redis" $r.tls -}}
{{- if $r.existingSecret -}}
{{ $scheme }}://:$(POOCH_REDIS_PASSWORD)@{{ $r.host }}:{{ $r.port }}/{{ $r.db }}
{{- else -}}
{{ $scheme }}://{{ $r.host }}:{{ $r.port }}/{{ $r.db }}
{{- end -}}
{{- end -}}

{{/* Environment every pod of the release needs: Kafka, Redis, topic prefix, logging. */}}
{{- define "pooch.commonEnv" -}}
- name: POOCH_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required (an existing Kafka's bootstrap servers)" .Values.kafka.bootstrap | quote }}
- name: POOCH_TOPIC_PREFIX
  value: {{ .Values.topicPrefix | quote }}
- name: POOCH_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: POOCH_LOG_FORMAT
  value: json
{{- if .Values.kafka.sasl.enabled }}
- name: POOCH_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.existingSecret is required when kafka.sasl.enabled" .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: POOCH_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: POOCH_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.passwordKey }}
{{- end }}
- name: POOCH_REDIS_URL
  value: {{ include "pooch.redisUrl" . | quote }}
{{- end -}}

{{/* Fails the render when production: true lacks the secrets people must set. */}}
{{- define "pooch.productionChecks" -}}
{{- if .Values.production -}}
{{- if not .Values.supervisor.operatorToken.existingSecret -}}
{{- fail "production: true needs supervisor.operatorToken.existingSecret (a Secret holding the operator's bearer token)" -}}
{{- end -}}
{{- if not .Values.collector.apiKeys.existingSecret -}}
{{- fail "production: true needs collector.apiKeys.existingSecret (a Secret holding the app's API keys, comma-separated)" -}}
{{- end -}}
{{- if not .Values.modelSigning.trustedKeys -}}
{{- fail "production: true needs modelSigning.trustedKeys (the public keys of the trainer and the supervisor: pooch models keygen)" -}}
{{- end -}}
{{- if not (and .Values.modelSigning.trainer.existingSecret .Values.modelSigning.supervisor.existingSecret) -}}
{{- fail "production: true needs modelSigning.trainer.existingSecret and modelSigning.supervisor.existingSecret (their private signing keys)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap data of one service: its port and the extra settings of values. */}}
{{- define "pooch.serviceConfig" -}}
{{- $svc := index .root.Values .name -}}
{{- $prefix := printf "POOCH_%s_" (upper .name) -}}
{{ $prefix }}PORT: {{ .port | quote }}
{{- range $k, $v := $svc.env }}
{{ $prefix }}{{ upper $k }}: {{ $v | toString | quote }}
{{- end }}
{{- if and (eq .name "trainer") $svc.dask.enabled }}
{{- if not $svc.dask.scheduler }}
{{- fail "trainer.dask.enabled needs trainer.dask.scheduler (the Dask scheduler's address, tcp://host:8786)" }}
{{- end }}
POOCH_TRAINER_ENGINE: "dask"
POOCH_TRAINER_DASK_SCHEDULER: {{ $svc.dask.scheduler | quote }}
{{- end }}
{{- if and (eq .name "supervisor") $svc.policies }}
POOCH_SUPERVISOR_POLICIES_FILE: /etc/pooch/policies/policies.toml
policies.toml: |
  {{- $svc.policies | nindent 2 }}
{{- end }}
{{- end -}}
