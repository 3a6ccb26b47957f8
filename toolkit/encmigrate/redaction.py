"""Masking secrets in text that leaves the process: log lines and tracebacks.

:func:`redact` (and :class:`RedactingFilter`, which applies it to log records)
masks:

* the value of a secret-looking field, quoted or not, in JSON, a Python
  ``repr`` or ``name=value`` / ``Name: value`` text (a bare name needs the
  space after its colon, so an ARN's ``secret:name`` stays): any name ending in
  ``key``, ``secret``, ``token``, ``password``, ``passwd``, ``pwd``,
  ``passphrase``, ``plaintext``, ``ciphertextblob``, ``secretstring``,
  ``secretbinary``, ``authorization``, ``credential(s)``, ``signature`` or
  ``cookie`` (``Plaintext``, ``SecretString``, ``master_key``,
  ``X-Vault-Token``, ``ENCMIGRATE_MASTER_KEY``, ...);
* the password of a URL (``scheme://user:***@host``);
* a ``b'...'`` bytes literal with 8 or more ``\\x`` escapes (raw key bytes);
* any run of 32 or more base64 characters (standard or urlsafe) mixing
  upper- and lower-case letters (a 32-byte key in base64 is 43 characters;
  a random one lacks either case with a probability below 1e-9), and any run
  of 64 or more hexadecimal digits.

Not covered: key material shorter than those runs outside a named field,
raw (undecoded) bytes, and what other handlers (an embedding application's)
print of a record before ours has rewritten it: only the handlers that
carry the filter (the CLI's, the worker processes') mask.
"""

from __future__ import annotations

import logging
import re

__all__ = ["MASK", "RedactingFilter", "redact"]

MASK = "***"

_NAME = (
    r"[\w.-]*?(?:key|secret|token|password|passwd|pwd|passphrase|plaintext|ciphertextblob|"
    r"secretstring|secretbinary|authorization|credentials?|signature|cookie)"
)
# Names that end like a secret but name none (a column's key, a key's label).
_NOT_SECRET = frozenset({"primary_key", "foreign_key", "public_key", "transit_key"})
_FIELD = re.compile(
    r"(?<![\w.-])(?P<nq>\\?[\"']|)(?P<name>" + _NAME + r")(?P=nq)"
    # "name": or 'name': may touch the value; a bare name: needs a space (not an ARN's secret:x)
    r"(?P<sep>\s*=\s*|(?<=[\"'])\s*:\s*|\s*:\s+)"
    r"(?:(?P<quoted>b?(?P<vq>\\?[\"']).*?(?<!\\)(?P=vq))"
    r"|(?P<scheme>(?:Bearer|Basic|Token|Digest)\s+)?"
    r"(?P<bare>(?!(?:null|None|true|false)\b)(?![\"'\\\s])[^\s,;&'\"\\})\]]+))",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):(?P<pw>[^@\s]+)@")
_BYTES = re.compile(r"(?<!\w)b(?P<q>['\"])(?P<body>(?:\\.|(?!(?P=q)).)*)(?P=q)")
_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])")
_HEX_RUN = re.compile(r"[0-9a-fA-F]{64,}")
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")


def redact(text: str) -> str:
    """``text`` with secret-looking values masked (the rules are in the module docstring)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _FIELD.sub(_mask_field, text)
    text = _BYTES.sub(_mask_bytes, text)
    text = _BASE64_RUN.sub(_mask_base64, text)
    return _HEX_RUN.sub(MASK, text)


def _mask_field(match: re.Match[str]) -> str:
    name = match["name"]
    if name.lower() in _NOT_SECRET:
        return match[0]
    head = f"{match['nq']}{name}{match['nq']}{match['sep']}"
    quoted = match["quoted"]
    if quoted is not None:
        prefix = "b" if quoted.startswith("b") else ""
        return f"{head}{prefix}{match['vq']}{MASK}{match['vq']}"
    return f"{head}{match['scheme'] or ''}{MASK}"


def _mask_bytes(match: re.Match[str]) -> str:
    if match["body"].count("\\x") < 8:
        return match[0]
    return f"b{match['q']}{MASK}{match['q']}"


def _mask_base64(match: re.Match[str]) -> str:
    run = match[0]
    return MASK if _UPPER.search(run) and _LOWER.search(run) else run


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's final message and traceback (the record is rewritten)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
