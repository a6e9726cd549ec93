#!/usr/bin/env bash
# `make demo`: the product end to end on the local cluster's real node (needs root).
#   1. build or reuse the tools and both images; start the local cluster with its real node
#      (containerd + kubelet) and S3 server, or reuse them; import the images into the node
#   2. `helm install` charts/exportjobs: the webhook (2 pods) and the operator run as real pods;
#      a port-forward to the webhook's Service
#   3. upload a ~100 MB CSV, post an S3 notification with curl, poll its Location until done
#   4. print the final status, the first lines of the result, the verified callback
#   5. the `exportjobs` CLI submits the same CSV as an API export, waits for it (a progress bar
#      on a terminal) and downloads the result; then `kubectl get pods` (the webhook, the operator
#      and the processors' pods) and `kubectl get exportjobs`
# Stop everything with `make demo-down`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
namespace=${EXPORTJOBS_DEMO_NAMESPACE:-exportjobs}
demo_dir=$repo/.local/demo
mkdir -p "$demo_dir"

say "tools, Python environment and images"
hack/venv.sh
hack/tools.sh all
IMAGE_TAG=demo hack/images.sh build
if [ -f .local/cluster.env ] && (source .local/cluster.env && [ "${EXPORTJOBS_REAL_NODE:-0}" = 1 ] \
    && kubectl get --raw /readyz >/dev/null 2>&1); then
  say "reusing the running local cluster"
else
  say "local cluster with its real node, and S3 server"
  hack/cluster.sh down >/dev/null 2>&1 || true
  EXPORTJOBS_REAL_NODE=1 hack/cluster.sh up
fi
# shellcheck disable=SC1091
source .local/cluster.env
export PATH=$repo/.venv/bin:$PATH
hack/node.sh load exportjobs-operator:demo exportjobs-processor:demo
kubectl get nodes -o wide

say "a completion-callback receiver on the node's address (hack/callback_receiver.py)"
eval "$(python hack/callback_receiver.py start --host 10.244.0.1 --state-dir "$demo_dir/callbacks")"
echo "exports under s3://exports-input/demo/ notify $EXPORTJOBS_DEMO_CALLBACK_URL"
# The chart's notification values: the receiver's signing secret, its address allowed over http.
python - "$demo_dir/callbacks/secrets/secret-0" "$EXPORTJOBS_DEMO_CALLBACK_URL" >"$demo_dir/values.json" <<'PY'
import json, sys
secret, url = open(sys.argv[1]).read().strip(), sys.argv[2]
print(json.dumps({
    "notifications": {"secrets": [secret], "allowlist": ["10.244.0.1/32"], "allowHttp": True},
    "webhook": {"callbackRules": f"exports-input/demo/={url}"},
}))
PY
chmod 600 "$demo_dir/values.json"

say "helm install charts/exportjobs (webhook and operator as pods on the real node)"
python hack/stack.py down --namespace "$namespace" --state-dir "$demo_dir/stack" >/dev/null 2>&1 || true
eval "$(python hack/stack.py up --namespace "$namespace" --state-dir "$demo_dir/stack" \
  --operator-image exportjobs-operator:demo --processor-image exportjobs-processor:demo --pull-policy Never \
  --values "$demo_dir/values.json")"
echo "webhook at $EXPORTJOBS_URL (a port-forward to service/exportjobs-webhook)"
kubectl get pods -n "$namespace" -o wide

say "a ~100 MB sample CSV in s3://exports-input/"
sample=$demo_dir/sample-orders.csv
[ -f "$sample" ] || python bench/gen_csv.py --mb 100 --out "$sample"
key="demo/orders $(date +%H%M%S).csv"
curl -fsS --aws-sigv4 "aws:amz:${AWS_DEFAULT_REGION}:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
  -T "$sample" "$AWS_ENDPOINT_URL/exports-input/$(python -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$key")"
ls -lh "$sample" | awk '{print "uploaded", $5, "as s3://exports-input/'"$key"'"}'

say "POST /v1/events/s3 (an S3 ObjectCreated notification)"
size=$(stat -c %s "$sample")
encoded_key=$(python -c 'import sys, urllib.parse; print(urllib.parse.quote_plus(sys.argv[1]))' "$key")
event=$(printf '{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"exports-input"},"object":{"key":"%s","size":%s,"sequencer":"%s"}}}]}' \
  "$encoded_key" "$size" "$(date +%s%N)")
headers=$demo_dir/headers.txt
curl -fsS -D "$headers" -o "$demo_dir/accepted.json" -X POST "$EXPORTJOBS_URL/v1/events/s3?format=jsonl" \
  -H "Authorization: Bearer $EXPORTJOBS_TOKEN" -H 'Content-Type: application/json' -d "$event"
head -n 1 "$headers"
grep -i '^location:' "$headers"
cat "$demo_dir/accepted.json"; echo
location=$(grep -i '^location:' "$headers" | tr -d '\r' | cut -d' ' -f2)

say "polling $location"
view=$demo_dir/status.json
for _ in $(seq 1 600); do
  curl -fsS -o "$view" -H "Authorization: Bearer $EXPORTJOBS_TOKEN" "$EXPORTJOBS_URL$location"
  line=$(python - "$view" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
p = v.get("progress") or {}
pct = p.get("percent")
print(f"{v['status']:<10} {pct if pct is not None else 0:>5.1f}%  rows {p.get('rows', 0):>10,}  "
      f"read {p.get('bytesRead', 0) / 1e6:8.1f} / {p.get('bytesTotal', 0) / 1e6:.1f} MB")
PY
)
  [ "$line" = "${last:-}" ] || echo "$line"
  last=$line
  case $line in Succeeded*|Failed*|Cancelled*) break ;; esac
  sleep 0.5
done

say "final status"
python -m json.tool "$view"

if grep -q '"download_url"' "$view"; then
  say "first lines of the result (downloaded through the presigned URL)"
  url=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["result"]["download_url"])' "$view")
  curl -sS "$url" 2>/dev/null | head -n 3 || true
fi

say "the completion callback (a signed CloudEvent, verified by the receiver)"
python hack/callback_receiver.py wait --state-dir "$demo_dir/callbacks" --timeout 60

say "the exportjobs CLI: submit the same CSV as an API export and wait for it (docs/cli.md)"
export EXPORTJOBS_URL EXPORTJOBS_TOKEN
echo "\$ exportjobs submit 's3://exports-input/$key' --format parquet --wait --download $demo_dir/result.parquet"
exportjobs submit "s3://exports-input/$key" --format parquet --wait --download "$demo_dir/result.parquet"
echo "exit code $? (0 = Succeeded)"
echo "\$ exportjobs list"
exportjobs list

say "kubectl get pods -n $namespace (real pods: the webhook, the operator, the export's processor)"
kubectl get pods -n "$namespace" -o wide

say "kubectl get exportjobs -n $namespace -o wide"
kubectl get exportjobs -n "$namespace" -o wide

say "done"
echo "The product keeps running: try more requests with"
echo "  source .local/cluster.env; eval \"\$(grep -h export $demo_dir/env 2>/dev/null)\""
echo "Stop everything with: make demo-down"
printf 'export EXPORTJOBS_URL=%s\nexport EXPORTJOBS_TOKEN=%s\n' "$EXPORTJOBS_URL" "$EXPORTJOBS_TOKEN" >"$demo_dir/env"
chmod 600 "$demo_dir/env"
