"""``pooch models list|pause|resume|activate|keygen`` and ``pooch experiments``: the supervisor's HTTP API.

Reading needs nothing; changing needs the operator token: ``--token-file`` (or
``POOCH_SUPERVISOR_OPERATOR_TOKEN_FILE``), or ``POOCH_SUPERVISOR_OPERATOR_TOKEN``. ``--token``
still works but is deprecated: a command line is visible to every user in ``ps``.
The supervisor is found at ``--url`` or ``POOCH_SUPERVISOR_URL`` (default ``http://127.0.0.1:8005``).

``pooch supervisor`` runs the service itself (the same as ``python -m services.supervisor``).

Register in ``tooling/cli/main.py``::

    from tooling.cli.models import experiments, models_app, supervisor
    app.add_typer(models_app, name="models")
    app.command("experiments")(experiments)
    app.command("supervisor")(supervisor)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.table import Table

from tooling.cli.output import console, fail

DEFAULT_URL = "http://127.0.0.1:8005"

models_app = typer.Typer(
    help="Model versions under supervision: list them; pause, resume or activate one (operator token).",
    no_args_is_help=True,
)

URL = typer.Option(DEFAULT_URL, "--url", envvar="POOCH_SUPERVISOR_URL", help="The supervisor's HTTP API.")
TOKEN = typer.Option(
    None,
    "--token",
    envvar="POOCH_SUPERVISOR_OPERATOR_TOKEN",
    help="Operator token (Authorization: Bearer). Deprecated on the command line, where `ps` and "
    "the shell history show it: prefer --token-file or the environment variable.",
    show_default=False,
)
TOKEN_FILE = typer.Option(
    None,
    "--token-file",
    envvar="POOCH_SUPERVISOR_OPERATOR_TOKEN_FILE",
    help="File holding the operator token (a mounted secret); wins over --token.",
    show_default=False,
    dir_okay=False,
)
REASON = typer.Option(None, "--reason", "-r", help="Why, in words people will read on the models topic.")
ACTOR = typer.Option(None, "--actor", help="Who decides (recorded as operator:<actor>).")
JSON = typer.Option(False, "--json", help="Print the API's JSON instead of a table.")
TIMEOUT = 15.0


def _request(method: str, url: str, path: str, *, token: str | None = None, body: Any = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url.rstrip("/") + path, json=body, headers=headers, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        fail(
            f"the supervisor at {url} does not answer: {exc}",
            hint="is it running? `pooch stack status` tells",
        )
    try:
        data = response.json()
    except ValueError:
        data = {"detail": response.text[:500]}
    if response.status_code == 401:
        fail(
            f"{response.status_code}: {data.get('detail')}",
            hint=TOKEN_HINT,
        )
    if response.status_code >= 400:
        fail(f"{response.status_code} {data.get('error', '')}: {data.get('detail')}")
    return data


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


@models_app.command("list")
def list_models(url: str = URL, as_json: bool = JSON) -> None:
    """Every version: status, roles, health and why."""
    data = _request("GET", url, "/v1/models")
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table(title=f"Model versions at {url}")
    for col in (
        "version",
        "extractor",
        "status",
        "roles",
        "health",
        "predictions",
        "invalid",
        "error/baseline",
        "why",
    ):
        table.add_column(col, overflow="fold")
    for v in data.get("versions", []):
        w = (v.get("window") or {}).get("all", {})
        table.add_row(
            v["model_version"],
            v["extractor_version"],
            v["status"],
            ", ".join(v.get("roles") or []) or "-",
            v["health"],
            _fmt(w.get("predictions")),
            _fmt(w.get("invalid_rate")),
            _fmt(w.get("error_ratio")),
            v.get("why", ""),
        )
    console.print(table)
    if data.get("weights"):
        console.print(f"arm weights: {data['weights']}")


TOKEN_HINT = "pass --token-file, or set POOCH_SUPERVISOR_OPERATOR_TOKEN(_FILE)"


def _token(ctx: typer.Context, token: str | None, token_file: Path | None) -> str | None:
    """The operator token from its file, else from --token or the environment."""
    if token_file is not None:
        try:
            text = token_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read the operator token file {token_file}: {exc.strerror}")
        if not text:
            fail(f"the operator token file {token_file} is empty")
        return text
    # By name: typer may carry its own copy of click's ParameterSource enum.
    source = ctx.get_parameter_source("token")
    if token and getattr(source, "name", None) == "COMMANDLINE":
        typer.echo(
            "warning: --token on the command line is deprecated: other users see it in `ps` and it "
            "stays in the shell history; use --token-file or POOCH_SUPERVISOR_OPERATOR_TOKEN",
            err=True,
        )
    return token


def _operate(
    action: str, version: str, url: str, token: str | None, reason: str | None, actor: str | None, **body: Any
) -> None:
    if not token:
        fail(f"{action} needs the operator token", hint=TOKEN_HINT)
    payload = {k: v for k, v in ({"reason": reason, "actor": actor} | body).items() if v is not None}
    data = _request("POST", url, f"/v1/models/{version}/{action}", token=token, body=payload)
    for e in data.get("written", []):
        console.print(f"[green]{e['kind']}[/green] {e['model_version']} ({e['event_id']}): {e['reason']}")
    now = data.get("now") or {}
    console.print(f"{now.get('model_version')} is now {now.get('status')} {now.get('roles') or ''}")


@models_app.command()
def pause(
    ctx: typer.Context,
    version: str = typer.Argument(..., help="The model version to stop serving."),
    url: str = URL,
    token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE,
    reason: str | None = REASON,
    actor: str | None = ACTOR,
    fallback: bool = typer.Option(
        False,
        help="Also put the last good version back as champion when this one was the activated champion.",
    ),
) -> None:
    """Pause a version: the scorer stops serving it within a second."""
    _operate("pause", version, url, _token(ctx, token, token_file), reason, actor, fallback=fallback or None)


@models_app.command()
def resume(
    ctx: typer.Context,
    version: str = typer.Argument(..., help="The paused model version to serve again."),
    url: str = URL,
    token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE,
    reason: str | None = REASON,
    actor: str | None = ACTOR,
) -> None:
    """Resume a paused version (the policies judge it on new evidence from now on)."""
    _operate("resume", version, url, _token(ctx, token, token_file), reason, actor)


def _weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        arm, sep, value = part.partition("=")
        if not sep:
            fail(
                f"--weights wants arm=weight pairs, got {part!r}",
                hint="--weights champion=0.8,challenger=0.2",
            )
        try:
            out[arm.strip()] = float(value)
        except ValueError:
            fail(f"--weights: {value!r} is not a number")
    return out


@models_app.command()
def activate(
    ctx: typer.Context,
    version: str = typer.Argument(..., help="The model version to serve on an arm."),
    arm: str = typer.Option("champion", help="champion or challenger."),
    weights: str | None = typer.Option(
        None, help="Arm weights to set with it, e.g. champion=0.8,challenger=0.1,baseline=0.1."
    ),
    url: str = URL,
    token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE,
    reason: str | None = REASON,
    actor: str | None = ACTOR,
) -> None:
    """Activate a version on an arm (promote it to champion, or start it as the challenger)."""
    token = _token(ctx, token, token_file)
    _operate("activate", version, url, token, reason, actor, arm=arm, arm_weights=_weights(weights))


def experiments(url: str = URL, as_json: bool = JSON) -> None:
    """The experiments: per arm, pupdates and realised likes per pupdate with confidence intervals."""
    data = _request("GET", url, "/v1/experiments")
    if as_json:
        console.print_json(json.dumps(data))
        return
    pct = f"{data.get('confidence', 0.95):.0%}"
    for exp in data.get("experiments", []):
        table = Table(
            title=f"Experiment on {exp['extractor_version']} since {exp['started_at']} ms "
            f"(champion {exp['champion']}, challenger {exp['challenger'] or '-'})"
        )
        # the always-valid intervals (cs_*): the ones that stay right however often this is run
        for col in (
            "arm",
            "pupdates",
            "labelled",
            "likes/pupdate",
            f"{pct} always-valid",
            "vs champion",
            "MAE",
        ):
            table.add_column(col)
        for arm, a in exp["arms"].items():
            cmp = (exp.get("vs_champion") or {}).get(arm)
            diff = (
                f"{cmp['difference']:+.3f} [{cmp['cs_low']:+.3f}, {cmp['cs_high']:+.3f}]"
                if isinstance(cmp, dict) and "cs_low" in cmp
                else "-"
            )
            ci = f"[{_fmt(a['cs_low'])}, {_fmt(a['cs_high'])}]" if a.get("cs_low") is not None else "-"
            table.add_row(
                arm,
                str(a["pupdates"]),
                str(a["labelled"]),
                _fmt(a["likes_per_pupdate"]),
                ci,
                diff,
                _fmt(a["mae"]),
            )
        console.print(table)
        console.print(f"verdict: {exp['verdict']}")
    if not data.get("experiments"):
        console.print("no predictions yet")
    console.print(f"[dim]{data.get('method', '')}[/dim]")


@models_app.command("keygen")
def keygen(as_json: bool = JSON) -> None:
    """A new Ed25519 key pair for a writer of model events (the trainer, the supervisor, a release).

    The private key goes into that writer's Secret (POOCH_MODELS_SIGNING_KEY); the public key
    joins POOCH_MODELS_TRUSTED_KEYS of every service. See docs/security.md.
    """
    from libs.common.signing import ModelEventSigner, new_keypair

    private, public = new_keypair()
    key_id = ModelEventSigner(private).key_id
    if as_json:
        console.print_json(json.dumps({"private_key": private, "public_key": public, "key_id": key_id}))
        return
    console.print(f"POOCH_MODELS_SIGNING_KEY={private}", soft_wrap=True, highlight=False)
    console.print(f"public key (add to POOCH_MODELS_TRUSTED_KEYS): {public}", soft_wrap=True, highlight=False)
    console.print(f"key id: {key_id}", highlight=False)


def supervisor(
    port: int = typer.Option(None, help="HTTP port; the same as POOCH_SUPERVISOR_PORT.", show_default=False),
    policies_file: str = typer.Option(
        None,
        "--policies",
        help="Policy file; the same as POOCH_SUPERVISOR_POLICIES_FILE.",
        show_default=False,
    ),
) -> None:
    """Run the supervisor service: watch every model version, pause the bad ones, run the experiments."""
    from services.supervisor.service import main
    from services.supervisor.settings import SupervisorSettings

    overrides = {k: v for k, v in (("port", port), ("policies_file", policies_file)) if v is not None}
    main(SupervisorSettings(**overrides))
