# The two commands a newcomer needs; both set up everything on a fresh machine.
.PHONY: dev test

dev:   ## a local control plane with fake GPU nodes, the operator, a sample service and the gateway
	hack/dev

test:  ## lint, type-check and run every test against a real local control plane
	hack/test
