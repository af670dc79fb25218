"""The one credential redactor: URL passwords and secrets read from the environment become `***`.

Everything Vigil prints passes through `redact`: every log line of the `vigil` loggers (message,
arguments, fields and traceback; see `pipeline.logs`), stored source errors, the CLI's error lines and
its `--debug` tracebacks. A URL password is hidden whatever the scheme, a mistyped `rstp://` too, and
also after pathlib has folded `//` into `/` (`rstp:/user:pw@host`, as a video-file path prints it).

The values `load_config` resolved from `${ENV}` are remembered here for the life of the process: once
a secret has been read, no output may show it, whichever object the text came from. That is the one
piece of process-wide state, like the logging configuration it serves; it only ever grows.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

MASK = "***"

#: scheme:/ or scheme:// + user + ':' + password (up to the last '@' before the path) + '@'
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*:/{1,2}[^\s/:@]*:)[^\s/]*@")

_lock = threading.Lock()
_known: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole


def remember(secrets: Iterable[str]) -> None:
    """Redact these values (resolved from the environment) from everything printed from now on."""
    global _known
    new = {s for s in secrets if s}
    with _lock:
        if new - set(_known):
            _known = tuple(sorted(set(_known) | new, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL passwords, the remembered secrets and the given `secrets` replaced by `***`."""
    extra = sorted((s for s in secrets if s), key=len, reverse=True)
    for secret in (*extra, *_known):
        if secret in text:
            text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)
