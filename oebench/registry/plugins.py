"""The plugin manager: loads entry points, isolates broken plugins, collects components."""

from __future__ import annotations

import contextlib
import difflib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

import oebench.hookspecs as hookspecs
from oebench.core.failures import debug_traceback
from oebench.core.settings import plugin_names
from oebench.errors import PluginError

ENTRY_POINT_GROUP = "oebench"

#: component kind -> the hook that registers it
KINDS: dict[str, str] = {
    "dataset": "register_datasets",
    "model": "register_models",
    "detector": "register_detectors",
    "outlier source": "register_outlier_sources",
    "objective": "register_objectives",
    "benchmark": "register_benchmarks",
}
HOOK_NAMES = [n for n in dir(hookspecs) if n.startswith("register_")]


@dataclass
class Component:
    """One registered thing: a dataset, model, detector, outlier source, objective or benchmark."""

    kind: str
    name: str
    factory: Any
    plugin: str
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PluginInfo:
    """What ``oebench list plugins`` shows about one plugin."""

    name: str
    module: str = ""
    dist: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    components: dict[str, list[str]] = field(default_factory=dict)
    #: CLI commands the plugin's ``register_commands`` added
    commands: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.dist,
            "version": self.version,
            "hooks": self.hooks,
            "components": self.components,
            "commands": self.commands,
            "error": self.error,
        }


#: what a plugin's own code may raise without taking the command down: its errors, and a
#: ``sys.exit`` or a KeyboardInterrupt of its own (not one that a Ctrl-C delivered)
PLUGIN_FAILURES = (Exception, SystemExit, KeyboardInterrupt)


def _describe(exc: BaseException) -> str:
    """One line, and under ``--debug`` the full traceback after it."""
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0] if str(exc) else ""
    return (text or type(exc).__name__) + debug_traceback(exc)


@contextlib.contextmanager
def plugin_code() -> Iterator[Callable[[], bool]]:
    """Run a plugin's code (its import, its hooks): what it prints to stdout goes to stderr
    (stdout carries results, ``leaderboard --format csv``), and every Ctrl-C the user presses
    meanwhile is noted. The callable yielded says whether one came: a KeyboardInterrupt (or
    an error an extension module made of it) is then the user's, not the plugin's.

    The note is taken by a SIGINT handler that calls the one installed before (the CLI's
    watcher, or Python's), so a Ctrl-C still interrupts as it did; without a Python handler
    (Ctrl-C ignored or fatal) or off the main thread, no Ctrl-C arrives as an exception.
    """
    previous = signal.getsignal(signal.SIGINT)
    seen: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    if main and callable(previous):

        @functools.wraps(previous)  # its __wrapped__: the handler it calls
        def noting(signum: int, frame: Any) -> Any:
            seen.append(signum)
            return previous(signum, frame)

        signal.signal(signal.SIGINT, noting)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield lambda: bool(seen)
    finally:
        if main and callable(previous):
            signal.signal(signal.SIGINT, previous)


def call_plugin(code: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Call a plugin's ``code()`` inside ``plugin_code``: its result and None, or None and what
    it raised (``PLUGIN_FAILURES``). A Ctrl-C the user pressed meanwhile is raised instead,
    whatever became of it in the plugin's code (caught, or made into another error)."""
    result: Any = None
    failed: BaseException | None = None
    with plugin_code() as interrupted:
        try:
            result = code()
        except PLUGIN_FAILURES as exc:
            failed = exc
        if interrupted():
            if isinstance(failed, KeyboardInterrupt):
                raise failed
            raise KeyboardInterrupt from failed
    return result, failed


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that never lets one broken plugin take the others down."""

    def __init__(self) -> None:
        super().__init__("oebench")
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        #: top-level modules of the plugins loaded (or tried): whose code a stack frame runs
        self.modules: set[str] = set()
        self._components: dict[str, dict[str, Component]] | None = None

    # -- loading -----------------------------------------------------------------------------
    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Import every ``oebench`` entry point; built-ins (distribution oebench) first."""
        only, blocked = plugin_names("load_plugins"), plugin_names("block_plugins") or set()
        seen: set[tuple[str, str]] = set()
        eps = sorted(
            metadata.entry_points(group=group),
            key=lambda ep: (ep.dist is None or ep.dist.name != "oebench", ep.name),
        )
        for ep in eps:
            if (ep.name, ep.value) in seen or ep.name in blocked:
                continue
            if only is not None and ep.name not in only:
                continue
            seen.add((ep.name, ep.value))
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            self.modules.add(_top_level(ep.value))
            module, failed = call_plugin(ep.load)
            if failed is not None:  # a broken plugin must not stop the others
                info = PluginInfo(ep.name, ep.value, dist, version)
                self._broken(info, f"import failed: {_describe(failed)}")
                continue
            self.register(module, name=ep.name, dist=dist, version=version)

    def register(
        self,
        plugin: object,
        name: str | None = None,
        dist: str | None = None,
        version: str | None = None,
    ) -> str | None:
        """Register ``plugin``; a plugin with bad or misspelled hooks is recorded as broken."""
        name = name or self.get_canonical_name(plugin)
        info = PluginInfo(name, getattr(plugin, "__name__", type(plugin).__name__), dist, version)
        self.modules.add(_top_level(getattr(plugin, "__module__", None) or info.module))
        try:
            registered = super().register(plugin, name=name)
        except ValueError as exc:  # pluggy: already registered under that name
            raise PluginError(f"plugin {name!r}: {exc}") from exc
        except pluggy.PluginValidationError as exc:
            self._broken(info, f"invalid hook: {_describe(exc)}")
            return None
        unknown = [hc.name for hc in self.get_hookcallers(plugin) or [] if hc.spec is None]
        if unknown:
            self.unregister(plugin)
            hints = [f"{u!r}" + self._did_you_mean(u) for u in unknown]
            self._broken(info, "unknown hook " + ", ".join(hints))
            return None
        info.hooks = sorted(hc.name for hc in self.get_hookcallers(plugin) or [])
        self.infos[name] = info
        self._components = None
        return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        name = name or (self.get_name(plugin) if plugin is not None else None)
        result = super().unregister(plugin=plugin, name=name)
        self.infos.pop(name or "", None)
        self._components = None
        return result

    def _broken(self, info: PluginInfo, error: str) -> None:
        info.error = error
        self.infos[info.name] = info
        where = f" ({info.dist} {info.version})" if info.dist else ""
        print(f"oebench: plugin {info.name!r}{where} is broken: {error}", file=sys.stderr)

    @staticmethod
    def _did_you_mean(hook: str) -> str:
        close = difflib.get_close_matches(hook, HOOK_NAMES, n=1)
        return f" (did you mean {close[0]!r}?)" if close else ""

    # -- components ----------------------------------------------------------------------------
    def components(self, kind: str) -> dict[str, Component]:
        """Every healthy component of one kind, by name."""
        if self._components is None:
            self._components = self._collect()
        return self._components[kind]

    def _collect(self) -> dict[str, dict[str, Component]]:
        result: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        for plugin_name, info in list(self.infos.items()):
            if info.error:
                continue
            try:
                found = self._collect_plugin(plugin_name)
                self._check_conflicts(found, result)
            except PluginError as exc:
                self._broken(info, str(exc))
                continue
            info.components = {}
            for comp in found:
                result[comp.kind][comp.name] = comp
                info.components.setdefault(comp.kind, []).append(comp.name)
        return result

    def _collect_plugin(self, plugin_name: str) -> list[Component]:
        plugin = self.get_plugin(plugin_name)
        found: list[Component] = []
        for kind, hook_name in KINDS.items():
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                register = self._register_callback(kind, plugin_name, found)
                _, failed = call_plugin(functools.partial(impl.function, register=register))
                if isinstance(failed, PluginError):
                    raise failed
                if failed is not None:
                    raise PluginError(f"hook {hook_name} raised {_describe(failed)}") from failed
        return found

    @staticmethod
    def _register_callback(kind: str, plugin_name: str, found: list[Component]) -> Callable:
        def register(name: str, factory: Any, description: str = "", **meta: Any) -> None:
            if any(c.kind == kind and c.name == name for c in found):
                raise PluginError(f"registers {kind} {name!r} twice")
            found.append(Component(kind, name, factory, plugin_name, description, meta))

        return register

    @staticmethod
    def _check_conflicts(found: list[Component], result: dict[str, dict[str, Component]]) -> None:
        for comp in found:
            other = result[comp.kind].get(comp.name)
            if other is not None:
                raise PluginError(
                    f"{comp.kind} {comp.name!r} is registered by both plugin "
                    f"{other.plugin!r} and plugin {comp.plugin!r}"
                )

    def add_commands(self, cli: Any) -> None:
        """Let each plugin add CLI commands; a failing plugin is reported, not fatal."""
        for impl in self.hook.register_commands.get_hookimpls():
            before = set(getattr(cli, "commands", {}))
            _, failed = call_plugin(functools.partial(impl.function, cli=cli))
            info = self.infos.get(impl.plugin_name)
            if info is None:
                continue
            if failed is not None:
                self._broken(info, f"hook register_commands raised {_describe(failed)}")
            else:
                info.commands = sorted(set(getattr(cli, "commands", {})) - before)


def _top_level(module: str) -> str:
    """``pkg`` of an entry point's ``pkg.mod:attr`` or a module's ``pkg.mod``."""
    return module.split(":")[0].split(".")[0].strip()


_pm: PluginManager | None = None


def plugin_modules() -> set[str]:
    """Top-level modules of the plugins loaded so far (none before the manager exists)."""
    return set(_pm.modules) if _pm is not None else set()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, with entry points loaded on first use."""
    global _pm
    if _pm is None:
        _pm = PluginManager()
        _pm.load_entry_points()
    return _pm
