{{/* The image of component `.name` (cutover-controller, cutover-router). */}}
{{- define "cutover.image" -}}
{{ .root.Values.image.registry }}/{{ .name }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "cutover.labels" -}}
app.kubernetes.io/part-of: cutover
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The restricted security context of every container. */}}
{{- define "cutover.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities: { drop: ["ALL"] }
{{- end -}}
