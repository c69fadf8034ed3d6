"""`sequencer calls stats`: what scripts and objections do for the team (the voice plugin adds `calls dial`)."""
from __future__ import annotations

import json
from datetime import date, datetime, time, timezone
from typing import Any

import click

from sequencer.cli.base import CliState, UserError, format_option, pass_state, to_jsonable


def register(main: click.Group) -> None:
    main.add_command(calls)


@click.group()
def calls() -> None:
    """Calls: stats of logged calls by script and objection."""


@calls.command()
@click.option("--cadence", metavar="NAME", help="Only calls of this cadence.")
@click.option("--rep", "rep_email", metavar="EMAIL", help="Only calls this rep logged.")
@click.option("--since", metavar="YYYY-MM-DD", help="Only calls logged from this day on (00:00 UTC).")
@format_option
@pass_state
def stats(state: CliState, cadence: str | None, rep_email: str | None, since: str | None, fmt: str) -> None:
    """Calls, connects and meetings per script version; per objection, how often calls still met."""
    from sequencer.calls import call_stats
    from sequencer.users import find_user

    try:
        start = datetime.combine(date.fromisoformat(since), time(), timezone.utc) if since else None
    except ValueError:
        raise UserError(f"--since '{since}' is not a date; write it as YYYY-MM-DD") from None
    rt = state.runtime()
    with rt.session() as session:
        try:
            rep = find_user(session, rep_email) if rep_email else None
        except LookupError as exc:
            raise UserError(str(exc)) from None
        found = call_stats(session, connected=rt.settings.tasks.connected_outcomes, cadence=cadence,
                           rep_id=rep and rep.id, since=start)
    found["filters"] = {"cadence": cadence, "rep": rep_email, "since": start}
    if fmt == "json":
        click.echo(json.dumps(to_jsonable(found), ensure_ascii=False, indent=2))
        return
    click.echo(stats_text(found))


def _shown(rate: dict[str, Any]) -> str:
    """`12/40 (30.0%)`: the count and what it is out of, always beside the percentage."""
    if not rate["of"]:
        return "0/0"
    return f"{rate['n']}/{rate['of']} ({100 * rate['rate']:.1f}%)"


def stats_text(found: dict[str, Any]) -> str:
    """Return the stats as two aligned tables: scripts, then objections."""
    lines = [f"{found['calls']} calls: {_shown(found['connects'])} connected, {_shown(found['meetings'])} meetings",
             ""]
    lines += _table(["script", "version", "calls", "connects", "meetings"],
                    [[s["script"] or "(no script)", s["version"] or "", str(s["calls"]), _shown(s["connects"]),
                      _shown(s["meetings"])] for s in found["scripts"]])
    lines.append("")
    lines += _table(["objection", "raised", "still met"],
                    [[o["objection"], _shown(o["share_of_calls"]), _shown(o["still_met"])]
                     for o in found["objections"]])
    return "\n".join(lines)


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return [f"{columns[0].upper()}: (none)"]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    return ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()] + \
        ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
