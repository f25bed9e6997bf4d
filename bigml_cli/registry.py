"""Registries keyed by function name (timm's @register_model): a builder's signature is its schema."""

import importlib
import inspect
import pkgutil
from typing import Any, Callable, Optional

from bigml_cli.errors import UserError, did_you_mean, unknown


class Registry:
    def __init__(self, what: str):
        self.what = what
        self._entries = {}

    def register(self, fn: Optional[Callable] = None, **attributes: Any) -> Callable:
        """`@REGISTRY.register`, or `@REGISTRY.register(key=value, ...)` to give the entry attributes (a dataset's
        layout, its description): an addition is one function in one file."""
        if fn is None:
            return lambda f: self.register(f, **attributes)
        for key, value in attributes.items():
            setattr(fn, key, value)
        self._entries[fn.__name__] = fn
        return fn

    def names(self) -> list:
        return sorted(self._entries)

    def get(self, name: str) -> Callable:
        if name not in self._entries:
            raise unknown(self.what, name, self._entries)
        return self._entries[name]

    def params(self, name: str, skip: int = 0) -> dict:
        """{param: default} of a builder's keyword parameters (after the first `skip` positional ones)."""
        sig = inspect.signature(self.get(name))
        params = list(sig.parameters.values())[skip:]
        return {p.name: p.default for p in params}

    def check_params(self, name: str, params: dict, skip: int = 0) -> None:
        """Reject parameters the builder does not take, naming the ones it does."""
        allowed = self.params(name, skip)
        for key in params:
            if key not in allowed:
                raise UserError(
                    f"{self.what} '{name}' has no parameter '{key}'{did_you_mean(key, allowed)}; "
                    f"it takes: {', '.join(allowed)}"
                )

    def doc(self, name: str) -> str:
        return (inspect.getdoc(self.get(name)) or "").splitlines()[0]


def import_all(package_name: str, path: list, exclude: tuple = ()) -> None:
    """Import every module of a package but `exclude`, so that a new file in it registers what it defines: adding
    a dataset or a model is one file, with no import list to edit."""
    for module in pkgutil.iter_modules(path):
        if module.name not in exclude:
            importlib.import_module(f"{package_name}.{module.name}")
