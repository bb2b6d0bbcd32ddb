"""Running pipelines: the executor, the step runner on the unit registry, the streaming voice flow
and the HTTP door `POST /api/v2/pipelines/{name}/run`."""
