# exportjobs: the commands people, scripts and CI use. See README.md.
.PHONY: test lint unit cluster-up cluster-down demo demo-down bench tools venv images lock lock-upgrade e2e

venv:  ## .venv = the lock (requirements/dev.txt) exactly, plus the project itself (editable)
	hack/venv.sh

lock:  ## after editing pyproject.toml: re-lock (uv.lock), re-export requirements/*.txt, sync .venv
	hack/lock.sh refresh

lock-upgrade:  ## every locked package to its newest allowed release (one: hack/lock.sh upgrade PKG)
	hack/lock.sh upgrade

tools:  ## build (or reuse) kube-apiserver & co., etcd, kwok, helm and MinIO from pinned Go modules
	hack/tools.sh all

test:  ## everything: install, tools, lint, unit + cluster + end-to-end tests
	hack/test.sh

lint: venv
	hack/lock.sh check
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy && .venv/bin/lint-imports

unit: venv  ## the fast tier only
	.venv/bin/python -m pytest -m unit

cluster-up:  ## local cluster + S3 server; writes .local/cluster.env (NODE=1: with the real node)
	EXPORTJOBS_REAL_NODE=$(or $(NODE),$${EXPORTJOBS_REAL_NODE:-0}) hack/cluster.sh up

cluster-down:
	hack/cluster.sh down

demo:  ## the product end to end on the local cluster
	hack/demo.sh

bench: venv  ## every benchmark, printing ratios against its baseline
	hack/bench.sh

demo-down:  ## stop what `make demo` started (port-forward, release, cluster and its real node, S3 server, Docker engine)
	-python3 hack/stack.py down --namespace exportjobs --state-dir .local/demo/stack
	-python3 hack/callback_receiver.py stop --state-dir .local/demo/callbacks
	hack/cluster.sh down
	hack/images.sh engine-stop

e2e:  ## the end-to-end tier only (the real node; or any cluster, see hack/e2e.sh)
	hack/e2e.sh

images:  ## both container images (Docker engine and base made if missing; see docs/images.md)
	hack/images.sh all
