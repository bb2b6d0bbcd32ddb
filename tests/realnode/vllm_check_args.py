"""Run inside the vLLM image: each command line in the JSON file (`vllm serve MODEL --flag ...`)
through vLLM's own `serve` parser, its argument checks and its engine config. Prints one JSON line
per command line; exits 0 when every line was judged (refusals are verdicts, not failures)."""

import json
import sys
from pathlib import Path

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser


def verdict(argv: list[str]) -> dict[str, object]:
    assert argv[:2] == ["vllm", "serve"], argv
    parser = make_arg_parser(FlexibleArgumentParser())
    try:
        # `vllm serve MODEL` hands the positional over as --model.
        args = parser.parse_args([*argv[3:], "--model", argv[2]])
        validate_parsed_serve_args(args)
        config = AsyncEngineArgs.from_cli_args(args).create_engine_config()
    except (Exception, SystemExit) as refused:
        return {"argv": argv, "accepted": False, "why": f"{type(refused).__name__}: {refused}"[:500]}
    return {
        "argv": argv,
        "accepted": True,
        "tensor_parallel_size": config.parallel_config.tensor_parallel_size,
        "served_model_name": args.served_model_name,
    }


for line in json.loads(Path(sys.argv[1]).read_text()):
    sys.stdout.write(json.dumps(verdict(line)) + "\n")
    sys.stdout.flush()
