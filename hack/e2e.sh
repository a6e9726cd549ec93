#!/usr/bin/env bash
# The end-to-end tier (tests/e2e) alone, on the local cluster's real node or on any cluster.
#
#   hack/e2e.sh [PYTEST ARGS]
#
# Local (the default, root): starts a cluster with the real node (hack/cluster.sh,
# EXPORTJOBS_REAL_NODE=1), builds both images from this tree, imports them into the node,
# installs the chart and runs the tier; stops everything at the end.
#
# Any cluster (kind, EKS, ...): name it and an S3 endpoint, and the images it can run:
#
#   KUBECONFIG=~/.kube/config \
#   AWS_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
#   EXPORTJOBS_E2E_S3_ENDPOINT=http://minio.minio:9000 \
#   EXPORTJOBS_E2E_OPERATOR_IMAGE=exportjobs-operator:dev \
#   EXPORTJOBS_E2E_PROCESSOR_IMAGE=exportjobs-processor:dev \
#   hack/e2e.sh
#
# EXPORTJOBS_E2E_PULL_POLICY (default IfNotPresent) is the chart's pullPolicy for both images.
# AWS_ENDPOINT_URL is S3 as this machine reaches it (the tests upload inputs and download results
# through presigned URLs), EXPORTJOBS_E2E_S3_ENDPOINT as the pods reach it (default: the same).
# The buckets exports-input and exports-output are created if missing. The chart is installed in
# a fresh namespace and uninstalled at the end; the CRD stays.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
hack/venv.sh
hack/tools.sh all
ignore=(--ignore tests/e2e/images)
if [ -n "${EXPORTJOBS_E2E_OPERATOR_IMAGE:-}" ]; then
  : "${KUBECONFIG:?KUBECONFIG names the cluster to test}"
  : "${AWS_ENDPOINT_URL:?AWS_ENDPOINT_URL names the S3 endpoint}"
  export EXPORTJOBS_TEST_KUBECONFIG=$KUBECONFIG
  # The up/down cycles test the local cluster's scripts, not a cluster you bring.
  ignore+=(--ignore tests/e2e/test_cluster_cycles.py)
fi
export EXPORTJOBS_CLUSTER_CYCLES=${EXPORTJOBS_CLUSTER_CYCLES:-1}
exec .venv/bin/python -m pytest -p no:cacheprovider tests/e2e "${ignore[@]}" "$@"
