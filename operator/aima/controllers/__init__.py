"""The controllers, one module per kind, each fed by the caches of `runtime.ClusterView`;
`aima.runner` starts them all."""
