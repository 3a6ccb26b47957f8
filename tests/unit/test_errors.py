"""errors.py: one exception tree, drawn in its docstring, holding every error the package raises.

Every exception class defined anywhere in the package is either in the tree
(an EncmigrateError, defined in errors.py) or one of the internal signals that
errors.py lists by name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType

import encmigrate
from encmigrate import errors
from encmigrate.errors import EncmigrateError

_DRAWN = re.compile(r"^    ((?:[│ ]   )*)(?:[├└]── )?(\w+Error) +\((\d+)\)", re.MULTILINE)
_INTERNAL = re.compile(r"^\* ``(encmigrate\.[\w.]+)``", re.MULTILINE)


def _modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(encmigrate.__path__, "encmigrate.")]
    assert len(names) > 50, "the walk must see the whole package"
    return [importlib.import_module(name) for name in ["encmigrate", *names]]


def _defined_exceptions() -> dict[str, type[BaseException]]:
    """``module.Name`` -> class, for every exception class defined in a package module."""
    found: dict[str, type[BaseException]] = {}
    for module in _modules():
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{value.__qualname__}"] = value
    return found


def _drawn_tree() -> dict[str, tuple[str | None, int]]:
    """Class name -> (parent drawn above it, exit code drawn), from errors.py's docstring."""
    assert errors.__doc__ is not None
    drawn: dict[str, tuple[str | None, int]] = {}
    parents: list[str] = []  # the last name drawn at each depth
    for match in _DRAWN.finditer(errors.__doc__):
        indent, name, code = match.groups()
        depth = len(indent) // 4 + (0 if name == "EncmigrateError" else 1)
        del parents[depth:]
        assert len(parents) == depth, f"{name} is drawn without a parent"
        drawn[name] = (parents[-1] if parents else None, int(code))
        parents.append(name)
    return drawn


def _internal_signals() -> set[str]:
    assert errors.__doc__ is not None
    return set(_INTERNAL.findall(errors.__doc__))


def test_every_exception_of_the_package_is_in_the_tree_or_listed_as_internal() -> None:
    internal = _internal_signals()
    strays = sorted(
        name
        for name, cls in _defined_exceptions().items()
        if name not in internal and not issubclass(cls, EncmigrateError)
    )
    assert not strays, (
        f"exceptions outside the tree: {strays}; derive them from an EncmigrateError "
        "subclass in errors.py, or list them in errors.py's docstring as internal"
    )


def test_every_error_of_the_tree_is_defined_in_errors_py() -> None:
    elsewhere = sorted(
        name
        for name, cls in _defined_exceptions().items()
        if issubclass(cls, EncmigrateError) and cls.__module__ != "encmigrate.errors"
    )
    assert not elsewhere, f"define these in errors.py (re-export them where used): {elsewhere}"


def test_the_internal_signals_listed_exist_and_stay_out_of_the_tree() -> None:
    internal = _internal_signals()
    assert internal, "errors.py lists its internal signals"
    defined = _defined_exceptions()
    for name in internal:
        assert name in defined, f"errors.py lists {name}, which does not exist"
        assert not issubclass(defined[name], EncmigrateError), name
    # None of them is part of a public surface.
    for name in internal:
        module, _, attribute = name.rpartition(".")
        assert attribute not in encmigrate.__all__
        if module.startswith("encmigrate.migrate"):
            assert attribute not in importlib.import_module("encmigrate.migrate").__all__


def test_the_drawing_is_the_class_tree_with_its_exit_codes() -> None:
    drawn = _drawn_tree()
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, EncmigrateError)
    }
    assert set(drawn) == set(classes)
    for name, (parent, code) in drawn.items():
        cls = classes[name]
        assert cls.exit_code == code, name
        bases = [b.__name__ for b in cls.__bases__ if issubclass(b, EncmigrateError)]
        assert bases == ([parent] if parent else []), name


def test_every_error_of_the_tree_is_exported_from_errors() -> None:
    in_tree = {
        name
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, EncmigrateError)
    }
    assert in_tree <= set(errors.__all__)


def test_errors_moved_to_errors_py_are_still_importable_where_they_were() -> None:
    from encmigrate.inspect import NotAnEnvelopeError
    from encmigrate.plan import PlanError
    from encmigrate.testdb import PostgresUnavailableError

    assert PlanError is errors.PlanError and issubclass(PlanError, errors.ConfigError)
    assert NotAnEnvelopeError is errors.NotAnEnvelopeError
    assert PostgresUnavailableError is errors.PostgresUnavailableError
    assert issubclass(PostgresUnavailableError, errors.DatabaseError)
