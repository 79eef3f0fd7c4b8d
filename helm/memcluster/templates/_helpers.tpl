{{/* ===== Names and labels ================================================================ */}}

{{/* The chart's name. */}}
{{- define "memcluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name; components append "-node", "-coordinator", "-etcd". Kept to 40
characters so that StatefulSet pod names and their revision labels stay within 63. */}}
{{- define "memcluster.fullname" -}}
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

{{/* A component's object name. Usage: include "memcluster.componentName" (dict "ctx" $ "component" "node") */}}
{{- define "memcluster.componentName" -}}
{{- printf "%s-%s" (include "memcluster.fullname" .ctx) .component }}
{{- end }}

{{/* The headless Service of the nodes (peer DNS names, the StatefulSet's serviceName). */}}
{{- define "memcluster.node.headlessName" -}}
{{- printf "%s-headless" (include "memcluster.componentName" (dict "ctx" . "component" "node")) }}
{{- end }}

{{/* The headless Service of the bundled etcd (its members' DNS names). */}}
{{- define "memcluster.etcd.name" -}}
{{- include "memcluster.componentName" (dict "ctx" . "component" "etcd") }}
{{- end }}

{{- define "memcluster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. Usage: include "memcluster.labels" (dict "ctx" $ "component" "node") */}}
{{- define "memcluster.labels" -}}
helm.sh/chart: {{ include "memcluster.chart" .ctx }}
{{ include "memcluster.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: memcluster
{{- end }}

{{/* Selector labels: stable across upgrades (selectors and volumeClaimTemplates are immutable). */}}
{{- define "memcluster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "memcluster.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* name, namespace and labels of a component's object; "name" defaults to the component's.
Usage: include "memcluster.metadata" (dict "ctx" $ "component" "node" "name" "...") */}}
{{- define "memcluster.metadata" -}}
name: {{ .name | default (include "memcluster.componentName" .) }}
namespace: {{ .ctx.Release.Namespace }}
labels:
  {{- include "memcluster.labels" . | nindent 2 }}
{{- end }}

{{/* ===== Sizes and durations ============================================================= */}}

{{/* A human size as a whole number of bytes (a string): KB/MB/GB/TB are powers of 1000,
KiB..TiB powers of 1024, as in the node's configuration; case-insensitive; the unit's
trailing B may be left out ("256Mi"). Fails naming the value's key otherwise.
Usage: include "memcluster.bytes" (list "memory.tiers.hot.capacity" .Values.memory.tiers.hot.capacity) */}}
{{- define "memcluster.bytes" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 | toString }}
{{- $text := $value | trim | lower }}
{{- $re := "^([0-9]+(?:\\.[0-9]+)?)\\s*([kmgt]i?b?|b)?$" }}
{{- if not (regexMatch $re $text) }}
{{- fail (printf "%s: %q is not a size (examples: 512MB, 5GB, 1.5GiB)" $key $value) }}
{{- end }}
{{- $units := dict "" 1 "k" 1000 "m" 1000000 "g" 1000000000 "t" 1000000000000 "ki" 1024 "mi" 1048576 "gi" 1073741824 "ti" 1099511627776 }}
{{- $unit := regexReplaceAll $re $text "${2}" | trimSuffix "b" }}
{{- printf "%.0f" (mulf (regexReplaceAll $re $text "${1}" | float64) (index $units $unit)) }}
{{- end }}

{{/* A human duration ("30s", "1h30m", "500ms", or a number of seconds) in seconds.
Usage: include "memcluster.seconds" (list "nodes.gracePeriod" .Values.nodes.gracePeriod) */}}
{{- define "memcluster.seconds" -}}
{{- $key := index . 0 }}
{{- $value := index . 1 | toString }}
{{- $text := $value | trim | lower }}
{{- $part := "([0-9]+(?:\\.[0-9]+)?)\\s*(ms|s|m|h|d|w)" }}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)?$" $text }}
{{- $text }}
{{- else if regexMatch (printf "^(\\s*%s)+$" $part) $text }}
{{- $units := dict "ms" 0.001 "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 }}
{{- $total := 0.0 }}
{{- range regexFindAll $part $text -1 }}
{{- $seconds := mulf (regexReplaceAll $part . "${1}" | float64) (index $units (regexReplaceAll $part . "${2}")) }}
{{- $total = addf $total $seconds }}
{{- end }}
{{- $total }}
{{- else }}
{{- fail (printf "%s: %q is not a duration (examples: 500ms, 30s, 10m, 24h, 7d, 1h30m)" $key $value) }}
{{- end }}
{{- end }}

{{/* ===== Node sizing ===================================================================== */}}

{{/* Bytes of RAM the enabled hot and warm tiers may hold. */}}
{{- define "memcluster.node.ramBytes" -}}
{{- $total := 0.0 }}
{{- range $tier := list "hot" "warm" }}
{{- $config := index $.Values.memory.tiers $tier }}
{{- if $config.enabled }}
{{- $key := printf "memory.tiers.%s.capacity" $tier }}
{{- $total = addf $total (include "memcluster.bytes" (list $key $config.capacity) | float64) }}
{{- end }}
{{- end }}
{{- printf "%.0f" $total }}
{{- end }}

{{/* The node container's resources: memory request = limit = (hot + warm) x memoryFactor +
memoryBase, in Mi rounded up; CPU from nodes.sizing; anything in nodes.resources wins. */}}
{{- define "memcluster.node.resources" -}}
{{- $sizing := .Values.nodes.sizing }}
{{- $base := include "memcluster.bytes" (list "nodes.sizing.memoryBase" $sizing.memoryBase) | float64 }}
{{- $ram := include "memcluster.node.ramBytes" . | float64 }}
{{- $memory := printf "%.0fMi" (ceil (divf (addf (mulf $ram $sizing.memoryFactor) $base) 1048576)) }}
{{- $limits := dict "memory" $memory }}
{{- with $sizing.cpuLimit }}
{{- $_ := set $limits "cpu" . }}
{{- end }}
{{- $derived := dict "requests" (dict "memory" $memory "cpu" $sizing.cpuRequest) "limits" $limits }}
{{- toYaml (mergeOverwrite $derived (deepCopy .Values.nodes.resources)) }}
{{- end }}

{{/* The node's volume: nodes.persistence.size, else the cold capacity plus headroomPercent,
rounded up to whole Gi. */}}
{{- define "memcluster.node.volumeSize" -}}
{{- $persistence := .Values.nodes.persistence }}
{{- if $persistence.size }}
{{- $persistence.size }}
{{- else }}
{{- $cold := include "memcluster.bytes" (list "memory.tiers.cold.capacity" .Values.memory.tiers.cold.capacity) | float64 }}
{{- $withHeadroom := divf (mulf $cold (addf 100 $persistence.headroomPercent)) 100 }}
{{- printf "%.0fGi" (ceil (divf (round $withHeadroom 0) 1073741824)) }}
{{- end }}
{{- end }}

{{/* ===== Configuration files ============================================================= */}}

{{/* node.yaml: the node's settings, in DESIGN.md's shape. server.id, server.advertise and
cluster.etcd come from the environment (MEMCLUSTER_SERVER__ID, ...), per pod. */}}
{{- define "memcluster.node.config" -}}
{{- $server := dict "listen" (printf "0.0.0.0:%d" (int .Values.nodes.port)) "frames_listen" (printf "0.0.0.0:%d" (int .Values.nodes.framesPort)) "grace_period" .Values.nodes.gracePeriod }}
{{- $_ := set $server "metrics_listen" (ternary (printf "0.0.0.0:%d" (int .Values.metrics.port)) "" .Values.metrics.enabled) }}
{{- $cluster := merge (dict "name" .Values.clusterName) (deepCopy .Values.nodes.cluster) }}
{{- toYaml (dict "server" $server "limits" .Values.limits "memory" .Values.memory "cluster" $cluster) }}
{{- end }}

{{/* coordinator.yaml: a coordinator's settings (server.id, server.advertise and cluster.etcd
come from the environment). */}}
{{- define "memcluster.coordinator.config" -}}
{{- $c := .Values.coordinator }}
{{- $server := dict "listen" (printf "0.0.0.0:%d" (int $c.port)) "grace_period" $c.gracePeriod }}
{{- $cluster := merge (dict "name" .Values.clusterName) (deepCopy $c.cluster) }}
{{- toYaml (dict "server" $server "cluster" $cluster "topology" $c.topology "balancing" $c.balancing) }}
{{- end }}

{{/* ===== Pods ============================================================================ */}}

{{/* The etcd client endpoints (comma-separated host:port): the bundled members or the
external ones. */}}
{{- define "memcluster.etcd.endpoints" -}}
{{- if .Values.etcd.bundled }}
{{- $name := include "memcluster.etcd.name" . }}
{{- $endpoints := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $endpoints = append $endpoints (printf "%s-%d.%s:%d" $name $i (include "memcluster.dnsSuffix" (list $ $name)) (int $.Values.etcd.clientPort)) }}
{{- end }}
{{- join "," $endpoints }}
{{- else }}
{{- join "," .Values.etcd.external.endpoints }}
{{- end }}
{{- end }}

{{/* "<service>.<namespace>.svc.<clusterDomain>". Usage: include "memcluster.dnsSuffix" (list $ serviceName) */}}
{{- define "memcluster.dnsSuffix" -}}
{{- $ctx := index . 0 }}
{{- printf "%s.%s.svc.%s" (index . 1) $ctx.Release.Namespace $ctx.Values.clusterDomain }}
{{- end }}

{{- define "memcluster.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Environment shared by nodes and coordinators: the pod's name, its id, etcd. */}}
{{- define "memcluster.clusterEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: MEMCLUSTER_SERVER__ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: MEMCLUSTER_CLUSTER__ETCD
  value: {{ include "memcluster.etcd.endpoints" . | quote }}
{{- end }}

{{/* A native gRPC probe (grpc.health.v1) with the timings given.
Usage: include "memcluster.grpcProbe" (dict "port" 7400 "timing" .Values.nodes.livenessProbe) */}}
{{- define "memcluster.grpcProbe" -}}
grpc:
  port: {{ .port }}
{{- with .timing }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod-level settings every component shares: service account token, pull secrets,
security context, affinity (or the generated anti-affinity), node selector, tolerations,
priority class. Usage: include "memcluster.podSpec" (dict "ctx" $ "component" "node" "values" .Values.nodes) */}}
{{- define "memcluster.podSpec" -}}
{{- $values := .values -}}
automountServiceAccountToken: false
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- if $values.affinity }}
affinity:
  {{- toYaml $values.affinity | nindent 2 }}
{{- else if ne $values.podAntiAffinity "none" }}
{{- $term := dict "topologyKey" $values.topologyKey "labelSelector" (dict "matchLabels" (include "memcluster.selectorLabels" . | fromYaml)) }}
affinity:
  podAntiAffinity:
    {{- if eq $values.podAntiAffinity "required" }}
    requiredDuringSchedulingIgnoredDuringExecution:
      - {{ toYaml $term | indent 8 | trim }}
    {{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          {{- toYaml $term | nindent 10 }}
    {{- end }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* A pod template's metadata: the component's labels plus podLabels, podAnnotations, and a
checksum of its configuration so that a changed configuration rolls the pods.
Usage: include "memcluster.podMetadata" (dict "ctx" $ "component" "node" "values" .Values.nodes "config" $config) */}}
{{- define "memcluster.podMetadata" -}}
labels:
  {{- include "memcluster.labels" . | nindent 2 }}
  {{- with .values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- if or .config .values.podAnnotations }}
annotations:
  {{- with .config }}
  checksum/config: {{ sha256sum . }}
  {{- end }}
  {{- with .values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* A volumeClaimTemplate named "data". Usage: include "memcluster.volumeClaim"
(dict "ctx" $ "component" "node" "persistence" .Values.nodes.persistence "size" "12Gi") */}}
{{- define "memcluster.volumeClaim" -}}
metadata:
  name: data
  labels:
    {{- include "memcluster.selectorLabels" . | nindent 4 }}
spec:
  accessModes:
    {{- toYaml .persistence.accessModes | nindent 4 }}
  {{- with .persistence.storageClassName }}
  storageClassName: {{ . | quote }}
  {{- end }}
  resources:
    requests:
      storage: {{ .size }}
{{- end }}

{{/* ===== Checks the schema cannot express ================================================= */}}

{{- define "memcluster.checks" -}}
{{- $grace := include "memcluster.seconds" (list "nodes.gracePeriod" .Values.nodes.gracePeriod) | float64 }}
{{- $termination := .Values.nodes.terminationGracePeriodSeconds | float64 }}
{{- if lt $termination (addf $grace 10) }}
{{- fail (printf "nodes.terminationGracePeriodSeconds (%v) must be at least nodes.gracePeriod (%s) + 10 s: after the grace period a node flushes its RAM tiers to disk" $termination (toString .Values.nodes.gracePeriod)) }}
{{- end }}
{{- $tiers := .Values.memory.tiers }}
{{- if not (or $tiers.hot.enabled $tiers.warm.enabled $tiers.cold.enabled) }}
{{- fail "memory.tiers: at least one tier must be enabled" }}
{{- end }}
{{- range $tier, $config := $tiers }}
{{- $key := printf "memory.tiers.%s.capacity" $tier }}
{{- if and $config.enabled (eq (include "memcluster.bytes" (list $key $config.capacity)) "0") }}
{{- fail (printf "%s: must be above 0 when the tier is enabled" $key) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and (not .Values.etcd.bundled) (empty .Values.etcd.external.endpoints) }}
{{- fail "etcd.external.endpoints: give at least one host:port when etcd.bundled is false" }}
{{- end }}
{{- end }}
