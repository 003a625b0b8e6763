"""``lakecache``: the entry point. Errors print as 'error:' and 'hint:' lines, never a traceback."""

from __future__ import annotations

import sys

import click

from lakecache import __version__


class _Group(click.Group):
    """Sub-command groups load their module only when called."""

    _lazy = {
        "data": ("lakecache.cli.data", "data"),
        "site": ("lakecache.cli.topology", "site"),
        "volume": ("lakecache.cli.topology", "volume"),
        "compute": ("lakecache.cli.topology", "compute"),
        "template": ("lakecache.cli.jobs", "template"),
        "queue": ("lakecache.cli.jobs", "queue"),
        "job": ("lakecache.cli.jobs", "job"),
        "flow": ("lakecache.cli.flows", "flow"),
        "run": ("lakecache.cli.tracking", "run"),
        "experiment": ("lakecache.cli.tracking", "experiment"),
        "cache": ("lakecache.cli.cache", "cache"),
        "agent": ("lakecache.cli.agent", "agent"),
        "server": ("lakecache.cli.server", "server"),
        "login": ("lakecache.cli.auth", "login"),
        "logout": ("lakecache.cli.auth", "logout"),
        "whoami": ("lakecache.cli.auth", "whoami"),
        "user": ("lakecache.cli.auth", "user"),
        "token": ("lakecache.cli.auth", "token"),
        "member": ("lakecache.cli.auth", "member"),
        "lake": ("lakecache.cli.lake", "lake"),
        "catalog": ("lakecache.cli.catalog", "catalog"),
        "lib": ("lakecache.library.cli", "lib"),
        "example": ("lakecache.cli.example", "example"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._lazy:
            import importlib

            mod, attr = self._lazy[name]
            return getattr(importlib.import_module(mod), attr)  # type: ignore[no-any-return]
        return super().get_command(ctx, name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lakecache")
def cli() -> None:
    """lakecache: versioned datasets in the data lake, cached next to the compute.

    \b
    Configuration comes from $LAKECACHE_HOME/config.toml and LAKECACHE_* variables:
      LAKECACHE_HOME         local state (default ~/.lakecache)
      LAKECACHE_LAKE         a folder, or s3://bucket/prefix
      LAKECACHE_S3_ENDPOINT  S3 endpoint for non-AWS stores (AWS_* credentials apply)
      LAKECACHE_CATALOG      SQLAlchemy URL (default: SQLite in LAKECACHE_HOME)
    """


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (1 for lakecache errors, 2 for usage, 130 on ^C)."""
    from lakecache.errors import LakecacheError

    try:
        rv = cli.main(args=argv, prog_name="lakecache", standalone_mode=False)
    except LakecacheError as exc:
        click.secho(f"error: {exc.message}", err=True, fg="red")
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        return 1
    except OSError as exc:
        # A full disk, a read-only folder, a stale NFS handle: the user's to fix,
        # so said in their words, like lakecache's own errors.
        from lakecache.oserrors import explain_os_error

        message, hint = explain_os_error(exc)
        click.secho(f"error: {message}", err=True, fg="red")
        click.echo(f"hint: {hint}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    # Without standalone mode, click returns ctx.exit(N) codes instead of raising.
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
