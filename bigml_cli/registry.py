"""Registries keyed by function name (timm's @register_model): a builder's signature is its schema."""

import inspect

from bigml_cli.errors import UserError, did_you_mean, unknown


class Registry:
    def __init__(self, what):
        self.what = what
        self._entries = {}

    def register(self, fn):
        self._entries[fn.__name__] = fn
        return fn

    def names(self):
        return sorted(self._entries)

    def get(self, name):
        if name not in self._entries:
            raise unknown(self.what, name, self._entries)
        return self._entries[name]

    def params(self, name, skip=0):
        """{param: default} of a builder's keyword parameters (after the first `skip` positional ones)."""
        sig = inspect.signature(self.get(name))
        params = list(sig.parameters.values())[skip:]
        return {p.name: p.default for p in params}

    def check_params(self, name, params, skip=0):
        """Reject parameters the builder does not take, naming the ones it does."""
        allowed = self.params(name, skip)
        for key in params:
            if key not in allowed:
                raise UserError(
                    f"{self.what} '{name}' has no parameter '{key}'{did_you_mean(key, allowed)}; "
                    f"it takes: {', '.join(allowed)}"
                )

    def doc(self, name):
        return (inspect.getdoc(self.get(name)) or "").splitlines()[0]
