"""Forms generated from config dataclasses (engine/config.py): one widget per field.

Streamlit-side only. A widget's label is the field's `label` phrase with its name beside it
(`G learning rate · lr_g`, from engine.config.field_label), so a researcher reads a phrase and the name
stays the one name of the idea in code, CLI, CSV and config. Default, range, choices and help come from
the field's metadata; the engine validates the whole config on submit, so a form holds no rule of its own.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from engine import config as C


class ConfigForm:
    """Widgets for the fields of one config class, keyed `<prefix><field name>` in session_state."""

    def __init__(self, cls: type, prefix: str = "cfg_", defaults: dict[str, Any] | None = None):
        """`defaults`: the widgets' first values (e.g. a preset's, engine.config.preset_values);
        None = the dataclass defaults."""
        self.cls, self.prefix = cls, prefix
        self.fields = {f.name: f for f in dataclasses.fields(cls)}
        self.defaults = {**C.to_dict(cls()), **(defaults or {})}

    def refill(self, values: dict[str, Any], state, skip: tuple[str, ...] = ()) -> None:
        """Set the widgets of `values`' fields in `state` (st.session_state), e.g. from an on_change
        callback, so the form shows another preset's values; `skip`: fields left as the user set them."""
        for name, v in values.items():
            if name in self.fields and name not in skip:
                state[self.prefix + name] = v

    def label(self, name: str) -> str:
        return C.field_label(self.fields[name])

    def widget(self, name: str, container, *, format_func: Callable[[Any], str] | None = None,
               help: str | None = None) -> Any:
        """The widget for field `name` in `container` (st, a column, a form ...); returns its value.
        `help` replaces the field's help text (e.g. to say how the page uses it)."""
        f, default = self.fields[name], self.defaults[name]
        label, key = self.label(name), self.prefix + name
        help_ = f.metadata.get("help", "") if help is None else help
        choices = C.offered(f)
        if isinstance(default, list):  # several values (e.g. ada_ops): a multiselect, never one of them
            if choices:
                return container.multiselect(label, list(choices), default=default, key=key, help=help_)
            return C._coerce(name, container.text_input(label, value=",".join(map(str, default)), key=key,
                                                        help=help_ + " (comma-separated)"), list)
        if choices:
            choices = list(choices)
            index = choices.index(default) if default in choices else 0
            return container.selectbox(label, choices, index=index, key=key, help=help_,
                                       format_func=format_func or str)
        if isinstance(default, bool):
            return container.checkbox(label, value=default, key=key, help=help_)
        lo, hi = f.metadata.get("range") or (None, None)
        if f.metadata.get("widget") == "slider" and lo is not None and hi is not None:
            # a bounded value read at a glance (truncation): 20 steps over the range
            return container.slider(label, float(lo), float(hi), float(default), (hi - lo) / 20, key=key,
                                    help=help_)
        if isinstance(default, (int, float)):
            return self._number(f, default, label, key, help_, container)
        return container.text_input(label, value=str(default), key=key, help=help_)

    @staticmethod
    def _number(f, default, label, key, help_, container):
        lo, hi = f.metadata.get("range") or (None, None)
        if isinstance(default, int):
            return container.number_input(label, min_value=lo, max_value=hi, value=int(default), step=1,
                                          key=key, help=help_)
        # a step of a tenth of the default's magnitude: 4e-4 moves by 1e-5, 0.6 by 0.01, 5 kimg by 0.1
        step = 10.0 ** (math.floor(math.log10(abs(default))) - 1) if default else 0.01
        return container.number_input(label, min_value=None if lo is None else float(lo),
                                      max_value=None if hi is None else float(hi), value=float(default),
                                      step=step, format="%g", key=key, help=help_)

    def grid(self, names, container, ncols: int, *, helps: dict[str, str] | None = None,
             **format_funcs) -> dict[str, Any]:
        """Widgets for `names` laid out in `ncols` columns of `container`; {name: value}. `helps`:
        help texts that replace some fields' own."""
        cols = container.columns(ncols)
        return {n: self.widget(n, cols[i % ncols], format_func=format_funcs.get(n), help=(helps or {}).get(n))
                for i, n in enumerate(names)}
