"""OTLP/gRPC: ``TraceService/Export`` and ``LogsService/Export`` on ``otlp.grpc_port``, the exports that POST
/v1/traces and /v1/logs take, ingested by the same code (otlp_export) with the same key and scope (``ingest``,
from the ``authorization: Bearer <key>`` metadata).

Exporters act on the status code alone, so each refusal has the code the OTLP spec gives it:
UNAUTHENTICATED and PERMISSION_DENIED (the key), INVALID_ARGUMENT (not an export: HTTP's 400),
RESOURCE_EXHAUSTED (over ``ingest.max_body_bytes``, which is also the server's largest message, gzip
included, or over ``ingest.max_rows_per_batch``: HTTP's 413), and UNAVAILABLE with a RetryInfo when the
store cannot be reached (HTTP's 503 with Retry-After): the exporters retry that one and drop the others.
A bug is INTERNAL with a reference that the log carries beside the stack trace, which the client never sees.

The methods are registered under the services' names from opentelemetry-proto's descriptors with the request
kept as bytes, and parsed inside the handler by the HTTP door's own ``otlp.parse``: a body protobuf cannot
decode is then INVALID_ARGUMENT with the reason, where the generated ``add_*Servicer_to_server`` would answer
INTERNAL ("exception deserializing request"), which tells the sender the server is broken.
"""
from __future__ import annotations

import logging
import ssl
import uuid
from concurrent import futures

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from monitor.foundation.auth import bearer_key
from monitor.foundation.config import ConfigError
from monitor.foundation.http import RETRY_AFTER_SECONDS, ApiError
from monitor.foundation.storage import StoreError, StoreQueryError
from monitor.ingest import otlp, otlp_export

log = logging.getLogger(__name__)

CODES = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED}
# The Python SDK's exporters read the retry delay from this trailer, not from the status details that the
# Go and Java SDKs and the Collector read: both are sent.
RETRY_INFO_TRAILER = "google.rpc.retryinfo-bin"


class Receiver:
    """The handlers of the two services over the app's services (config, keys, ingestor, otlp).
    ``retry_after``: the delay an UNAVAILABLE answer asks for (seconds)."""

    def __init__(self, svc, retry_after: float = RETRY_AFTER_SECONDS):
        self.svc = svc
        self.retry_after = retry_after

    def handlers(self) -> list:
        return [self._service(trace_service_pb2, "TraceService", otlp.parse_traces, otlp_export.export_traces,
                              otlp.traces_answer),
                self._service(logs_service_pb2, "LogsService", otlp.parse_logs, otlp_export.export_logs,
                              otlp.logs_answer),
                _not_served(metrics_service_pb2, "MetricsService")]

    def _service(self, module, name: str, parse, export, answer):
        def handle(body: bytes, context):
            return self._answered(context, lambda key_id: answer(*export(self.svc, parse(body, otlp.PROTOBUF),
                                                                         key_id)))
        return _export(module, name, grpc.unary_unary_rpc_method_handler(
            handle, response_serializer=lambda m: m.SerializeToString()))

    def _answered(self, context, work):
        try:
            metadata = dict(context.invocation_metadata())  # gRPC sends metadata keys in lower case
            return work(bearer_key(self.svc.keys, metadata.get("authorization", ""), "ingest").key_id)
        except ApiError as exc:
            context.abort(CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message)
        except StoreQueryError as exc:
            reference = uuid.uuid4().hex[:12]
            log.error("store rejected a query (reference %s): %s; statement: %s", reference, exc, exc.sql[:2000])
            context.abort(grpc.StatusCode.INTERNAL, f"the store rejected a query: a bug in nlpmon, not an outage; "
                                                    f"retrying will not help (reference {reference})")
        except StoreError as exc:
            log.warning("store unavailable: %s", exc)
            context.abort_with_status(self._unavailable())
        except Exception:
            reference = uuid.uuid4().hex[:12]
            log.exception("unhandled error in an OTLP/gRPC export (reference %s)", reference)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error (reference {reference})")

    def _unavailable(self):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after * 1e9))
        retry = error_details_pb2.RetryInfo(retry_delay=delay)
        detail = any_pb2.Any()
        detail.Pack(retry)
        status = rpc_status.to_status(status_pb2.Status(
            code=code_pb2.UNAVAILABLE, details=[detail],
            message="the event store is unavailable; nothing from this export was stored, retry later"))
        return status._replace(trailing_metadata=(*status.trailing_metadata,
                                                  (RETRY_INFO_TRAILER, retry.SerializeToString())))


def _not_served(module, name: str):
    """A service nlpmon does not take, answered UNIMPLEMENTED with what to do, which the exporter logs (an
    SDK set up by environment variables alone exports metrics too; nlpmon computes its own from the requests)."""
    def refuse(body: bytes, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "nlpmon does not ingest OTLP metrics (it computes its own "
                                                     "from the requests): set OTEL_METRICS_EXPORTER=none")
    return _export(module, name, grpc.unary_unary_rpc_method_handler(refuse))


def _export(module, name: str, method):
    """The service ``name`` of an opentelemetry-proto module, its one method (Export) handled by ``method``,
    which takes the request as bytes."""
    return grpc.method_handlers_generic_handler(module.DESCRIPTOR.services_by_name[name].full_name,
                                                {"Export": method})


def start(svc, host: str, port: int, workers: int, tls: tuple[str, str] | None = None,
          retry_after: float = RETRY_AFTER_SECONDS) -> tuple[grpc.Server, int]:
    """The OTLP/gRPC server, started, and the port it listens on (``port`` 0: any free one). ``tls``: the
    paths of the certificate chain and the private key (PEM). ConfigError naming the key when the port cannot
    be had or a TLS file cannot be read."""
    credentials = _credentials(*tls) if tls else None
    server = grpc.server(
        futures.ThreadPoolExecutor(workers, thread_name_prefix="otlp-grpc"),
        handlers=Receiver(svc, retry_after).handlers(),
        # gRPC's default is 4 MiB; an export may be as large as an HTTP body. gRPC applies it after gzip too.
        options=[("grpc.max_receive_message_length", svc.config.ingest.max_body_bytes),
                 # A second server on the port fails to start rather than silently taking half the traffic.
                 ("grpc.so_reuseport", 0)])
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:
        raise ConfigError(f"config key 'otlp.grpc_port': cannot listen on {address} (is another process on it?); "
                          f"choose another port, or 0 to serve OTLP over HTTP only") from None
    server.start()
    return server, bound


def _credentials(cert: str, key: str) -> grpc.ServerCredentials:
    files = {}
    for name, path in (("otlp.grpc_tls_cert", cert), ("otlp.grpc_tls_key", key)):
        try:
            with open(path, "rb") as f:
                files[name] = f.read()
        except OSError as exc:
            raise ConfigError(f"config key '{name}': cannot read {path}: {exc.strerror}") from None
    try:  # gRPC takes any bytes here and fails each handshake later; the ssl module says what is wrong now
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(f"config keys 'otlp.grpc_tls_cert', 'otlp.grpc_tls_key': {cert} and {key} are not a "
                          f"PEM certificate chain and its private key ({exc.reason or exc})") from None
    return grpc.ssl_server_credentials([(files["otlp.grpc_tls_key"], files["otlp.grpc_tls_cert"])])
