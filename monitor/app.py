"""The Flask app factory: ``monitor.app:create_app``."""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from monitor.foundation.auth import KeyMaskingFilter, KeyStore
from monitor.foundation.clock import SystemClock
from monitor.foundation.config import Config, load_config
from monitor.foundation.http import RETRY_AFTER_SECONDS, ApiError
from monitor.foundation.progress import Progress
from monitor.foundation.storage import Store, StoreError, StoreQueryError
from monitor.ingest.pipeline import Ingestor, user_id_salt
from monitor.ingest.otlp_join import OtlpJoin

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the views share: one config, one store, one clock."""

    config: Config
    store: Store
    clock: object
    keys: KeyStore
    _ingestor: Ingestor | None = None
    _otlp: OtlpJoin | None = None
    # Background work the pages report on (``serve --demo`` loading its data); empty otherwise.
    progress: Progress = field(default_factory=Progress)

    def ingestor_if_built(self) -> Ingestor | None:
        return self._ingestor

    @property
    def ingestor(self) -> Ingestor:
        # Built on first use: the salt lives in the store, which may be down at start.
        if self._ingestor is None:
            salt = user_id_salt(self.store, self.config, self.clock)
            self._ingestor = Ingestor(self.store, self.config, self.clock, salt)
        return self._ingestor

    @property
    def otlp(self) -> OtlpJoin:
        # One for the process, as the ingestor: it remembers when it last logged late content.
        if self._otlp is None:
            self._otlp = OtlpJoin(self.store, self.config, self.clock, self.ingestor)
        return self._otlp


def create_app(config: Config | None = None, store: Store | None = None, clock=None) -> Flask:
    config = config or load_config()
    store = store or Store.from_config(config)
    clock = clock or SystemClock()
    app = Flask(__name__, static_folder=None)  # the dashboards blueprint serves /static
    app.config["MAX_CONTENT_LENGTH"] = None  # the ingest views answer 413 themselves, as JSON
    app.json.sort_keys = False
    app.extensions["nlpmon"] = Services(config, store, clock, KeyStore(store, clock, config.auth.key_cache_seconds))
    _install_log_filter()

    from dashboards import jobs, reports, series
    from monitor.review import api as review_api
    from monitor import health
    from monitor.ingest import api
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(series.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(review_api.bp)
    app.register_blueprint(reports.bp)
    from alerts import api as alerts_api
    app.register_blueprint(alerts_api.bp)
    from dashboards import access, views
    access.init_app(app)
    app.register_blueprint(access.bp)
    app.register_blueprint(views.bp)
    _register_error_handlers(app)
    return app


def _install_log_filter() -> None:
    for name in ("", "werkzeug", "waitress", "monitor"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, KeyMaskingFilter) for f in logger.filters):
            logger.addFilter(KeyMaskingFilter())
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, KeyMaskingFilter) for f in handler.filters):
            handler.addFilter(KeyMaskingFilter())


def _is_page() -> bool:
    """A browser page (not the JSON API, /metrics or a drift report's raw HTML): errors render as HTML."""
    path = request.path
    return not (path.startswith(("/v1/", "/metrics", "/healthz", "/readyz", "/static/")))


def _page_error(status: int, title: str, message: str):
    return render_template("error.html", status=status, title=title, message=message), status


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        if _is_page() and exc.status in (400, 404, 503):
            return _page_error(exc.status, "Bad request" if exc.status == 400 else "Not found", exc.message)
        resp = jsonify(exc.body())
        resp.status_code = exc.status
        resp.headers.update(exc.headers)
        return resp

    @app.errorhandler(StoreQueryError)
    def store_rejected(exc: StoreQueryError):
        # A bug, not an outage: 500 without Retry-After, so no client resends a batch that would fail again.
        reference = uuid.uuid4().hex[:12]
        log.error("store rejected a query (reference %s): %s; statement: %s", reference, exc, exc.sql[:2000])
        if _is_page():
            return _page_error(500, "Internal error", f"The store rejected a query: a bug in nlpmon, not an outage "
                                                      f"(reference {reference}; the log has the details).")
        return jsonify({"error": "internal_error",
                        "message": f"the store rejected a query: a bug in nlpmon, not an outage; retrying will not "
                                   f"help (reference {reference})"}), 500

    @app.errorhandler(StoreError)
    def store_error(exc: StoreError):
        log.warning("store unavailable: %s", exc)
        if _is_page():
            resp = app.make_response(_page_error(503, "Store unavailable", "The event store is not answering; "
                                                 "this page will work again when it is back. Retry in a few seconds."))
            resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return resp
        resp = jsonify({"error": "store_unavailable",
                        "message": "the event store is unavailable; nothing from this request was stored, retry later"})
        resp.status_code = 503
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if _is_page() and (exc.code or 500) >= 400:
            return _page_error(exc.code or 500, exc.name or "Error", exc.description or "")
        resp = jsonify({"error": (exc.name or "error").lower().replace(" ", "_"), "message": exc.description})
        resp.status_code = exc.code or 500
        return resp

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        incident = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s", incident)
        if _is_page():
            return _page_error(500, "Internal error", f"Something went wrong (reference {incident}); the log has "
                                                      "the details.")
        return jsonify({"error": "internal_error", "message": f"internal error (reference {incident})"}), 500


__all__ = ["create_app", "Services"]
