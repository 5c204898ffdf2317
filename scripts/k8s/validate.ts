/**
 * Schema validation of rendered manifests with kubernetes-models (the Kubernetes OpenAPI
 * schemas compiled to validators) and @kubernetes-models/prometheus-operator for the
 * monitoring CRDs. A kind without a known schema is an error: nothing passes unchecked.
 */
import { Deployment, StatefulSet, DaemonSet } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { Ingress, NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import {
  PodMonitor,
  PrometheusRule,
  ServiceMonitor,
} from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import type { Manifest } from './manifests.js';

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: never) => Validatable;

const MODELS: Record<string, ModelClass> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Namespace': Namespace,
  'v1/Pod': Pod,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'apps/v1/DaemonSet': DaemonSet,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'networking.k8s.io/v1/Ingress': Ingress,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'monitoring.coreos.com/v1/PodMonitor': PodMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
};

export const describeManifest = (manifest: Manifest): string =>
  `${manifest.kind} ${
    typeof manifest.metadata.namespace === 'string' ? `${manifest.metadata.namespace}/` : ''
  }${manifest.metadata.name}`;

interface SchemaError {
  instancePath?: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** Returns one message per schema violation, `Kind name: /json/path: message`. */
export function validateManifest(manifest: Manifest): string[] {
  const id = `${manifest.apiVersion}/${manifest.kind}`;
  const Model = MODELS[id];
  if (!Model) return [`${describeManifest(manifest)}: no schema known for ${id}`];
  try {
    new Model(structuredClone(manifest) as never).validate();
    return [];
  } catch (error) {
    const details = (error as { errors?: SchemaError[] }).errors;
    if (!Array.isArray(details) || details.length === 0) {
      return [`${describeManifest(manifest)}: ${(error as Error).message}`];
    }
    return details.map((detail) => {
      const extra =
        detail.params && 'allowedValues' in detail.params
          ? ` (${JSON.stringify(detail.params.allowedValues)})`
          : '';
      return `${describeManifest(manifest)}: ${detail.instancePath || '/'}: ${detail.message ?? 'invalid'}${extra}`;
    });
  }
}

export function validateManifests(manifests: Manifest[]): string[] {
  return manifests.flatMap(validateManifest);
}
