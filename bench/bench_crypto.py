"""Field-encryption throughput: encmigrate's batch path against its floor and its peer.

Issue 3 asks for fields per second, in one run on the same seeded values, of

* ``FieldCipher.batch_encrypt`` / ``batch_decrypt`` (ours),
* a raw ``AESGCM.encrypt`` / ``decrypt`` loop (the floor: the cheapest honest
  per-field AES-GCM for ``str`` input and output, same ``AESGCM`` class, same
  32-character values; its output keeps the nonce, so it could be opened),
* sqlalchemy-utils ``StringEncryptedType(String, key, AesGcmEngine)`` bind/result
  processing (the peer a Python user reaches for),

and the ratios against its targets (issue 19: ``batch_decrypt`` >= 0.90x and
``batch_encrypt`` >= 1.0x the raw loop's speed; the raw encrypt loop draws
``os.urandom(12)`` per value, as the issue's did), plus a few extra lines (a raw
encrypt loop cheaper than any per-field encryption, with one ``os.urandom`` call
for all nonces and no header or associated data, and batch_encrypt's ratio to it;
per-value ``encrypt`` with and without the nonce pool, search tokens, base64
text envelopes).

Run: ``.venv/bin/python bench/bench_crypto.py [--values N] [--repeat N] [--json]``.
Every contender runs once per round, in turn, ``--repeat`` rounds; each ratio is
computed within each round (fields/s of one over fields/s of the other) and its
median (the verdict), minimum and maximum over the rounds are printed
(bench/_report.py says why). The garbage collector is run before and disabled
during each timed call (as ``timeit`` does), for every contender.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy_utils.types.encrypted.encrypted_type import (  # type: ignore[import-untyped]
    AesGcmEngine,
    StringEncryptedType,
)

import encmigrate
from _report import Ratio, Target, machine, machine_line, paired, ratio_json, ratio_line, time_once
from encmigrate import Keyring
from encmigrate.crypto.envelope import envelope_to_text

CONTEXT = "bench.value"
VALUE_LENGTH = 32
ALPHABET = string.ascii_letters + string.digits
NONCE = 12


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
    def rates(self) -> tuple[float, ...]:
        """Fields/s of each round."""
        return tuple(self.count / s for s in self.seconds)

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


# (name, numerator, denominator, target or None): fields/s of one over the other, per round.
RATIOS: tuple[tuple[str, str, str, Target | None], ...] = (
    # The raw loop: os.urandom(12) per value, as every per-field encryption must.
    ("batch_encrypt / raw encrypt loop", "ours_encrypt", "raw_encrypt_each", Target(1.0, True)),
    # Information: a floor cheaper than any per-field encryption (one urandom call for all
    # nonces, no header, no associated data); batch_encrypt pools its nonces the same way.
    ("batch_encrypt / raw loop, one urandom", "ours_encrypt", "raw_encrypt", None),
    ("batch_encrypt / peer bind", "ours_encrypt", "peer_bind", Target(8.0, True)),
    ("batch_decrypt / raw decrypt loop", "ours_decrypt", "raw_decrypt", Target(0.9, True)),
    ("batch_decrypt / peer result", "ours_decrypt", "peer_result", None),
    ("raw encrypt: urandom per value / one urandom", "raw_encrypt_each", "raw_encrypt", None),
    ("optimized / plain per-value encrypt", "loop_optimized", "loop_plain", None),
    ("batch_decrypt of text / of bytes", "ours_decrypt_text", "ours_decrypt", None),
)


def make_values(count: int, seed: int) -> list[str]:
    """``count`` random ASCII strings of 32 letters and digits, the same for a given seed."""
    rng = random.Random(seed)
    return ["".join(rng.choices(ALPHABET, k=VALUE_LENGTH)) for _ in range(count)]


def raw_encrypt(aead: AESGCM, values: list[str]) -> list[bytes]:
    """The encrypt floor: one ``os.urandom`` call for all nonces, nonce + ciphertext + tag.

    One call for all measured cheaper than ``os.urandom(12)`` per value (a syscall
    each), so it is the floor; the per-value form is an extra line.
    """
    encrypt = aead.encrypt
    pool = os.urandom(NONCE * len(values))
    out = []
    for i, value in enumerate(values):
        nonce = pool[NONCE * i : NONCE * i + NONCE]
        out.append(nonce + encrypt(nonce, value.encode(), None))
    return out


def raw_encrypt_each(aead: AESGCM, values: list[str]) -> list[bytes]:
    """The raw encrypt loop with ``os.urandom(12)`` per value (information)."""
    encrypt, urandom = aead.encrypt, os.urandom
    return [(nonce := urandom(NONCE)) + encrypt(nonce, v.encode(), None) for v in values]


def raw_decrypt(aead: AESGCM, blobs: list[bytes]) -> list[str]:
    """The decrypt floor: slice nonce and ciphertext, ``AESGCM.decrypt``, ``.decode()``."""
    decrypt = aead.decrypt
    return [decrypt(b[:NONCE], b[NONCE:], None).decode() for b in blobs]


def build_contenders(values: list[str], peer_values: list[str]) -> list[Contender]:
    """Set up every contender and check, untimed, that each one does the work correctly."""
    keyring = Keyring.generate()
    ours = encmigrate.get_cipher(CONTEXT, keyring=keyring)
    optimized = encmigrate.get_optimized_cipher(CONTEXT, keyring=keyring)
    searchable = encmigrate.get_searchable_cipher(CONTEXT, keyring=keyring)

    # The floor: the same AESGCM class with a 256-bit key built once, outside the timing,
    # on blobs of the same values (nonce + ciphertext + tag, no header, no associated data).
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    raw_blobs = raw_encrypt(aead, values)
    _check(raw_decrypt(aead, raw_blobs) == values, "raw loops: decrypt(encrypt(v)) != v")
    _check(
        raw_decrypt(aead, raw_encrypt_each(aead, values[:1000])) == values[:1000],
        "raw encrypt loop (urandom per value): decrypt(encrypt(v)) != v",
    )

    envelopes = ours.batch_encrypt(values)
    texts = [envelope_to_text(b) for b in envelopes if b is not None]
    _check(ours.batch_decrypt(envelopes) == values, "ours: batch_decrypt(batch_encrypt(v)) != v")
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
            "raw_encrypt_each",
            "raw AESGCM.encrypt loop (floor)",
            "per value: os.urandom(12), str.encode(), AESGCM.encrypt(nonce, data, None), "
            "nonce + ciphertext; AESGCM built once, outside the timing; no header, no "
            "associated data",
            n,
            lambda: raw_encrypt_each(aead, values),
        ),
        Contender(
            "ours_encrypt",
            "ours: FieldCipher.batch_encrypt",
            "type check + UTF-8 encode per value, one os.urandom call for all nonces, "
            "AESGCM.encrypt with associated data, header + nonce + ciphertext + tag per value",
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
            "per value: b[:12] and b[12:] of a nonce + ciphertext blob, "
            "AESGCM.decrypt(nonce, data, None), bytes.decode(); no header, no associated data",
            n,
            lambda: raw_decrypt(aead, raw_blobs),
        ),
        Contender(
            "ours_decrypt",
            "ours: FieldCipher.batch_decrypt",
            "version read from the first envelope, key looked up once, AESGCM.decrypt per "
            "value (header authenticated as associated data), UTF-8 decode per value",
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
            "raw_encrypt",
            "raw AESGCM.encrypt loop, one os.urandom for all nonces",
            "the raw encrypt loop with one os.urandom call for all nonces (cheaper than one "
            "per value; batch_encrypt pools its nonces the same way), sliced per value",
            n,
            lambda: raw_encrypt(aead, values),
            extra=True,
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


def measure(contenders: Sequence[Contender], repeat: int) -> list[Result]:
    """Time every contender once per round, in turn, after one untimed warm-up each."""
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


def ratios(results: Sequence[Result]) -> list[tuple[Ratio, Target | None]]:
    """Each ratio of fields/s, paired within each round, with its target if it has one."""
    by_key = {r.key: r for r in results}
    return [
        (paired(name, by_key[top].rates, by_key[bottom].rates), target)
        for name, top, bottom, target in RATIOS
    ]


def render(
    results: Sequence[Result], args: argparse.Namespace, peer_count: int, env: dict[str, Any]
) -> str:
    lines = [
        f"encmigrate crypto bench: {args.values:,} values, random {VALUE_LENGTH}-char ASCII "
        f"strings (letters+digits, seed {args.seed}), {args.repeat} rounds, contenders "
        "taking turns in each; gc held off during each timed call",
        machine_line(env),
    ]
    if peer_count != args.values:
        lines.append(f"peer timed on the first {peer_count:,} values (fields/s stays comparable)")
    width = max(len(r.label) for r in results)
    header = (
        f"{'contender':<{width}}  {'values':>9}  {'median fields/s':>16}  {'best fields/s':>14}"
    )
    for extra in (False, True):
        lines += ["", "extra lines" if extra else "main", header, "-" * len(header)]
        lines += [
            f"{r.label:<{width}}  {r.count:>9,}  {r.median_rate:>16,.0f}  {r.best_rate:>14,.0f}"
            for r in results
            if r.extra is extra
        ]
    lines += ["", "ratios of fields/s, paired within each round (verdict on the median)"]
    pairs = ratios(results)
    width = max(len(ratio.name) for ratio, _ in pairs)
    lines += [ratio_line(ratio, target, width=width) for ratio, target in pairs]
    lines += ["", "what each contender includes"]
    lines += [f"  {r.label}: {r.includes}" for r in results]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--values", type=int, default=200_000, help="fields per run")
    parser.add_argument(
        "--repeat", type=int, default=5, help="rounds (each times every contender once)"
    )
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
    env = machine("sqlalchemy-utils", "encmigrate")
    values = make_values(args.values, args.seed)
    peer_values = values[: args.peer_values] if args.peer_values else values
    results = measure(build_contenders(values, peer_values), args.repeat)
    if args.json:
        document = {
            "values": args.values,
            "peer_values": len(peer_values),
            "repeat": args.repeat,
            "seed": args.seed,
            "environment": env,
            "results": {r.key: r.as_json() for r in results},
            "ratios": [ratio_json(ratio, target) for ratio, target in ratios(results)],
        }
        print(json.dumps(document, indent=2))
    else:
        print(render(results, args, len(peer_values), env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
