"""Running pipelines: the executor, the step runner on the unit registry and the streaming voice
flow, and how a run starts (`aima.pipelines.start`), the same for the PipelineRun controller and the
door `POST /api/v2/pipelines/{name}/run` (`aima.doors.pipelines`)."""
