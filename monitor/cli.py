"""The ``nlpmon`` command line."""
from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import sys

import click

from monitor.demo import DEFAULT_DAYS, DEFAULT_RPS, DEFAULT_SEED
from monitor.foundation.clock import SystemClock, parse_time
from monitor.foundation.config import Config, ConfigError, load_config
from monitor.foundation.storage import Store, StoreBusy, StoreError, StoreQueryError

EXIT_ERROR = 1
EXIT_BUSY = 3


class _Ctx:
    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._config: Config | None = None
        self._store: Store | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from alerts import notify  # the receivers' settings are the alert engine's to validate
            config = load_config(self.config_path)
            notify.receivers(config)  # so every command fails fast, with the key named, on a bad receiver
            self._config = config
        return self._config

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.from_config(self.config)
            self._store.client  # open now, so a busy store is reported before any work starts
        return self._store

    def ready_store(self) -> Store:
        """The store, with its schema at the latest revision."""
        from monitor.foundation import migrate
        store = self.store
        have, want = migrate.current(store), migrate.head()
        if have != want:
            raise click.ClickException(f"the store's schema is at {have or 'nothing'}, not {want}: "
                                       f"run `nlpmon db upgrade` first")
        return store


def _setup_logging(config: Config) -> None:
    logging.basicConfig(level=config.logging.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Their INFO lines (every migration step, every job tick) drown what an operator needs to see.
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _friendly(fn):
    """One line on stderr and a non-zero exit for the errors a user can act on; never a stack trace."""
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        from jobs.embeddings import EmbeddingError
        from monitor.client import ClientError
        try:
            return fn(*args, **kwargs)
        except StoreBusy as exc:
            click.echo(f"nlpmon: {exc}", err=True)
            sys.exit(EXIT_BUSY)
        except StoreQueryError as exc:
            click.echo(f"nlpmon: the store rejected a query, a bug in nlpmon (not an outage): {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except (ConfigError, StoreError, ClientError, EmbeddingError) as exc:
            click.echo(f"nlpmon: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug: say so in one line; NLPMON_DEBUG=1 shows the traceback
            if os.environ.get("NLPMON_DEBUG"):
                raise
            click.echo(f"nlpmon: unexpected error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                       " (set NLPMON_DEBUG=1 for details)", err=True)
            sys.exit(EXIT_ERROR)
    return inner


@click.group()
@click.option("--config", "config_path", envvar="MONITOR_CONFIG", default=None,
              help="YAML config file (default ./monitor.yaml; env MONITOR_CONFIG).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """nlpmon: observability and drift monitoring for NLP and LLM features."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx.obj = _Ctx(config_path)


# -- db ------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Schema migrations (alembic revisions in migrations/)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_obj
@_friendly
def db_upgrade(obj: _Ctx, revision: str) -> None:
    """Apply revisions up to REVISION (default head). Safe to run again."""
    from monitor.foundation import migrate
    migrate.upgrade(obj.store, obj.config, revision)
    click.echo(f"schema at {migrate.current(obj.store)} ({obj.store.describe()})")


@db.command("downgrade")
@click.argument("revision")
@click.pass_obj
@_friendly
def db_downgrade(obj: _Ctx, revision: str) -> None:
    """Revert revisions down to REVISION ('base' removes every table)."""
    from monitor.foundation import migrate
    migrate.downgrade(obj.store, obj.config, revision)
    click.echo(f"schema at {migrate.current(obj.store) or 'base'}")


@db.command("current")
@click.pass_obj
@_friendly
def db_current(obj: _Ctx) -> None:
    """Print the applied revision."""
    from monitor.foundation import migrate
    have, want = migrate.current(obj.store), migrate.head()
    click.echo(f"{have or 'base'}" + ("" if have == want else f" (latest is {want}: run `nlpmon db upgrade`)"))


# -- keys ----------------------------------------------------------------------
@cli.group()
def keys() -> None:
    """API keys (scopes: ingest, read, review, admin)."""


def _keystore(obj: _Ctx):
    from monitor.foundation.auth import KeyStore
    return KeyStore(obj.ready_store(), SystemClock(), 0)


@keys.command("create")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="ingest, read, review or admin; repeat or comma-separate for several.")
@click.option("--name", required=True, help="Who or what uses the key.")
@click.pass_obj
@_friendly
def keys_create(obj: _Ctx, scopes: tuple[str, ...], name: str) -> None:
    """Create a key and print it. It is shown this once and stored only as a hash."""
    wanted = [s.strip() for part in scopes for s in part.split(",") if s.strip()]
    try:
        key, plain = _keystore(obj).create(name, wanted)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from None
    click.echo(f"created key {key.key_id} '{key.name}' with scopes {', '.join(key.scopes)}", err=True)
    click.echo("store it now; it cannot be shown again:", err=True)
    click.echo(plain)


@keys.command("list")
@click.pass_obj
@_friendly
def keys_list(obj: _Ctx) -> None:
    """List keys (never their secrets)."""
    rows = _keystore(obj).list()
    if not rows:
        click.echo("no keys; create one with `nlpmon keys create --scope read --name NAME`")
    for k in rows:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        click.echo(f"{k.key_id}  {k.name:<24} {','.join(k.scopes):<20} created {k.created_at:%Y-%m-%d %H:%M}  {state}")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
@_friendly
def keys_revoke(obj: _Ctx, key_id: str) -> None:
    """Revoke a key by its id (the part after nlpm_)."""
    if not _keystore(obj).revoke(key_id):
        raise click.ClickException(f"no key with id {key_id}")
    click.echo(f"revoked {key_id}")


# -- jobs ----------------------------------------------------------------------
def _when(value: str | None, option: str | None = None) -> dt.datetime | None:
    """A time option (ISO 8601 or epoch seconds), or a usage error naming the option."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}", param_hint=option) from None


def _jobs(obj: _Ctx):
    from monitor.scheduler import build_jobs
    return build_jobs(obj.ready_store(), obj.config, SystemClock())


def _check_model(registry) -> None:
    """Check the embedding model's files now: a missing model is a start-up error, not a failed job at
    night. The model itself loads when a job first embeds (about 90 MB of weights and torch's working
    memory the process does not hold until then)."""
    if "drift" in registry:
        registry["drift"].check(load=False)
        click.echo("embedding model found; it loads when a job first needs it", err=True)


@cli.group()
def jobs() -> None:
    """Scheduled jobs that compute metrics (sli, slo, cost, hallucination_sample, hallucination, drift, grounding_proxy)."""


@jobs.command("list")
@click.pass_obj
@_friendly
def jobs_list(obj: _Ctx) -> None:
    """Each job with its interval and its last run (a run that never finished: running or interrupted)."""
    registry = _jobs(obj)
    from monitor.foundation.tables import job_runs
    last = job_runs.latest(obj.store)
    for name, job in registry.items():
        line = f"{name:<6} every {str(job.interval):<8} {job.description}"
        if name in last:
            run = last[name]
            line += f"\n       last run {run.started_at:%Y-%m-%d %H:%M:%S} UTC: {run.status}"
            if run.finished_at is None:  # no final row: still going, or killed before it could write one
                state = "still going" if run.status == "running" else "never finished"
                line += (f" ({state}; window {run.window_start:%Y-%m-%d %H:%M} to "
                         f"{run.window_end:%Y-%m-%d %H:%M} UTC)")
            else:
                line += f", {run.rows} rows in {run.duration_ms / 1000:.2f} s"
            if run.error:
                line += f": {run.error.splitlines()[0][:200]}"
            if run.status != "ok":
                ok = run.last_ok_at
                line += f"\n       last success {ok:%Y-%m-%d %H:%M:%S} UTC" if ok else "\n       never succeeded"
        else:
            line += "\n       never run"
        click.echo(line)


@jobs.command("run")
@click.argument("name")
@click.option("--at", "at", default=None, help="Run as if it were this time (ISO 8601, default now).")
@click.option("--from", "since", default=None, help="Compute from this time instead of the last run (backfill).")
@click.pass_obj
@_friendly
def jobs_run(obj: _Ctx, name: str, at: str | None, since: str | None) -> None:
    """Run one job once, now (or as of --at)."""
    registry = _jobs(obj)
    if name not in registry:
        raise click.BadParameter(f"no job {name!r}; jobs are {', '.join(registry)}", param_hint="NAME")
    registry[name].show_progress = True
    result = registry[name].run(now=_when(at, "--at"), since=_when(since, "--from"))
    click.echo(f"{name}: {result.status}, {result.rows} points for {result.window_start:%Y-%m-%d %H:%M} to "
               f"{result.window_end:%Y-%m-%d %H:%M} UTC in {result.duration_ms / 1000:.2f} s")
    if result.status != "ok":
        raise click.ClickException(result.error)


@cli.command()
@click.pass_obj
@_friendly
def scheduler(obj: _Ctx) -> None:
    """Run only the job scheduler, active while it holds the scheduler lease, standby otherwise (for a
    server store with API replicas started with `serve --no-scheduler`; see docs/deploy.md)."""
    import signal
    import threading

    from monitor.scheduler import Scheduler, scheduler_lease
    _setup_logging(obj.config)
    registry = _jobs(obj)
    _check_model(registry)
    store = obj.ready_store()
    sched = Scheduler(registry, scheduler_lease(store, obj.config, SystemClock()), store)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    sched.start()
    click.echo(f"nlpmon scheduler {'active' if sched.active else 'standby (another scheduler holds the lease)'} "
               f"({store.describe()}); Ctrl-C to stop", err=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    _stop_scheduler(sched, obj.config)


def _stop_scheduler(sched, config) -> None:
    """The bounded stop of SIGTERM and Ctrl-C: runs in flight get ``jobs.shutdown_grace``, the outbox is
    delivered, the lease released; a run still going then is cut off as a kill would (it shows as
    interrupted and the next start computes its windows again), rather than holding the exit."""
    still = sched.shutdown(config.jobs.shutdown_grace)
    if still:
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)


@cli.group()
def rollups() -> None:
    """The per-minute rollup tables."""


@rollups.command("rebuild")
@click.option("--from", "start", required=True, help="Start (ISO 8601; whole UTC days).")
@click.option("--to", "end", required=True, help="End, exclusive (ISO 8601).")
@click.pass_obj
@_friendly
def rollups_rebuild(obj: _Ctx, start: str, end: str) -> None:
    """Recompute the rollups (requests per minute/hour/day, feedback per minute) from the raw tables, for whole UTC days."""
    from tqdm import tqdm

    from monitor.foundation.tables.rollups import rebuild, rebuild_plan
    lo, hi = _when(start, "--from"), _when(end, "--to")
    if hi <= lo:
        raise click.BadParameter("--to must be after --from")
    store = obj.ready_store()
    with tqdm(total=len(rebuild_plan(store, lo, hi)), unit="day", desc="rebuilding rollups", file=sys.stderr) as bar:
        done = rebuild(store, lo, hi, on_day=lambda d: bar.update(1))
    click.echo(f"rebuilt {done} day(s) of rollups", err=True)


# -- serve ---------------------------------------------------------------------
@cli.command()
@click.option("--host", default=None, help="Interface to listen on (default server.host).")
@click.option("--port", type=int, default=None, help="Port (default server.port).")
@click.option("--scheduler/--no-scheduler", "with_scheduler", default=None,
              help="Run the job scheduler here too (default jobs.enabled); --no-scheduler on API replicas.")
@click.option("--demo", "with_demo", is_flag=True,
              help=f"On an empty store: load {DEFAULT_DAYS:g} days of demo data in the background (the pages "
                   "show its progress), then send live demo traffic.")
@click.pass_obj
@_friendly
def serve(obj: _Ctx, host: str | None, port: int | None, with_scheduler: bool | None, with_demo: bool) -> None:
    """Serve the API and run the job scheduler in this process (required for the embedded store)."""
    import signal
    import threading

    import waitress

    from monitor.app import create_app
    from monitor.foundation.memory import cap_arenas
    cap_arenas()  # before the engine's and the server's threads
    cfg = obj.config
    _setup_logging(cfg)
    store = obj.ready_store()
    app = create_app(cfg, store)
    svc = app.extensions["nlpmon"]
    host, port = host or cfg.server.host, port or cfg.server.port
    sched = None
    stop = threading.Event()
    if cfg.jobs.enabled if with_scheduler is None else with_scheduler:
        from monitor.scheduler import Scheduler, build_jobs, scheduler_lease
        registry = build_jobs(store, cfg, svc.clock)
        _check_model(registry)
        sched = Scheduler(registry, scheduler_lease(store, cfg, svc.clock), store)
    grpc_server = _start_grpc(svc, cfg, host)  # before anything runs: a port in use stops start-up cleanly
    # SIGTERM (a plain `kill`, systemd, Kubernetes) stops as Ctrl-C does: waitress closes on SystemExit.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if with_demo:
            from monitor.demo import background
            background.start(store, cfg, svc.clock, svc.ingestor.ingest, svc.progress, days=DEFAULT_DAYS,
                             rps=DEFAULT_RPS, seed=DEFAULT_SEED, on_loaded=sched.start if sched else (lambda: None),
                             stop=stop, echo=lambda message: click.echo(message, err=True))
        elif sched:
            sched.start()
        if cfg.metrics.port:
            from dashboards.series import metrics_only_app
            metrics_server = waitress.create_server(metrics_only_app(app.extensions["nlpmon"]),
                                                    host=cfg.metrics.host, port=cfg.metrics.port, threads=2,
                                                    ident="nlpmon-metrics", asyncore_use_poll=True)
            threading.Thread(target=metrics_server.run, daemon=True, name="metrics-port").start()
            click.echo(f"/metrics without a key on http://{cfg.metrics.host}:{cfg.metrics.port}/metrics", err=True)
        # poll() rather than select(): select() fails once the process holds 1024 descriptors,
        # which the embedded engine's open parts can reach. Bound before the line says so: a caller that
        # waits for it (a supervisor, a test) may connect at once.
        server = waitress.create_server(app, host=host, port=port, threads=cfg.server.threads, ident="nlpmon",
                                        clear_untrusted_proxy_headers=True, asyncore_use_poll=True)
        click.echo(f"nlpmon serving on http://{host}:{port} ({store.describe()}); "
                   f"scheduler {_scheduler_state(sched, with_demo)}", err=True)
        server.run()
    finally:
        stop.set()
        if grpc_server:
            grpc_server.stop(GRPC_GRACE_SECONDS).wait()
        if sched:
            _stop_scheduler(sched, cfg)


# Exports in flight when serve stops get this long to finish; new ones are refused (UNAVAILABLE: retried).
GRPC_GRACE_SECONDS = 5


def _start_grpc(svc, cfg: Config, host: str):
    """OTLP/gRPC on otlp.grpc_port of the HTTP port's host, or None when the port is 0."""
    if not cfg.otlp.grpc_port:
        return None
    from monitor.ingest import otlp_grpc
    tls = (cfg.otlp.grpc_tls_cert, cfg.otlp.grpc_tls_key) if cfg.otlp.grpc_tls_cert else None
    server, port = otlp_grpc.start(svc, host, cfg.otlp.grpc_port, cfg.server.threads, tls)
    click.echo(f"OTLP/gRPC on {host}:{port}{' (TLS)' if tls else ''}", err=True)
    return server


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(0)


def _scheduler_state(sched, waits_for_demo: bool) -> str:
    if sched is None:
        return "off"
    if waits_for_demo and not sched.started:
        return "starts once the demo data is computed"
    return "active" if sched.active else "standby (another scheduler holds the lease)"


# -- ingest --------------------------------------------------------------------
@cli.command()
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--kind", type=click.Choice(["requests", "feedback"]), default="requests", show_default=True)
@click.option("--url", default=None, help="Send through a running server's API instead of opening the store.")
@click.option("--api-key", envvar="NLPMON_API_KEY", default=None, help="Key with the ingest scope (with --url).")
@click.option("--batch-size", type=int, default=5000, show_default=True)
@click.pass_obj
@_friendly
def ingest(obj: _Ctx, file, kind: str, url: str | None, api_key: str | None, batch_size: int) -> None:
    """Load events from an NDJSON FILE ('-' for stdin)."""
    from monitor.ingest.bodies import parse_row
    from monitor.ingest.pipeline import IngestResult
    sink = _sink(obj, url, api_key)
    total = IngestResult()
    batch: list = []

    def flush():
        total.add(sink(kind, batch))
        batch.clear()

    for n, line in enumerate(file, 1):
        if not line.strip():
            continue
        # A line that is not JSON, or nests too deeply, is one rejected row, as through the API.
        batch.append(parse_row(line.rstrip("\n"), what=f"line {n}"))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    click.echo(f"accepted {total.accepted} (of which {total.duplicates} already stored), rejected {total.rejected}")
    for e in total.errors[:20]:
        click.echo(f"  row {e['index']}: {e['field']}: {e['reason']}", err=True)
    if total.rejected:
        click.echo("rejected rows are kept in the rejected_events table", err=True)


def _sink(obj: _Ctx, url: str | None, api_key: str | None):
    """Where events go: a running server's API (``--url``) or the store through the same pipeline."""
    from monitor.ingest.pipeline import Ingestor, IngestResult, Unparseable, user_id_salt
    if url:
        from monitor.client import Client
        if not api_key:
            raise click.UsageError("--url needs --api-key (or NLPMON_API_KEY)")
        client = Client(url, api_key, flush_at_exit=False)

        def send(kind, rows):
            if any(isinstance(r, Unparseable) for r in rows):
                raise click.ClickException("the file has lines that are not JSON; fix them or ingest without --url")
            answer = client.send(kind, rows)
            return IngestResult(answer["accepted"], answer["duplicates"], answer["rejected"], answer["errors"])
        return send
    store = obj.ready_store()
    clock = SystemClock()
    ingestor = Ingestor(store, obj.config, clock, user_id_salt(store, obj.config, clock))
    return ingestor.ingest


# -- demo ----------------------------------------------------------------------
@cli.command()
@click.option("--days", type=float, default=DEFAULT_DAYS, show_default=True, help="How many days of history to create.")
@click.option("--rps", type=float, default=DEFAULT_RPS, show_default=True, help="Mean requests per second.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option("--end", default=None, help="End of the generated window (ISO 8601, default now).")
@click.option("--if-empty", is_flag=True, help="Do nothing when the store already holds requests.")
@click.option("--url", default=None, help="Send through a running server's API instead of opening the store.")
@click.option("--api-key", envvar="NLPMON_API_KEY", default=None, help="Key with the ingest scope (with --url).")
@click.pass_obj
@_friendly
def demo(obj: _Ctx, days: float, rps: float, seed: int, end: str | None, if_empty: bool, url: str | None,
         api_key: str | None) -> None:
    """Realistic synthetic traffic with injected incidents, for trying nlpmon out."""
    from monitor.demo.load import load
    from monitor.foundation.tables import requests
    if days <= 0 or rps <= 0:
        raise click.BadParameter("--days and --rps must be positive")
    if days > obj.config.retention.days:
        raise click.BadParameter(f"--days is beyond retention.days ({obj.config.retention.days})")
    if if_empty and not url and requests.count(obj.ready_store()) > 0:
        click.echo("the store already holds requests; demo data not loaded", err=True)
        return
    end_ts = (_when(end, "--end") or SystemClock().now()).replace(second=0, microsecond=0)
    sink = _sink(obj, url, api_key)
    key = load(sink, obj.config, days, rps, seed, end_ts, store=None if url else obj.ready_store(),
               echo=lambda message: click.echo(message, err=True))
    if key:
        click.echo(key)  # the only line on stdout, so `nlpmon demo > key.txt` keeps just the key


# -- incidents -------------------------------------------------------------------
@cli.command()
@click.option("--from", "from_", required=True, help="Window start, ISO 8601 (UTC) or epoch seconds.")
@click.option("--to", "to", required=True, help="Window end.")
@click.option("--service", default=None)
@click.option("--feature", default=None)
@click.option("--format", "fmt", type=click.Choice(["md", "json", "csv"]), default="md", show_default=True)
@click.pass_obj
@_friendly
def incident(obj: _Ctx, from_: str, to: str, service: str | None, feature: str | None, fmt: str) -> None:
    """An incident window as a postmortem skeleton (md), JSON or CSV: the same as GET /v1/incidents."""
    import json as _json

    from dashboards import incidents as inc
    start, end = _when(from_, "--from"), _when(to, "--to")
    try:
        period = inc.window(start, end)
    except inc.IncidentError as exc:
        raise click.BadParameter(str(exc)) from None
    rep = inc.report(obj.ready_store(), obj.config, period, {"service": service, "feature": feature})
    if fmt == "json":
        click.echo(_json.dumps(inc.as_json(rep), indent=2))
    elif fmt == "csv":
        click.echo(inc.as_csv(rep), nl=False)
    else:
        click.echo(inc.as_markdown(rep))


# -- digests ---------------------------------------------------------------------
@cli.group()
def digest() -> None:
    """Digests (digests: in the config): KPIs, movers, incidents, releases and cost of a period."""


def _digest_of(obj: _Ctx, name: str, at: str | None):
    from dashboards.digest_task import latest_fire
    cfg = next((d for d in obj.config.digests if d.name == name), None)
    if cfg is None:
        raise click.BadParameter(f"no digest named {name!r} (digests: "
                                 f"{', '.join(d.name for d in obj.config.digests) or 'none configured'})",
                                 param_hint="NAME")
    now = _when(at, "--at") or SystemClock().now()
    fired = latest_fire(cfg, now)
    if fired is None:
        raise click.BadParameter(f"the schedule {cfg.schedule!r} did not fire in the {cfg.period} before {now:%Y-%m-%d %H:%M}",
                                 param_hint="--at")
    return cfg, fired


@digest.command("preview")
@click.argument("name")
@click.option("--at", default=None, help="As if now were this time (the period of the latest schedule before it).")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True)
@click.pass_obj
@_friendly
def digest_preview(obj: _Ctx, name: str, at: str | None, fmt: str) -> None:
    """Print the digest NAME of the latest period, without sending it."""
    import json as _json

    from dashboards import digest as dg
    cfg, fired = _digest_of(obj, name, at)
    d = dg.build(obj.ready_store(), obj.config, cfg, *dg.period_of(cfg, fired), fired)
    if fmt == "json":
        click.echo(_json.dumps(dg.as_json(d), indent=2, default=str))
    elif fmt == "html":
        click.echo(dg.as_html(d))
    else:
        click.echo(dg.as_text(d), nl=False)


@digest.command("send")
@click.argument("name")
@click.option("--at", default=None, help="As if now were this time (the period of the latest schedule before it).")
@click.option("--force", is_flag=True, help="Send again to receivers that already had this period's digest.")
@click.pass_obj
@_friendly
def digest_send(obj: _Ctx, name: str, at: str | None, force: bool) -> None:
    """Queue the digest NAME of the latest period for its receivers (once each, unless --force) and deliver."""
    from dashboards import digest as dg
    from dashboards.digest_task import DigestTask
    cfg, fired = _digest_of(obj, name, at)
    store = obj.ready_store()
    task = DigestTask(store, obj.config, SystemClock(), obj.config.jobs.schedule.digests)
    queued = task.send(cfg, fired, force=force)
    start, end = dg.period_of(cfg, fired)
    sent = task.outbox.deliver_due()
    failed = [r for r in sent if r.status != "sent" and r.group_key.startswith(f"digest:{cfg.name}:")]
    click.echo(f"digest {name} for {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC: queued for {queued} "
               f"receiver(s); delivered {sum(r.status == 'sent' for r in sent)}")
    for r in failed:
        click.echo(f"  {r.receiver}: {r.status} ({r.last_error})", err=True)


# -- alerts and silences ---------------------------------------------------------
@cli.group()
def alerts() -> None:
    """Alert instances and receivers."""


@alerts.command("list")
@click.pass_obj
@_friendly
def alerts_list(obj: _Ctx) -> None:
    """Pending and firing alerts, with their value and since when."""
    from monitor.foundation.tables import alert_state
    rows = alert_state.active(obj.ready_store())
    if not rows:
        click.echo("no pending or firing alerts")
    for r in rows:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(r.labels.items()))
        value = "n/a" if r.value is None else f"{r.value:.4g}"
        click.echo(f"{r.state:<8} since {r.since:%Y-%m-%d %H:%M:%S} UTC  value {value}"
                   f"{'' if r.health == 'ok' else '  [' + r.health + ']'}  {labels}")
        if r.annotations.get("summary"):
            click.echo(f"         {r.annotations['summary']}")


@alerts.command("test-receiver")
@click.argument("name")
@click.pass_obj
@_friendly
def alerts_test_receiver(obj: _Ctx, name: str) -> None:
    """Send a test notification to receiver NAME now."""
    from alerts.delivery import Outbox
    from alerts.notify import DeliveryError
    names = [r.name for r in obj.config.alerts.receivers]
    if name not in names:
        raise click.BadParameter(f"no receiver {name!r}; receivers are {', '.join(names) or 'none configured'}",
                                 param_hint="NAME")
    try:
        Outbox(obj.ready_store(), obj.config, SystemClock()).test_notification(name)
    except DeliveryError as exc:
        raise click.ClickException(f"receiver {name}: {exc}") from None
    click.echo(f"test notification delivered to {name}")


@cli.command()
@click.argument("action", type=click.Choice(["add", "list", "expire"]))
@click.option("--matcher", "matchers", multiple=True, help="label=value, label!=value, label=~regex (repeatable).")
@click.option("--duration", default="2h", show_default=True, help="How long the silence lasts.")
@click.option("--comment", default="", help="Why (required for add).")
@click.option("--author", default=None, help="Who (default $USER).")
@click.option("--id", "sid", default=None, help="Silence id (for expire).")
@click.pass_obj
@_friendly
def silence(obj: _Ctx, action: str, matchers, duration: str, comment: str, author: str | None,
            sid: str | None) -> None:
    """Silences: add (--matcher k=v --duration 2h --comment ...), list, expire --id ID."""
    from alerts import silence as silences
    from monitor.foundation.config import parse_duration
    store, clock = obj.ready_store(), SystemClock()
    if action == "add":
        try:
            length = parse_duration(duration)
        except (ValueError, OverflowError) as exc:
            raise click.BadParameter(str(exc), param_hint="--duration") from None
        try:
            s, _ = silences.create(store, clock, list(matchers), silences.ends_after(clock.now(), length),
                                author or os.environ.get("USER", "cli"), comment)
        except silences.SilenceError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(s.id)
        click.echo(f"silenced {', '.join(map(str, s.matchers))} until {s.ends_at:%Y-%m-%d %H:%M} UTC", err=True)
    elif action == "list":
        for s in silences.list_all(store, clock):
            click.echo(f"{s.id}  {s.status:<8} until {s.ends_at:%Y-%m-%d %H:%M} UTC  "
                       f"{', '.join(map(str, s.matchers))}  by {s.created_by}: {s.comment}")
    else:
        if not sid:
            raise click.BadParameter("--id is required to expire a silence", param_hint="--id")
        if silences.expire(store, clock, sid) is None:
            raise click.ClickException(f"no silence {sid}")
        click.echo(f"expired {sid}")


def main() -> None:
    cli(prog_name="nlpmon")


if __name__ == "__main__":
    main()
