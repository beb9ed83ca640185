"""The Flask app factory: ``monitor.app:create_app``."""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from .auth import KeyMaskingFilter, KeyStore
from .clock import SystemClock
from .config import Config, load_config
from .errors import ApiError
from .ingest import Ingestor, user_id_salt
from .storage import Store, StoreError, StoreUnavailable

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5


@dataclass
class Services:
    """What the views share: one config, one store, one clock."""

    config: Config
    store: Store
    clock: object
    keys: KeyStore
    _ingestor: Ingestor | None = None

    def ingestor_if_built(self) -> Ingestor | None:
        return self._ingestor

    @property
    def ingestor(self) -> Ingestor:
        # Built on first use: the salt lives in the store, which may be down at start.
        if self._ingestor is None:
            salt = user_id_salt(self.store, self.config, self.clock)
            self._ingestor = Ingestor(self.store, self.config, self.clock, salt)
        return self._ingestor


def create_app(config: Config | None = None, store: Store | None = None, clock=None) -> Flask:
    config = config or load_config()
    store = store or Store.from_config(config)
    clock = clock or SystemClock()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = None  # the ingest views answer 413 themselves, as JSON
    app.json.sort_keys = False
    app.extensions["nlpmon"] = Services(config, store, clock, KeyStore(store, clock, config.auth.key_cache_seconds))
    _install_log_filter()

    from . import api, health, reports, review, series
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(series.bp)
    app.register_blueprint(review.bp)
    app.register_blueprint(reports.bp)
    from alerts import api as alerts_api
    app.register_blueprint(alerts_api.bp)
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


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        resp = jsonify(exc.body())
        resp.status_code = exc.status
        resp.headers.update(exc.headers)
        return resp

    @app.errorhandler(StoreError)
    def store_error(exc: StoreError):
        log.warning("store unavailable: %s", exc)
        resp = jsonify({"error": "store_unavailable",
                        "message": "the event store is unavailable; nothing from this request was stored, retry later"})
        resp.status_code = 503
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        resp = jsonify({"error": (exc.name or "error").lower().replace(" ", "_"), "message": exc.description})
        resp.status_code = exc.code or 500
        return resp

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        incident = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s", incident)
        return jsonify({"error": "internal_error", "message": f"internal error (reference {incident})"}), 500


__all__ = ["create_app", "Services", "StoreUnavailable"]
