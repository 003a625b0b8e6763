{{/* Names and labels shared by every object. */}}
{{- define "lakecache.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lakecache.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lakecache.labels" -}}
app.kubernetes.io/name: {{ include "lakecache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "lakecache.selector" -}}
app.kubernetes.io/name: {{ include "lakecache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lakecache.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "lakecache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "lakecache.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding each credential: the user's existing one, or the chart's. */}}
{{- define "lakecache.catalogSecret" -}}
{{- .Values.catalog.existingSecret | default (printf "%s-catalog" (include "lakecache.fullname" .)) -}}
{{- end -}}
{{- define "lakecache.s3Secret" -}}
{{- .Values.lake.s3.existingSecret | default (printf "%s-s3" (include "lakecache.fullname" .)) -}}
{{- end -}}
{{- define "lakecache.adminSecret" -}}
{{- .Values.admin.existingSecret | default (printf "%s-admin" (include "lakecache.fullname" .)) -}}
{{- end -}}
{{- define "lakecache.metricsSecret" -}}
{{- .Values.metrics.existingSecret | default (printf "%s-metrics" (include "lakecache.fullname" .)) -}}
{{- end -}}
{{- define "lakecache.s3Credentials" -}}
{{- or .Values.lake.s3.existingSecret .Values.lake.s3.accessKey -}}
{{- end -}}
{{- define "lakecache.metricsToken" -}}
{{- or .Values.metrics.existingSecret .Values.metrics.token -}}
{{- end -}}

{{/* Environment shared by the server and the agents that work on the catalog directly. */}}
{{- define "lakecache.catalogEnv" -}}
- name: LAKECACHE_HOME
  value: /var/lib/lakecache
- name: LAKECACHE_CATALOG
  valueFrom:
    secretKeyRef:
      name: {{ include "lakecache.catalogSecret" . }}
      key: {{ .Values.catalog.urlKey }}
- name: LAKECACHE_LAKE
  value: {{ .Values.lake.url | quote }}
{{- with .Values.lake.s3.endpoint }}
- name: LAKECACHE_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.lake.s3.publicEndpoint }}
- name: LAKECACHE_S3_PUBLIC_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.lake.s3.region }}
- name: LAKECACHE_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- if include "lakecache.s3Credentials" . }}
- name: LAKECACHE_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "lakecache.s3Secret" . }}
      key: {{ .Values.lake.s3.accessKeyKey }}
- name: LAKECACHE_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "lakecache.s3Secret" . }}
      key: {{ .Values.lake.s3.secretKeyKey }}
{{- end }}
{{- end -}}

{{/* The writable folders of a read-only root filesystem. */}}
{{- define "lakecache.scratchVolumes" -}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}
{{- define "lakecache.scratchMounts" -}}
- name: home
  mountPath: /var/lib/lakecache
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* One site's cache volume as a pod volume named "cache". */}}
{{- define "lakecache.cacheVolume" -}}
{{- $site := .site -}}
{{- $v := $site.volume -}}
- name: cache
{{- if $v.hostPath }}
  hostPath:
    path: {{ $v.hostPath.path | quote }}
    type: {{ $v.hostPath.type | default "DirectoryOrCreate" }}
{{- else if $v.nfs }}
  nfs:
    server: {{ $v.nfs.server | quote }}
    path: {{ $v.nfs.path | quote }}
{{- else if $v.persistentVolumeClaim }}
  persistentVolumeClaim:
    claimName: {{ $v.persistentVolumeClaim.claimName | default (printf "%s-%s-cache" (include "lakecache.fullname" .root) $site.name) }}
{{- end }}
{{- end -}}
