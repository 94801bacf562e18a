"""The ``giftflow`` command line."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from giftflow.bootstrap import open_store
from giftflow.ledger import verify
from giftflow.settings import Settings

app = typer.Typer(help="giftflow: the live-gifting economy.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
ledger_app = typer.Typer(help="Inspect and check the ledger.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks, each against a bare-SQL baseline from the same run. "
                             "Without a subcommand, runs them all with their defaults.",
                        invoke_without_command=True)
economy_app = typer.Typer(help="Run the economy's daily jobs and reports.", no_args_is_help=True)
payouts_app = typer.Typer(help="Send payouts to providers and settle them.",
                          no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(ledger_app, name="ledger")
app.add_typer(economy_app, name="economy")
app.add_typer(payouts_app, name="payouts")
app.add_typer(bench_app, name="bench")

out = Console()
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="GIFTFLOW_DATA_DIR", help="Data directory (default ./giftflow-data).")]
DatabaseUrl = Annotated[str | None, typer.Option(
    "--db", envvar="GIFTFLOW_DATABASE_URL",
    help="Database URL: sqlite:///FILE or postgresql://… (default: SQLite in the data dir).")]


BenchPostgresUrl = Annotated[str | None, typer.Option(
    "--postgres-url", envvar="GIFTFLOW_BENCH_POSTGRES_URL",
    help="PostgreSQL to measure (default postgresql://postgres@127.0.0.1:5432/test); "
         "'none' skips it.")]

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


class CliError(Exception):
    """An expected failure, shown as a one-line message and exit code 2."""


def load_settings(data_dir: Path | None, db: str | None) -> Settings:
    """Settings from the environment, overridden by the command's options."""
    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if db is not None:
        overrides["database_url"] = db
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in error.errors())
        raise CliError(f"invalid settings: {problems}") from error


@app.command()
def migrate(data_dir: DataDir = None, db: DatabaseUrl = None) -> None:
    """Apply pending schema migrations (they also run automatically at start)."""
    store = open_store(load_settings(data_dir, db), migrate=False)
    try:
        applied = store.migrate()
        version = store.schema_version()
    finally:
        store.close()
    if applied:
        out.print(f"applied migrations {', '.join(map(str, applied))}; schema is at {version}")
    else:
        out.print(f"schema is up to date at version {version}")


@ledger_app.command("verify")
def ledger_verify(data_dir: DataDir = None, db: DatabaseUrl = None) -> None:
    """Recompute every balance from the transfers and check every invariant; exit 1 if broken."""
    store = open_store(load_settings(data_dir, db))
    try:
        with err.status("recomputing balances from the transfers…"):
            report = verify(store.verification_facts())
    finally:
        store.close()
    table = Table(title=f"ledger verify: {report.accounts} accounts")
    table.add_column("invariant")
    table.add_column("result")
    table.add_column("details")
    for check in report.checks:
        details = "\n".join(check.violations)
        if check.violation_count > len(check.violations):
            details += f"\n… {check.violation_count - len(check.violations)} more"
        table.add_row(check.description, "[green]ok[/]" if check.ok else
                      f"[red]{check.violation_count} violation(s)[/]", details)
    out.print(table)
    if not report.ok:
        out.print("[red]ledger verify: FAILED[/]")
        raise typer.Exit(1)
    out.print("[green]ledger verify: every invariant holds[/]")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65_535, help="Port to listen on.")] = 8000,
    mode: Annotated[str | None, typer.Option(
        envvar="GIFTFLOW_MODE", help="demo or production (the default).")] = None,
    data_dir: DataDir = None, db: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API (uvicorn); in demo mode, seed demo data and print how to use it."""
    import uvicorn  # noqa: PLC0415 -- only this command needs the server

    from giftflow.api import ws_frames  # noqa: PLC0415
    from giftflow.api.app import create_app  # noqa: PLC0415
    from giftflow.api.demo import seed  # noqa: PLC0415
    from giftflow.api.protection import configure_logging  # noqa: PLC0415
    from giftflow.bootstrap import (  # noqa: PLC0415
        build_services,
        start_workers,
        tune_garbage_collector,
    )

    configure_logging(logging.INFO)
    settings = load_settings(data_dir, db)
    if mode is not None:
        if mode not in ("demo", "production"):
            raise CliError(f"--mode is demo or production, not {mode!r}")
        settings = settings.model_copy(update={"mode": mode})
    services = build_services(settings)
    base = f"http://{host}:{port}"
    lines = [f"giftflow {settings.mode} service on {base}",
             f"  API:          {base}/v1   (OpenAPI at {base}/openapi.json, docs at {base}/docs)"]
    if settings.mode == "demo":
        demo = seed(services)
        key = services.access.create_key("admin", label="demo admin key, printed at start")
        viewers = ", ".join(demo.viewer_ids)
        stream = f"{base}/v1/streams/{demo.stream_id}"
        lines += [f"  demo stream:  {stream} (live), creator {demo.creator_id}, viewers {viewers}",
                  f"  demo API key: {key}  (admin, made for this start; demo mode only)",
                  "  dashboard and overlays: served from the next milestone"]
    for line in lines:
        out.print(line, soft_wrap=True, markup=False, highlight=False)
    stop_workers = start_workers(services, settings)
    tune_garbage_collector()
    try:
        uvicorn.run(create_app(services), host=host, port=port, log_level="warning",
                    access_log=False, loop="uvloop", http="httptools", ws=ws_frames.PROTOCOL)
    finally:
        stop_workers()


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="A recording: normalized events, one JSON a line.")],
    room: Annotated[list[str] | None, typer.Option(
        "--room", help="Replay only this recorded room (repeatable).")] = None,
    instant: Annotated[bool, typer.Option(
        "--instant", help="Replay at once, without the recorded pauses.")] = False,
    speed: Annotated[float, typer.Option(
        min=0.01, max=1000, help="Pauses are the recorded ones divided by this.")] = 1.0,
    data_dir: DataDir = None, db: DatabaseUrl = None,
) -> None:
    """Replay a recording into new ``replay`` streams, one per room; print them as JSON."""
    from giftflow.bootstrap import build_services  # noqa: PLC0415
    from giftflow.ledger import Failure  # noqa: PLC0415
    from giftflow.live.replay import RecordingError, read_recording, replay_room  # noqa: PLC0415

    try:
        with file.open(encoding="utf-8") as lines:
            recording = read_recording(lines, room or ())
    except RecordingError as error:
        raise CliError(f"{file}: {error}") from error
    missing = sorted(set(room or ()) - set(recording.rooms))
    if missing:
        raise CliError(f"{file} has no events of room(s) {', '.join(missing)}")
    services = build_services(load_settings(data_dir, db))
    economy = services.economy
    region = next(iter(economy.economy.regions))
    fed = []
    try:
        with err.status("replaying…") as status:
            for number, (name, inputs) in enumerate(recording.rooms.items(), start=1):
                status.update(f"replaying room {name} ({number} of {len(recording.rooms)}, "
                              f"{len(inputs)} events)…")
                creator = f"replay-{recording.hosts[name]}"
                made = economy.register_user(creator, region=region, time_zone="UTC",
                                             birth_date=None, is_creator=True)
                if isinstance(made, Failure) and economy.user(creator) is None:
                    raise CliError(f"cannot make the replay creator {creator}: {made.detail}")
                stream_id = f"replay-{name}-{services.streams.clock_ms()}"
                result = replay_room(services.streams, stream_id, name, creator, inputs,
                                     speed=None if instant else speed)
                if isinstance(result, Failure):
                    raise CliError(f"room {name}: {result.code}: {result.detail}")
                fed.append(dataclasses.asdict(result))
    finally:
        services.gifts.close()
        services.economy.ledger.store.close()
    sys.stdout.write(json.dumps({"streams": fed, "skipped": recording.skipped}, indent=2) + "\n")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, service, creator, moderator or viewer.")],
    owner: Annotated[str, typer.Option(
        help="The user id the key acts as (a platform id for service keys; none for admin).")
    ] = "",
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    data_dir: DataDir = None, db: DatabaseUrl = None,
) -> None:
    """Make an API key and print it alone on standard output, once.

    No two-factor code is asked: this is how the first key is made, on the machine itself.
    """
    from giftflow.access import ROLES, AccessService  # noqa: PLC0415

    if role not in ROLES or role == "overlay":
        raise CliError(f"--role is one of admin, service, creator, moderator, viewer; not {role!r}")
    if role != "admin" and owner == "":
        raise CliError(f"a {role} key needs an --owner (an admin key may name its holder)")
    store = open_store(load_settings(data_dir, db))
    try:
        plaintext = AccessService(store).create_key(role, owner, label)
    finally:
        store.close()
    sys.stdout.write(plaintext + "\n")


@economy_app.command("check")
def economy_check(file: Annotated[Path | None, typer.Argument(
        help="An economy TOML file (default: the packaged one).")] = None) -> None:
    """Validate an economy file against the catalog and list its regions and packs."""
    from giftflow.economy import EconomyFileError, load_catalog, load_economy  # noqa: PLC0415

    try:
        economy = load_economy(file, catalog=load_catalog())
    except EconomyFileError as error:
        raise CliError(" ".join(str(error).split())) from error
    table = Table(title=f"economy file {file or '(packaged default)'}: the deployment's own rates")
    for column in ("region", "currency", "creator share", "hold", "payout min / day max",
                   "packs (web / ios / android)", "refunds"):
        table.add_column(column)
    for code, region in economy.regions.items():
        packs = " / ".join(str(len(region.packs.for_channel(c))) for c in ("web", "ios", "android"))
        table.add_row(code, region.currency, f"{region.creator_share_bps} bps",
                      f"{region.hold_days} days",
                      f"{region.payout_min_minor} / {region.payout_daily_max_minor} minor",
                      packs, region.refund_policy)
    out.print(table)
    out.print("[green]economy file is valid[/]")


@economy_app.command("release")
def economy_release(
    day: Annotated[str, typer.Option("--date", help="The day to release up to, YYYY-MM-DD "
                                                     "(in each creator's time zone).")],
    data_dir: DataDir = None, db: DatabaseUrl = None,
) -> None:
    """Move every creator's diamonds that matured by the end of DATE from held to available."""
    from datetime import date  # noqa: PLC0415

    from giftflow.bootstrap import build_economy  # noqa: PLC0415

    try:
        when = date.fromisoformat(day)
    except ValueError as error:
        raise CliError(f"--date must be YYYY-MM-DD, not {day!r}") from error
    settings = load_settings(data_dir, db)
    service, _ = build_economy(settings)
    try:
        with err.status(f"releasing diamonds matured by {when}…"):
            released = service.release_all(when)
    finally:
        service.ledger.store.close()
    out.print(f"released diamonds of {len(released)} creator(s): "
              f"{sum(released.values())} DIAMOND minor units")


@economy_app.command("liability")
def economy_liability(data_dir: DataDir = None, db: DatabaseUrl = None) -> None:
    """Unspent coins and unpaid diamonds at cash value per currency, against the cash held."""
    from giftflow.bootstrap import build_economy  # noqa: PLC0415
    from giftflow.economy.reports import format_minor, liability_report  # noqa: PLC0415

    service, _ = build_economy(load_settings(data_dir, db))
    try:
        with err.status("reading lots and balances…"):
            report = liability_report(service)
            scales = {spec.code: spec.scale for spec in service.ledger.store.ledgers()}
    finally:
        service.ledger.store.close()
    table = Table(title="liability report (minor units shown as decimals)")
    for column in ("currency", "unspent coins", "their cash value", "unpaid diamonds value",
                   "total", "cash held", "covered"):
        table.add_column(column, justify="right")
    for currency, row in sorted(report.items()):
        scale = scales[currency]
        table.add_row(currency, f"{row.unspent_coins:,}",
                      format_minor(row.unspent_coins_minor, scale),
                      format_minor(row.unpaid_diamonds_minor, scale),
                      format_minor(row.total_minor, scale),
                      format_minor(row.cash_held_minor, scale),
                      "[green]yes[/]" if row.covered else "[red]NO[/]")
    out.print(table)


@payouts_app.command("run")
def payouts_run(data_dir: DataDir = None, db: DatabaseUrl = None) -> None:
    """Submit requested payouts to their providers, then ask about those in flight."""
    from giftflow.bootstrap import build_economy  # noqa: PLC0415

    service, payouts = build_economy(load_settings(data_dir, db))
    try:
        with err.status("submitting and polling payouts…"):
            rows = payouts.process() + payouts.poll()
    finally:
        service.ledger.store.close()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none due"
    out.print(f"payouts handled: {summary}")


@app.command()
def example(data_dir: DataDir = None, db: DatabaseUrl = None) -> None:
    """Run the worked example: a short gifting scenario through the ledger, printed step by step."""
    from giftflow.worked_example import run  # noqa: PLC0415 -- keeps CLI start-up light

    store = open_store(load_settings(data_dir, db))
    try:
        run(store, out)
    finally:
        store.close()


@bench_app.callback()
def bench_all(context: typer.Context, data_dir: DataDir = None) -> None:
    """Run every benchmark with its defaults when no subcommand is named."""
    if context.invoked_subcommand is None:
        context.invoke(bench_ledger, data_dir=data_dir)
        context.invoke(bench_economy, data_dir=data_dir)
        context.invoke(bench_api)
        context.invoke(bench_events)


@bench_app.command("ledger")
def bench_ledger(
    operations: Annotated[int, typer.Option(min=100, max=2_000_000,
                                            help="Gift operations per measurement.")] = 20_000,
    single_operations: Annotated[int, typer.Option(
        min=50, max=200_000, help="Operations for the one-per-commit measurements.")] = 3_000,
    postgres_url: BenchPostgresUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Gift-shaped operations on a hot creator: giftflow vs bare SQL, per store and mode."""
    from giftflow.bench.ledger import run_ledger_bench  # noqa: PLC0415 -- heavy, bench only

    settings = load_settings(data_dir, None)
    run_ledger_bench(settings, operations=operations, single_operations=single_operations,
                     postgres_url=postgres_url, console=out)


@bench_app.command("api")
def bench_api(
    seconds: Annotated[float, typer.Option(min=1, max=600, help="Measured seconds per run.")] = 5,
    connections: Annotated[int, typer.Option(min=1, max=1024, help="Keep-alive clients.")] = 64,
    repeats: Annotated[int, typer.Option(min=1, max=10, help="Runs of each app.")] = 2,
) -> None:
    """Gifts per second over HTTP (server on one core), next to a bare ASGI app."""
    from giftflow.bench.api import run_api_bench  # noqa: PLC0415 -- heavy, bench only

    run_api_bench(out, seconds=seconds, connections=connections, repeats=repeats)


@bench_app.command("events")
def bench_events(
    seconds: Annotated[float, typer.Option(min=1, max=600, help="Measured seconds per run.")] = 5,
    repeats: Annotated[int, typer.Option(min=1, max=10, help="Runs of each scenario.")] = 3,
) -> None:
    """Gift-to-subscriber latency at 1,000 and 10,000 subscribers; a slow subscriber's cost."""
    from giftflow.bench.events import run_events_bench  # noqa: PLC0415 -- heavy, bench only

    try:
        run_events_bench(out, seconds=seconds, repeats=repeats)
    except RuntimeError as error:
        raise CliError(str(error)) from error


@bench_app.command("economy")
def bench_economy(
    gifts: Annotated[int, typer.Option(min=100, max=1_000_000,
                                       help="Gifts per measurement.")] = 10_000,
    batch: Annotated[int, typer.Option(min=1, max=1_000, help="Gifts per transaction.")] = 500,
    repeats: Annotated[int, typer.Option(min=1, max=20, help="Pairs of runs.")] = 3,
    postgres_url: BenchPostgresUrl = None,
    data_dir: DataDir = None,
) -> None:
    """End-to-end send_gift through the economy vs the ledger's group commit, per store."""
    from giftflow.bench.economy import EconomyBenchError, run_economy_bench  # noqa: PLC0415

    settings = load_settings(data_dir, None)
    try:
        run_economy_bench(settings.data_dir, gifts=gifts, batch=batch, repeats=repeats,
                          postgres_url=postgres_url, console=out)
    except EconomyBenchError as error:
        raise CliError(str(error)) from error


def _fail(message: str) -> NoReturn:
    """Print ``message`` as exactly one line on standard error (never wrapped), then exit 2.

    Passwords inside database URLs are masked: secrets never reach a log.
    """
    message = _URL_PASSWORD.sub(r"\1***@", " ".join(message.split()))
    err.print(f"giftflow: {message}", style="red", soft_wrap=True,
              markup=False, highlight=False)
    sys.exit(2)


def main() -> None:
    """Entry point: expected failures become one clear line, never a traceback."""
    try:
        app()
    except CliError as error:
        _fail(str(error))
    except (OSError, ValueError) as error:
        _fail(str(error))
    except Exception as error:
        from giftflow.adapters.sql.store import is_postgres_error  # noqa: PLC0415

        if is_postgres_error(error):
            _fail(f"database error: {error}")
        raise


if __name__ == "__main__":
    main()
