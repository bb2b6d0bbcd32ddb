# The two commands a newcomer needs; both set up everything on a fresh machine.
.PHONY: dev test check

dev:   ## start a local control plane with fake GPU nodes (more to come: operator, gateway, sample)
	hack/dev

test:  ## lint, type-check and run every test against a real local control plane
	hack/test
