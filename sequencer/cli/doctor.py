"""`sequencer doctor`: what is wrong with the sending setup, and how to fix it."""
from __future__ import annotations

import dataclasses

import click

from sequencer.cli.base import CliState, emit, format_option, pass_state

LABELS = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}


def register(main: click.Group) -> None:
    main.add_command(doctor)


@click.command()
@format_option
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for each SMTP, IMAP or DNS server.")
@pass_state
@click.pass_context
def doctor(ctx: click.Context, state: CliState, fmt: str, timeout: float) -> None:
    """Check the postal address, links, secret, mailbox logins and SPF/DKIM/DMARC; exit 1 if anything failed."""
    from sequencer.doctor import run_checks

    checks = run_checks(state.runtime(), timeout=timeout)
    if fmt == "json":
        emit([dataclasses.asdict(check) for check in checks], fmt)
    else:
        width = max(len(check.name) for check in checks)
        for check in checks:
            click.echo(f"{LABELS[check.status]:<4}  {check.name:<{width}}  {check.detail}")
            if check.status != "ok" and check.fix:
                click.echo(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
        counts = {status: sum(c.status == status for c in checks) for status in LABELS}
        click.echo(f"\n{counts['fail']} failed, {counts['warn']} warnings, {counts['skip']} skipped, {counts['ok']} ok")
    if any(check.status == "fail" for check in checks):
        ctx.exit(1)
