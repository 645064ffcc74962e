{{/*
The Deployment and Service of a component beside the judge: the embedders, the review desk, the
Label Studio bridge. Each is stateless (all it knows is read back from Kafka), runs the service
image with one command, and serves /metrics, /healthz and /readyz on its one port. Call with
(dict "root" $ "component" NAME "args" (list CMD) "replicas" N "portName" NAME "port" PORT
      "env" (list of name/value dicts) "secret" EXTRA-SECRET-OR-EMPTY "resources" RESOURCES
      "strategy" "Recreate"-OR-EMPTY).
*/}}
{{- define "labelwatch.component" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "labelwatch.fullname" $root }}-{{ .component }}
  labels:
    {{- include "labelwatch.componentLabels" . | nindent 4 }}
spec:
  replicas: {{ .replicas }}
  {{- with .strategy }}
  strategy:
    type: {{ . }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "labelwatch.componentSelectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "labelwatch.componentSelectorLabels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: {{ .component }}
          image: "{{ $root.Values.image.repository }}:{{ $root.Values.image.tag }}"
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: {{ toJson .args }}
          ports:
            - name: {{ .portName }}
              containerPort: {{ .port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "labelwatch.fullname" $root }}
            - secretRef:
                name: {{ include "labelwatch.secretName" $root }}
            {{- with .secret }}
            - secretRef:
                name: {{ . }}
            {{- end }}
          # the component's own settings (env wins over envFrom)
          env:
            {{- toYaml .env | nindent 12 }}
            - name: HOME
              value: /tmp
            - name: XDG_CACHE_HOME
              value: /tmp/.cache
          startupProbe:
            httpGet:
              path: /healthz
              port: {{ .portName }}
            periodSeconds: {{ $root.Values.probes.startup.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.startup.failureThreshold }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: {{ .portName }}
            periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
            timeoutSeconds: 5
          readinessProbe:
            httpGet:
              path: /readyz
              port: {{ .portName }}
            periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
            timeoutSeconds: 5
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $root.Values.kafka.tls.enabled }}
            - name: tls
              mountPath: /etc/labelwatch/tls
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- if $root.Values.kafka.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ required "kafka.tls.secretName is required when kafka.tls.enabled" $root.Values.kafka.tls.secretName }}
        {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
# The component's port in the cluster: /metrics for Prometheus (servicemonitor.yaml), and the desk's
# page or the bridge's webhooks.
apiVersion: v1
kind: Service
metadata:
  name: {{ include "labelwatch.fullname" $root }}-{{ .component }}
  labels:
    {{- include "labelwatch.componentLabels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "labelwatch.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: {{ .portName }}
      port: {{ .port }}
      targetPort: {{ .portName }}
      protocol: TCP
{{- end -}}
