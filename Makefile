# The two commands a newcomer needs; both set up everything on a fresh machine.
.PHONY: dev dev-kwok test

dev:   ## a local cluster with a real node (root): the chart, a sample llama.cpp service and the gateway
	hack/dev

dev-kwok:  ## the same with fake nodes only: no root, quicker; replicas are local fake engines
	hack/dev --kwok-only

test:  ## lint, type-check and run every test against a real local control plane
	hack/test
