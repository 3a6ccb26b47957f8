"""Field-encryption throughput: encmigrate's batch path against its floor and its peer.

Issue 3 asks for fields per second, in one run on the same seeded values, of

* ``FieldCipher.batch_encrypt`` / ``batch_decrypt`` (ours),
* a raw ``AESGCM.encrypt`` / ``decrypt`` loop (the floor: the least any per-field
  AES-GCM can do for ``str`` input and output),
* sqlalchemy-utils ``StringEncryptedType(String, key, AesGcmEngine)`` bind/result
  processing (the peer a Python user reaches for),

and the ratios against its targets, plus a few extra lines (per-value ``encrypt``
with and without the nonce pool, search tokens, base64 text envelopes).

Run: ``.venv/bin/python bench/bench_crypto.py [--values N] [--repeat N] [--json]``.
Every measurement runs ``--repeat`` times, the contenders taking turns so that
drift in the machine's speed hits all of them alike; the best (minimum) time and
the median are reported, and the PASS/MISS verdicts use the best times. The
garbage collector is run before and disabled during each timed call (as
``timeit`` does), for every contender.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import string
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any, cast

import sqlalchemy as sa
from cryptography.hazmat.backends.openssl import backend as openssl_backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy_utils.types.encrypted.encrypted_type import (  # type: ignore[import-untyped]
    AesGcmEngine,
    StringEncryptedType,
)

import encmigrate
from encmigrate import Keyring
from encmigrate.crypto.envelope import HEADER_SIZE, associated_data, envelope_to_text, header_bytes
from encmigrate.crypto.kdf import KeyPurpose, derive_key

CONTEXT = "bench.value"
VALUE_LENGTH = 32
ALPHABET = string.ascii_letters + string.digits
RAW_NONCE_END = HEADER_SIZE + 12  # b[5:17] is the nonce, b[17:] ciphertext + tag


@dataclass(frozen=True, slots=True)
class Contender:
    """One timed piece of work: ``run`` processes ``count`` fields."""

    key: str
    label: str
    includes: str
    count: int
    run: Callable[[], object]
    extra: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    key: str
    label: str
    includes: str
    count: int
    extra: bool
    seconds: tuple[float, ...]

    @property
    def best_rate(self) -> float:
        return self.count / min(self.seconds)

    @property
    def median_rate(self) -> float:
        return self.count / statistics.median(self.seconds)

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "includes": self.includes,
            "values": self.count,
            "extra": self.extra,
            "seconds": list(self.seconds),
            "best_fields_per_s": round(self.best_rate),
            "median_fields_per_s": round(self.median_rate),
        }


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    numerator: str
    denominator: str
    minimum: float


TARGETS = (
    Target("batch_encrypt vs raw encrypt loop", "ours_encrypt", "raw_encrypt", 1.0),
    Target("batch_encrypt vs peer bind", "ours_encrypt", "peer_bind", 8.0),
    Target("batch_decrypt vs raw decrypt loop", "ours_decrypt", "raw_decrypt", 0.9),
)
INFO_RATIOS = (
    ("batch_decrypt vs peer result", "ours_decrypt", "peer_result"),
    ("optimized encrypt loop vs plain encrypt loop", "loop_optimized", "loop_plain"),
    ("batch_decrypt of text vs of bytes", "ours_decrypt_text", "ours_decrypt"),
)


def make_values(count: int, seed: int) -> list[str]:
    """``count`` random ASCII strings of 32 letters and digits, the same for a given seed."""
    rng = random.Random(seed)
    return ["".join(rng.choices(ALPHABET, k=VALUE_LENGTH)) for _ in range(count)]


def build_contenders(values: list[str], peer_values: list[str]) -> list[Contender]:
    """Set up every contender and check, untimed, that each one does the work correctly."""
    keyring = Keyring.generate()
    ours = encmigrate.get_cipher(CONTEXT, keyring=keyring)
    optimized = encmigrate.get_optimized_cipher(CONTEXT, keyring=keyring)
    searchable = encmigrate.get_searchable_cipher(CONTEXT, keyring=keyring)

    # The floor derives the same data key as ours, once, outside the timing, so it can
    # open our envelopes; its associated data is the header + context + the value's type.
    master = keyring.master_key(keyring.current_version)
    aead = AESGCM(derive_key(master, KeyPurpose.DATA, CONTEXT, keyring.kdf))
    aad = associated_data(header_bytes(keyring.current_version), CONTEXT, "string")

    envelopes = ours.batch_encrypt(values)
    blobs = [b for b in envelopes if b is not None]
    texts = [envelope_to_text(b) for b in blobs]
    _check(ours.batch_decrypt(envelopes) == values, "ours: batch_decrypt(batch_encrypt(v)) != v")
    _check(
        [aead.decrypt(b[HEADER_SIZE:RAW_NONCE_END], b[RAW_NONCE_END:], aad).decode() for b in blobs]
        == values,
        "raw decrypt loop does not open our envelopes",
    )
    _check(ours.batch_decrypt(texts) == values, "ours: batch_decrypt of base64 text != v")
    _check(
        ours.batch_decrypt([optimized.encrypt(v) for v in values[:1000]]) == values[:1000],
        "optimized cipher: envelopes do not decrypt",
    )
    _check(
        searchable.batch_tokens(values[:1000]) == [searchable.token(v) for v in values[:1000]],
        "batch_tokens != token per value",
    )

    peer = StringEncryptedType(sa.String, os.urandom(32), AesGcmEngine)
    dialect = pg_psycopg.dialect()  # type: ignore[no-untyped-call]
    bind, result = peer.process_bind_param, peer.process_result_value
    peer_stored = [bind(v, dialect) for v in peer_values]
    _check(
        [result(s, dialect) for s in peer_stored] == peer_values,
        "peer: process_result_value(process_bind_param(v)) != v",
    )

    n, pn = len(values), len(peer_values)
    return [
        Contender(
            "raw_encrypt",
            "raw AESGCM.encrypt loop (floor)",
            "per value: os.urandom(12), str.encode(), AESGCM.encrypt(nonce, data, aad); "
            "key derived and AESGCM built once, outside the timing; no header prepended",
            n,
            lambda: [aead.encrypt(os.urandom(12), v.encode(), aad) for v in values],
        ),
        Contender(
            "ours_encrypt",
            "ours: FieldCipher.batch_encrypt",
            "type check + UTF-8 encode per value, one os.urandom call for all nonces, "
            "AESGCM.encrypt, header + nonce + ciphertext + tag concatenated per value",
            n,
            lambda: ours.batch_encrypt(values),
        ),
        Contender(
            "peer_bind",
            "peer: StringEncryptedType.process_bind_param",
            "per value: SHA-256 of the key, os.urandom(12), Cipher(AES, GCM) encryptor, "
            "base64 text output (sqlalchemy-utils AesGcmEngine)",
            pn,
            lambda: [bind(v, dialect) for v in peer_values],
        ),
        Contender(
            "raw_decrypt",
            "raw AESGCM.decrypt loop (floor)",
            "per value: slice nonce and ciphertext of our envelope, AESGCM.decrypt, "
            "bytes.decode(); no header or version check",
            n,
            lambda: [
                aead.decrypt(b[HEADER_SIZE:RAW_NONCE_END], b[RAW_NONCE_END:], aad).decode()
                for b in blobs
            ],
        ),
        Contender(
            "ours_decrypt",
            "ours: FieldCipher.batch_decrypt",
            "version read from the first envelope, key looked up once, AESGCM.decrypt per "
            "value (header authenticated as AAD), UTF-8 decode per value",
            n,
            lambda: ours.batch_decrypt(envelopes),
        ),
        Contender(
            "peer_result",
            "peer: StringEncryptedType.process_result_value",
            "per value: SHA-256 of the key, base64 decode, Cipher(AES, GCM) decryptor, "
            "UTF-8 decode",
            pn,
            lambda: [result(s, dialect) for s in peer_stored],
        ),
        Contender(
            "loop_plain",
            "ours: get_cipher().encrypt per value",
            "one encrypt() call per value, one os.urandom(12) per nonce",
            n,
            lambda: [ours.encrypt(v) for v in values],
            extra=True,
        ),
        Contender(
            "loop_optimized",
            "ours: get_optimized_cipher().encrypt per value",
            "one encrypt() call per value, nonces from the 4 KiB pool (lock per nonce)",
            n,
            lambda: [optimized.encrypt(v) for v in values],
            extra=True,
        ),
        Contender(
            "ours_tokens",
            "ours: SearchableCipher.batch_tokens",
            "search key looked up once, hmac.digest(key, UTF-8 value, sha256) per value",
            n,
            lambda: searchable.batch_tokens(values),
            extra=True,
        ),
        Contender(
            "ours_encrypt_text",
            "ours: batch_encrypt + base64 text",
            "batch_encrypt, then envelope_to_text per value (what a storage='text' column "
            "holds; the peer's output is base64 text too)",
            n,
            lambda: list(map(envelope_to_text, cast("list[bytes]", ours.batch_encrypt(values)))),
            extra=True,
        ),
        Contender(
            "ours_decrypt_text",
            "ours: batch_decrypt of base64 text",
            "batch_decrypt given base64 text envelopes (per-value base64 decode and checks)",
            n,
            lambda: ours.batch_decrypt(texts),
            extra=True,
        ),
    ]


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"correctness check failed: {what}")


def time_once(run: Callable[[], object]) -> float:
    """Seconds for one call of ``run``, with the collector run before and held off during."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        output = run()
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    del output
    return elapsed


def measure(contenders: Sequence[Contender], repeat: int) -> list[Result]:
    """Time every contender ``repeat`` times, taking turns, after one untimed warm-up each."""
    for contender in contenders:
        time_once(contender.run)
    seconds: dict[str, list[float]] = {c.key: [] for c in contenders}
    for _ in range(repeat):
        for contender in contenders:
            seconds[contender.key].append(time_once(contender.run))
    return [
        Result(c.key, c.label, c.includes, c.count, c.extra, tuple(seconds[c.key]))
        for c in contenders
    ]


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cryptography": package_version("cryptography"),
        "openssl": openssl_backend.openssl_version_text(),
        "sqlalchemy": package_version("sqlalchemy"),
        "sqlalchemy_utils": package_version("sqlalchemy-utils"),
        "encmigrate": encmigrate.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def ratios(results: Sequence[Result]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    by_key = {r.key: r for r in results}

    def ratio(numerator: str, denominator: str) -> tuple[float, float]:
        top, bottom = by_key[numerator], by_key[denominator]
        return top.best_rate / bottom.best_rate, top.median_rate / bottom.median_rate

    targets = []
    for target in TARGETS:
        best, median = ratio(target.numerator, target.denominator)
        targets.append(
            {
                "name": target.name,
                "best": round(best, 3),
                "median": round(median, 3),
                "target": target.minimum,
                "verdict": "PASS" if best >= target.minimum else "MISS",
            }
        )
    info = []
    for name, numerator, denominator in INFO_RATIOS:
        best, median = ratio(numerator, denominator)
        info.append({"name": name, "best": round(best, 3), "median": round(median, 3)})
    return targets, info


def render(
    results: Sequence[Result], args: argparse.Namespace, peer_count: int, env: dict[str, Any]
) -> str:
    targets, info = ratios(results)
    lines = [
        f"encmigrate crypto bench: {args.values:,} values, random {VALUE_LENGTH}-char ASCII "
        f"strings (letters+digits, seed {args.seed}), {args.repeat} repeats, contenders "
        "taking turns; gc held off during each timed call",
        f"python {env['python']} | cryptography {env['cryptography']} | {env['openssl']} | "
        f"sqlalchemy {env['sqlalchemy']} | sqlalchemy-utils {env['sqlalchemy_utils']} | "
        f"cpu_count {env['cpu_count']} | {env['platform']}",
    ]
    if peer_count != args.values:
        lines.append(f"peer timed on the first {peer_count:,} values (fields/s stays comparable)")
    width = max(len(r.label) for r in results)
    header = (
        f"{'contender':<{width}}  {'values':>9}  {'best fields/s':>14}  {'median fields/s':>16}"
    )
    for extra in (False, True):
        lines += ["", "extra lines" if extra else "main", header, "-" * len(header)]
        lines += [
            f"{r.label:<{width}}  {r.count:>9,}  {r.best_rate:>14,.0f}  {r.median_rate:>16,.0f}"
            for r in results
            if r.extra is extra
        ]
    lines += ["", "targets (ratio of fields/s; verdict on best times)"]
    for t in targets:
        lines.append(
            f"  {t['name']:<36} {t['best']:>6.2f}x best  {t['median']:>6.2f}x median  "
            f"target >= {t['target']:.1f}x  {t['verdict']}"
        )
    lines += ["", "other ratios"]
    for i in info:
        lines.append(f"  {i['name']:<46} {i['best']:>6.2f}x best  {i['median']:>6.2f}x median")
    lines += ["", "what each contender includes"]
    lines += [f"  {r.label}: {r.includes}" for r in results]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--values", type=int, default=200_000, help="fields per run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per contender")
    parser.add_argument(
        "--peer-values",
        type=int,
        default=None,
        help="time the peer on the first N values only (default: all)",
    )
    parser.add_argument("--seed", type=int, default=3, help="seed of the random values")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.values < 1000 or args.repeat < 1:
        parser.error("--values must be at least 1000 and --repeat at least 1")
    if args.peer_values is not None and not 1 <= args.peer_values <= args.values:
        parser.error("--peer-values must be between 1 and --values")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    values = make_values(args.values, args.seed)
    peer_values = values[: args.peer_values] if args.peer_values else values
    results = measure(build_contenders(values, peer_values), args.repeat)
    env = environment()
    if args.json:
        targets, info = ratios(results)
        document = {
            "values": args.values,
            "peer_values": len(peer_values),
            "repeat": args.repeat,
            "seed": args.seed,
            "environment": env,
            "results": {r.key: r.as_json() for r in results},
            "targets": targets,
            "ratios": info,
        }
        print(json.dumps(document, indent=2))
    else:
        print(render(results, args, len(peer_values), env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
