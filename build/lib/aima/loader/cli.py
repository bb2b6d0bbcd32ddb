"""`aima loader`: download or verify one model into a directory; the Model controller's Job runs it.

Progress goes to stdout as JSON lines (at most one every two seconds, plus phase changes); on
failure the command exits 1 after one line on stderr with the reason. Tokens are read from a file
(a mounted Secret) or a named environment variable, never from the command line, which Job specs
and `ps` show to anyone; s3:// sources take AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
AWS_SESSION_TOKEN from the environment, as every AWS tool does, and go anonymous without them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import click

from aima.loader import engine, lock
from aima.loader.errors import LoaderError
from aima.loader.progress import JsonLinesSink
from aima.loader.sigv4 import Credentials

__all__ = ["loader"]


def _read_token(token_file: Path | None, token_env: str | None) -> str | None:
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip() or None
        except OSError as error:
            raise click.ClickException(
                f"Cannot read the token file {token_file}: {error.strerror}"
            ) from error
    if token_env:
        return os.environ.get(token_env) or None
    return None


def _read_aws_credentials(uri: str) -> Credentials | None:
    """The AWS variables' keys for an s3:// source; None (anonymous) when neither key is set."""
    if uri.partition("://")[0].lower() != "s3":
        return None
    key_id = os.environ.get("AWS_ACCESS_KEY_ID") or None
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or None
    if key_id is None and secret is None:
        return None
    if key_id is None or secret is None:
        given, missing = (
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            if secret is None
            else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        )
        raise click.ClickException(f"{given} is set but {missing} is not; give both, or neither")
    return Credentials(
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
    )


@click.command()
@click.option(
    "--source",
    "uri",
    required=True,
    help="hf://org/repo@rev, modelscope://org/repo@rev, ollama://library/name:tag, https://host/file, "
    "s3://bucket/prefix or pvc://claim/path.",
)
@click.option(
    "--dest", type=click.Path(file_okay=False, path_type=Path), required=True, help="The model directory."
)
@click.option("--include", multiple=True, help="Glob of files to download (repeatable; default: all).")
@click.option("--exclude", multiple=True, help="Glob of files to skip (repeatable).")
@click.option(
    "--parallel", type=click.IntRange(1, 64), default=3, show_default=True, help="Files downloaded at once."
)
@click.option(
    "--endpoint",
    help="Base URL replacing the source's default host (a mirror, such as HF_ENDPOINT; for s3:// an "
    "S3-compatible store such as MinIO, addressed path-style).",
)
@click.option(
    "--token-file", type=click.Path(dir_okay=False, path_type=Path), help="File holding the access token."
)
@click.option("--token-env", metavar="NAME", help="Environment variable holding the access token.")
@click.option(
    "--region", help="Region that s3:// requests are signed for (default us-east-1; see also --endpoint)."
)
@click.option("--revision", help="Override the revision (or Ollama tag) in --source.")
@click.option("--verify-only", is_flag=True, help="Do not download: verify the files against the manifest.")
@click.option(
    "--lock-wait",
    type=click.FloatRange(0),
    default=0,
    show_default=True,
    help="Seconds to wait for another loader's lock.",
)
@click.option(
    "--progress-interval",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="Seconds between progress lines.",
)
@click.option(
    "--model",
    "model_ref",
    metavar="NAMESPACE/NAME",
    help="Report progress and the verified manifest into this Model's status (as the loader Job does).",
)
def loader(
    *,
    uri: str,
    dest: Path,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    parallel: int,
    endpoint: str | None,
    token_file: Path | None,
    token_env: str | None,
    region: str | None,
    revision: str | None,
    verify_only: bool,
    lock_wait: float,
    progress_interval: float,
    model_ref: str | None,
) -> None:
    """Download (or verify) a model into DEST with resume, retries and sha256 verification."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    request = engine.LoadRequest(
        uri=uri,
        dest=dest,
        include=include,
        exclude=exclude,
        parallel=parallel,
        endpoint=endpoint,
        token=_read_token(token_file, token_env),
        region=region,
        aws_credentials=_read_aws_credentials(uri),
        revision=revision,
        verify_only=verify_only,
    )
    env = engine.Environment(
        sink=JsonLinesSink(), lock=lock.LockSettings(wait=lock_wait), progress_interval=progress_interval
    )
    try:
        if model_ref is None:
            asyncio.run(engine.load(request, env=env))
        else:
            asyncio.run(_load_reporting(request, env=env, model_ref=model_ref))
    except LoaderError as error:
        click.echo(f"aima loader: {error}", err=True)
        raise SystemExit(1) from None


async def _load_reporting(request: engine.LoadRequest, *, env: engine.Environment, model_ref: str) -> None:
    """Load while reporting into the Model's status; the final report must land, or we fail."""
    from aima.kube import KubeError, connect  # the API client is needed only when reporting
    from aima.loader.paths import MANIFEST_NAME
    from aima.loader.report import ModelStatusSink

    namespace, _, name = model_ref.partition("/")
    if not namespace or not name:
        raise click.BadParameter("expected NAMESPACE/NAME", param_hint="--model")
    kube = await connect(kubeconfig=None)
    try:
        sink = ModelStatusSink(kube=kube, namespace=namespace, name=name, echo=env.sink)
        try:
            manifest = await engine.load(request, env=dataclasses.replace(env, sink=sink))
        except LoaderError:
            await sink.finish(None, manifest_sha256=None)
            raise
        digest = hashlib.sha256((request.dest / MANIFEST_NAME).read_bytes()).hexdigest()
        await sink.finish(manifest, manifest_sha256=digest)
    except KubeError as error:
        raise LoaderError(f"Could not report to Model {model_ref}: {error}") from error
    finally:
        await kube.close()
