"""What every ``keys`` command starts from and ends with: the key setup the plan names,
its manager, and the answer (one line of text, or a JSON document with --json)."""

from __future__ import annotations

from typing import Any

import typer

from encmigrate.cli.console import out, print_json
from encmigrate.cli.state import state_of
from encmigrate.keys import KeyManager, KeySetup, resolve_key_setup

__all__ = ["days_text", "key_manager", "key_setup", "say"]


def key_setup(ctx: typer.Context) -> KeySetup:
    return resolve_key_setup(state_of(ctx).config)


def key_manager(ctx: typer.Context) -> KeyManager:
    setup = key_setup(ctx)
    return KeyManager(setup.provider, setup.audit)


def say(ctx: typer.Context, document: dict[str, Any], text: str) -> None:
    if state_of(ctx).json:
        print_json(document)
    else:
        out.print(text)


def days_text(count: int) -> str:
    return "1 day" if count == 1 else f"{count} days"
