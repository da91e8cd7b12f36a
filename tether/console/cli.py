"""`tether console`: serve the console, and make password hashes for its configuration."""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli.common import _app, _settings, err, friendly, out

console_app = typer.Typer(
    help="The web console where approvers decide and auditors look; with no command, serve it.",
    invoke_without_command=True,
)


@console_app.callback()
@friendly
def console(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (console_host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (console_port).")] = None,
) -> None:
    """Serve the console (FastAPI, server-rendered pages) until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from tether.console.app import create_app

    settings = _settings()
    if not settings.console_users and not settings.console_proxy_header:
        err.print(
            "warning: no console_users and no console_proxy_header are configured: "
            "nobody can sign in",
            highlight=False,
        )
    app = create_app(settings, tether_app=_app(settings))
    bind_host, bind_port = host or settings.console_host, port or settings.console_port
    out.print(f"Tether console on http://{bind_host}:{bind_port}", markup=False, highlight=False)
    # proxy_headers off: who a request comes from is the socket's peer, never a header a
    # client can set; `console_trusted_proxies` is matched against that peer.
    uvicorn.run(
        app,
        host=bind_host,
        port=bind_port,
        log_level=settings.log_level.lower(),
        proxy_headers=False,
    )


@console_app.command("hash-password")
@friendly
def hash_password_command() -> None:
    """Print an argon2 hash of a password for `console_users` (TETHER_CONSOLE_USERS).

    The password is asked for at a prompt (typed twice, not shown), or read as the first
    line of standard input when that is not a terminal; never from the command line,
    where the shell's history and the process list would keep it."""
    import sys

    if sys.stdin.isatty():
        password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    from tether.console.auth import hash_password

    try:
        hashed = hash_password(password)
    except ValueError as exc:
        from tether.errors import TetherError

        raise TetherError(str(exc)) from None
    err.print(
        'put it in tether.toml as  [console_users] "user:you" = "<hash>"',
        markup=False,
        highlight=False,
    )
    out.print(hashed, markup=False, highlight=False, soft_wrap=True)
