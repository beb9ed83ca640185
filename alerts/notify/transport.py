"""The HTTP transport shared by the webhook, Slack and PagerDuty receivers: one JSON POST, classified.

One attempt per call: 2xx is delivered; 429, 5xx, timeouts and connection
errors are retryable; other statuses are not. Retrying, backoff and giving up
are the outbox's business (:mod:`alerts.delivery`), so they are not here.

Error messages name only ``scheme://host:port``: a Slack webhook's path and a
query string's token are secrets, and the messages end up in logs and in
``notification_outbox.last_error``.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from alerts.notify.common import _ERROR_BODY_CHARS, USER_AGENT, DeliveryError

__all__ = ["_post_json"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST would silently become a GET without the body; report it instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _where(url: str) -> str:
    """scheme://host:port only: Slack webhook paths and query strings are secrets."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc.rpartition('@')[2]}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _post_json(url: str, body: dict, timeout: float) -> None:
    """POST ``body`` as JSON once; raises :class:`DeliveryError` (with ``retryable``) unless the answer is 2xx."""
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": USER_AGENT})
    where = _where(url)
    try:
        with _opener.open(req, timeout=timeout) as resp:
            resp.read(65536)
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        try:
            text = exc.read(4096).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - the body is only for the message
            text = ""
        finally:
            exc.close()
        text = " ".join(text.split())[:_ERROR_BODY_CHARS]
        msg = f"HTTP {status} from {where}" + (f": {text}" if text else "")
        if 300 <= status < 400:
            location = exc.headers.get("Location", "") if exc.headers else ""
            raise DeliveryError(f"HTTP {status} redirect from {where} to {_where(location) if location else '?'}; "
                                f"configure the final URL", retryable=False, status=status) from None
        raise DeliveryError(msg, retryable=status == 429 or status >= 500, status=status) from None
    except urllib.error.URLError as exc:
        reason = _reason(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
        raise DeliveryError(f"cannot reach {where}: {reason}", retryable=True) from None
    except TimeoutError:
        raise DeliveryError(f"timed out after {timeout:g}s waiting for {where}", retryable=True) from None
    except OSError as exc:  # refused, reset, TLS errors
        raise DeliveryError(f"connection to {where} failed: {_reason(exc)}", retryable=True) from None
    except Exception as exc:  # noqa: BLE001 - http.client.HTTPException and friends: a broken answer
        raise DeliveryError(f"bad answer from {where}: {type(exc).__name__}: {_reason(exc)}", retryable=True) from None
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status} from {where}", retryable=status == 429 or status >= 500, status=status)
