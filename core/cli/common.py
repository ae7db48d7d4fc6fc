"""What every subcommand shares: the progress bar, the common options and the exit status for user errors."""

from __future__ import annotations

import argparse
import sys

EXIT_USER_ERROR = 2


class ProgressBar:
    """A tqdm bar on stderr per named phase; `progress(done, total, loss)` is the core's callback."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bars = enabled, {}

    def phase(self, name: str):
        def progress(done: int, total: int, loss: float) -> None:
            if not self.enabled:
                return
            from tqdm import tqdm

            bar = self.bars.get(name)
            if bar is None:
                bar = self.bars[name] = tqdm(total=total, desc=name, file=sys.stderr, leave=True,
                                             dynamic_ncols=True, mininterval=0.5)
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if done >= total:
                bar.close()
        return progress

    def close(self):
        for bar in self.bars.values():
            bar.close()


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist5k", help="mnist5k (default, offline), digits, mnist, fashion_mnist, cifar10, svhn")
    p.add_argument("--data-root", default=None, help="folder holding torchvision datasets")
    p.add_argument("--download", action="store_true", help="download a torchvision dataset (needs internet)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_plugin_option(p)


def add_plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                   help="load unlearning methods from a .py file or a module (repeatable; also $SALUN_PLUGINS)")


def plugin_specs(argv: list[str]) -> list[str]:
    """The --plugin values in `argv`, read before the full parser is built (a plugin's methods bring flags)."""
    pre = argparse.ArgumentParser(add_help=False)
    add_plugin_option(pre)
    known, _ = pre.parse_known_args(argv)
    return known.plugin


def add_method_options(p: argparse.ArgumentParser, family: str) -> None:
    """One flag per setting of the family's methods (plugins included), typed and explained from their
    declarations in core.methods: `--epochs`, `--retain-batch-size`, ... Unset flags keep the chosen
    method's default; a flag the chosen method does not take is refused when the run is checked."""
    from core.errors import SalunError
    from core.methods import all_params
    from core.methods.params import _fmt

    names = []
    for name, declared in all_params(family).items():
        flag = "--" + name.replace("_", "-")
        if flag in p._option_string_actions:
            owners = ", ".join(m.name for m, _ in declared)
            raise SalunError(f"the setting {name!r} of {owners} clashes with the option {flag}; rename the setting")
        types = {param.type for _, param in declared}
        by_meaning: dict[str, list[str]] = {}
        for method, param in declared:
            special = [f"{'/'.join(k for k in key if k != '*')} {_fmt(values[name])}"
                       for key, values in method.overrides.items() if name in values]
            by_meaning.setdefault(f"{param.meaning} ({param.range_text()})", []).append(
                f"{method.name} {_fmt(method.defaults()[name])}" + (f" ({', '.join(special)})" if special else ""))
        help_text = "; ".join(f"{meaning}, default {', '.join(defaults)}" for meaning, defaults in by_meaning.items())
        help_text = help_text.replace("%", "%%")
        if types == {bool}:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = types.pop() if len(types) == 1 else (float if types <= {int, float} else str)
            p.add_argument(flag, dest=name, type=kind, default=None, metavar=name.upper(), help=help_text)
        names.append(name)
    p.set_defaults(method_options=names)


def method_values(args) -> dict:
    """The method settings given on the command line (unset flags left out)."""
    return {name: getattr(args, name) for name in getattr(args, "method_options", [])
            if getattr(args, name) is not None}


def method_help(family: str) -> str:
    """--method's help: every registered method of the family with its one-line summary."""
    from core.methods import methods

    return "; ".join(f"{name}: {m.summary.rstrip('.')}" for name, m in methods(family).items()).replace("%", "%%")


def add_target_options(p, family: str, forget_help: str) -> None:
    """What to forget and how the mask takes part: the options `unlearn` and `unlearn-gen` share."""
    p.add_argument("--forget", default="class:3", help=forget_help)
    p.add_argument("--method", default="salun", help=method_help(family))
    p.add_argument("--sparsity", type=float, default=0.5, help="share of all weights the saliency mask selects")
    p.add_argument("--masked", action="store_true", help="constrain a baseline to the saliency mask too")
