"""Remote execution on NDIF: the checks made before the first request, and a dry run that counts requests.

A remote TEMPO step is one nnsight trace with ``remote=True``: one request that sends the token ids,
position ids and masks of every column so far (the server keeps no cache between requests) and brings
back the saved tensors (the new rows' logits and, when captured, their attention weights). Before the
first one, :func:`check_remote` makes sure it can succeed: an API key, a model named by its Hugging
Face id (NDIF hosts models by id; a local folder cannot run remotely), and a host that answers within
seconds; otherwise one :class:`~tempo_lens.errors.ModelUnavailableError` names what is missing.
:func:`tempo_lens.generation.explicit.dry_run` runs a generation locally in exactly the remote shape
and counts, per step, the traces and the bytes sent and saved.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ...errors import ModelUnavailableError

REACH_SECONDS = 5.0


def api_key() -> str | None:
    """The NDIF API key nnsight would send (``NDIF_API_KEY`` or nnsight's config)."""
    from nnsight import CONFIG  # optional dependency, imported only when remote execution is asked for

    return os.environ.get("NDIF_API_KEY") or CONFIG.API.APIKEY


def host() -> str:
    from nnsight import CONFIG  # deferred: nnsight

    return str(CONFIG.API.HOST)


def reach(url: str, seconds: float = REACH_SECONDS) -> str | None:
    """Why ``url``'s host cannot be reached within ``seconds`` (name lookup and connect), or None."""
    parsed = urlparse(url if "://" in url else f"https://{url}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((parsed.hostname or "", port), timeout=seconds).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(str(exc) or type(exc).__name__)

    worker = threading.Thread(target=connect, daemon=True)  # a name lookup ignores socket timeouts
    worker.start()
    worker.join(seconds + 1)
    return outcome[0] if outcome else f"no answer within {seconds:g} s"


def check_remote(model: Any) -> None:
    """Refuse remote execution that cannot work from here, naming the fix (before any request)."""
    if not api_key():
        raise ModelUnavailableError(
            "remote=True needs an NDIF API key: set NDIF_API_KEY (from https://login.ndif.us) or call "
            "nnsight.CONFIG.set_default_api_key(key)"
        )
    repo = str(getattr(model, "repo_id", None) or "")
    if not repo or Path(repo).expanduser().exists():
        raise ModelUnavailableError(
            f"remote=True runs a model hosted on NDIF, named by its Hugging Face id (e.g. "
            f"LanguageModel('meta-llama/Llama-3.1-70B')); this one was loaded from {repo or 'an object'}, which NDIF cannot load"
        )
    problem = reach(host())
    if problem:
        raise ModelUnavailableError(
            f"cannot reach NDIF at {host()} ({problem}); check the network or NDIF_HOST, or run locally (remote=False)"
        )


def remote_failure(exc: BaseException) -> ModelUnavailableError:
    """A failed remote request as one clear error."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelUnavailableError(f"the remote request to NDIF failed: {first[:400]}")
