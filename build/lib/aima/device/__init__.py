"""The device agent: reads the node's GPUs through NVML, publishes them as a NodeDevices object,
exports Prometheus metrics and applies requested power limits (`aima device-agent`)."""
