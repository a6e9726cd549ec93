# exportjobs: the commands people, scripts and CI use. See README.md.
.PHONY: test lint unit cluster-up cluster-down demo demo-down bench tools venv images

venv:  ## .venv with the project and its dev tools
	hack/venv.sh

tools:  ## build (or reuse) kube-apiserver & co., etcd, kwok, helm and MinIO from pinned Go modules
	hack/tools.sh all

test:  ## everything: install, tools, lint, unit + cluster + end-to-end tests
	hack/test.sh

lint: venv
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy && .venv/bin/lint-imports

unit: venv  ## the fast tier only
	.venv/bin/python -m pytest -m unit

cluster-up:  ## local cluster + S3 server; writes .local/cluster.env
	hack/cluster.sh up

cluster-down:
	hack/cluster.sh down

demo:  ## the product end to end on the local cluster
	hack/demo.sh

bench: venv  ## every benchmark, printing ratios against its baseline
	hack/bench.sh

demo-down:  ## stop what `make demo` started (product processes, cluster, S3 server)
	-.venv/bin/python hack/stack.py down --namespace exportjobs --state-dir .local/demo/stack
	hack/cluster.sh down

images:  ## both container images (Docker engine and base made if missing; see docs/images.md)
	hack/images.sh all
