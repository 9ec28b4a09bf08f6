import type { Analysis, ExperimentSpec } from './experiment-spec.js';

/**
 * Where and how a promotion lands in the GitOps repository (pure): one folder per target, ready for
 * an ArgoCD Application or a Flux Kustomization pointed at it, holding the Kubernetes objects the
 * deployer applies (plain ConfigMap + DaemonSet, which any cluster serves), a kustomization, the
 * collector config itself, the evidence (the analysis as recorded) and a README saying what it is.
 */

/** A target's folder: `targets/<namespace>/<node selector>` (`_all-nodes` without one). */
export const targetFolderOf = (spec: ExperimentSpec): string => {
  const { namespace, nodeSelector } = spec.target;
  const selector = Object.keys(nodeSelector)
    .sort()
    .map((k) => `${k}=${nodeSelector[k]}`)
    .join(',')
    .replace(/[^A-Za-z0-9._=,-]+/g, '_');
  const ns = namespace.replace(/[^A-Za-z0-9._-]+/g, '_');
  return `targets/${ns}/${selector === '' ? '_all-nodes' : selector}`;
};

export interface PromotionDocument {
  readonly experimentId: string;
  readonly spec: ExperimentSpec;
  readonly analysis: Analysis;
  readonly actor: string;
  readonly requestedAt: string;
  /** The Kubernetes objects (multi-document YAML). */
  readonly manifests: string;
  /** The collector config (YAML). */
  readonly collectorConfig: string;
  /** keepList / thresholds the candidate ran with. */
  readonly tuning?: Readonly<Record<string, unknown>> | undefined;
}

const pct = (v: number | null): string => (v === null ? 'n/a' : `${v.toFixed(1)} %`);

/** The files of the target's folder. */
export const promotionFiles = (d: PromotionDocument): Record<string, string> => {
  const { spec, analysis } = d;
  const evidence = {
    experimentId: d.experimentId,
    name: spec.name,
    promotedBy: d.actor,
    requestedAt: d.requestedAt,
    target: spec.target,
    baseline: spec.baseline,
    candidate: { ...spec.candidate, ...(d.tuning ? { tuning: d.tuning } : {}) },
    criticalProcesses: spec.criticalProcesses,
    successCriteria: spec.successCriteria,
    analysis,
  };
  const readme = [
    `# ${spec.target.namespace} ${
      Object.entries(spec.target.nodeSelector)
        .map(([k, v]) => `${k}=${v}`)
        .join(',') || '(all nodes)'
    }`,
    '',
    `The process-metrics collector of this target runs \`${spec.candidate.template}\`, promoted by ${d.actor}`,
    `from experiment \`${d.experimentId}\` (“${spec.name}”), which replaced \`${spec.baseline.template}\`.`,
    '',
    '| figure | value |',
    '| --- | --- |',
    `| verdict | ${analysis.verdict} |`,
    `| cardinality reduction | ${pct(analysis.cardinalityReductionPct)} |`,
    `| datapoint reduction | ${pct(analysis.datapointReductionPct)} |`,
    `| critical process loss | ${pct(analysis.criticalProcessLossPct)} |`,
    '',
    'Files: `collector.yaml` (the Kubernetes objects, applied by ArgoCD/Flux through `kustomization.yaml`),',
    '`otelcol-config.yaml` (the collector config in them), `evidence.json` (the analysis as recorded).',
    'Roll back with `phoenix experiments rollback <id>`: Phoenix reverts this commit and rolls the baseline out.',
    '',
  ].join('\n');
  const kustomization = [
    'apiVersion: kustomize.config.k8s.io/v1beta1',
    'kind: Kustomization',
    `namespace: ${spec.target.namespace}`,
    'resources:',
    '  - collector.yaml',
    '',
  ].join('\n');
  return {
    'collector.yaml': d.manifests,
    'kustomization.yaml': kustomization,
    'otelcol-config.yaml': d.collectorConfig,
    'evidence.json': `${JSON.stringify(evidence, null, 2)}\n`,
    'README.md': readme,
  };
};
