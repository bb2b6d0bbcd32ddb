"""Running pipelines: the executor, the step runner on the unit registry and the streaming voice
flow; the controller and the door `POST /api/v2/pipelines/{name}/run` (`aima.doors.pipelines`) use them."""
