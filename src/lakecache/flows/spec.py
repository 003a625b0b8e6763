"""A flow as written (YAML or Python), checked whole, and expanded into task instances.

The file::

    name: resnet
    params: {epochs: 2}                 # flow params, overridden by --param epochs=3
    tasks:
      prepare:
        command: python prep.py "$LAKECACHE_INPUT_XRAY" "$LAKECACHE_OUTPUTS/data"
        queue: burst
        inputs: {xray: {dataset: xray@v1, cached: true}}
        outputs: [data]
      train:
        params: {lr: [0.1, 0.01]}       # a list fans out: one task per value (a grid
        command: python train.py --lr {params.lr} --epochs {params.epochs}
        queue: burst                    #   of several lists: one per combination)
        inputs: {prep: {task: prepare}}
        outputs: [model]
        retries: 1
        timeout: 10m
        memo: true
      pick:
        command: python pick.py         # sees every train task's outputs
        queue: burst
        inputs: {models: {task: train}}
        outputs: {best: {dataset: best-model}}

Checking is one pass that collects every mistake (:class:`FlowSpecError` lists
them all, each with where it is and what to do), so a user fixes a file once,
not once per mistake. The catalog is asked only through a :class:`Catalogue`
(queues, templates, dataset refs), so a plan is a pure function of the spec,
the overrides and those answers, and costs linear time in the tasks: a 10,000-task
flow checks and plans in well under a second.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lakecache.errors import LakecacheError, UserError
from lakecache.units import parse_duration, parse_size

_T = TypeVar("_T")
#: Task and flow names: they appear in dataset names, URLs and environment variables.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
_NAME_RULE = "use 1 to 48 characters: lowercase letters, digits, '_' or '-'"
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PARAM_REF = re.compile(r"\{params\.([^{}]*)\}")
_TASK_KEYS = frozenset(
    {
        "command",
        "image",
        "queue",
        "template",
        "params",
        "after",
        "inputs",
        "outputs",
        "retries",
        "timeout",
        "memo",
        "cpu",
        "memory",
        "gpu",
        "env",
    }
)
_FLOW_KEYS = frozenset({"name", "params", "tasks", "description"})
#: The dataset each flow's task outputs are committed to (one commit per task run).
ARTIFACTS_PREFIX = "flow-"


class FlowSpecError(UserError):
    """A flow file with mistakes; ``problems`` lists every one, each a :class:`Problem`."""

    def __init__(self, problems: Sequence[Problem], source: str) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p.describe()}" for p in self.problems)
        n = len(self.problems)
        super().__init__(
            f"{source}: {n} mistake{'s' if n != 1 else ''}; nothing was run:\n{lines}",
            hint="Fix each line above, then run the flow again.",
        )


@dataclass(frozen=True)
class Problem:
    """One mistake: where (``file:line`` and the key path), what, and how to fix it."""

    where: str
    what: str
    fix: str

    def describe(self) -> str:
        return f"{self.where}: {self.what} (fix: {self.fix})"

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "what": self.what, "fix": self.fix}


class Catalogue(Protocol):
    """What checking a flow asks of the catalog (answers may be cached by the caller)."""

    def queues(self) -> set[str]: ...

    def template_queues(self) -> dict[str, str]:
        """Template name -> a queue whose only template it is."""
        ...

    def resolve(self, dataset: str, ref: str) -> str:
        """The commit id of ``dataset@ref``; NotFoundError (with a hint) if none."""
        ...


# -- reading: YAML with line numbers, and duplicate keys caught ----------------------------


class _Lines(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the line of each key."""

    lines: dict[str, int]


def _loader() -> type:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[valid-type,misc]
        duplicates: list[tuple[int, str]]

    def construct_mapping(loader: Any, node: Any) -> _Lines:
        out = _Lines()
        out.lines = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            line = key_node.start_mark.line + 1
            if key in out:
                loader.duplicates.append((line, key))
            out[key] = loader.construct_object(value_node, deep=True)
            out.lines[key] = line
        return out

    Loader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    return Loader


def load_yaml(text: str, source: str = "flow.yaml") -> tuple[Any, list[Problem]]:
    """The document, and a problem for each key given twice in one mapping.

    Raises:
        FlowSpecError: the text is not YAML at all (with the line of the fault).
    """
    import yaml

    loader_cls = _loader()
    loader = loader_cls(text)
    loader.duplicates = []
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise FlowSpecError(
            [Problem(where, f"not valid YAML: {problem}", "check indentation and quoting")],
            source,
        ) from None
    finally:
        loader.dispose()
    problems = [
        Problem(f"{source}:{line}", f"{key!r} is given twice", "give each name once")
        for line, key in loader.duplicates
    ]
    return doc, problems


# -- the spec -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInput:
    """A dataset commit a task reads: ``dataset@ref``, from a cache at its site or streamed."""

    name: str
    dataset: str
    ref: str
    cached: bool = True
    line: int | None = None


@dataclass(frozen=True)
class TaskInput:
    """The outputs of an upstream task (every instance of it, if it fans out)."""

    name: str
    task: str
    cached: bool = False
    line: int | None = None


@dataclass(frozen=True)
class Output:
    """A folder ``$LAKECACHE_OUTPUTS/NAME`` the task must write; with ``dataset``, it is
    committed as a new version of that dataset as well."""

    name: str
    dataset: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One named task as written; ``params`` values that are lists fan out."""

    name: str
    command: str | tuple[str, ...]
    queue: str | None = None
    template: str | None = None
    image: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    inputs: tuple[DatasetInput | TaskInput, ...] = ()
    outputs: tuple[Output, ...] = ()
    retries: int = 0
    timeout: float | None = None
    memo: bool = False
    cpu: float = 1.0
    memory: int = 0
    gpu: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    line: int | None = None
    #: The line of each key of the task in its file.
    lines: Mapping[str, int] = field(default_factory=dict)


@dataclass
class FlowSpec:
    """A flow: a name, flow-wide params, and its tasks (in the order written).

    Build one from a file (:meth:`from_yaml`), a mapping (:meth:`from_dict`), or
    in Python with :meth:`task`.

    Example:
        >>> flow = FlowSpec("demo")
        >>> _ = flow.task("hello", command="echo hi", queue="burst")
        >>> [t.name for t in flow.tasks]
        ['hello']
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    tasks: list[TaskSpec] = field(default_factory=list)
    source: str = "<python>"
    #: Mistakes found while reading (checked together with the rest by :func:`plan`).
    problems: list[Problem] = field(default_factory=list)
    text: str = ""
    #: The file the flow was read from (its folder decides the code version), if any.
    origin: str | None = None

    def task(self, name: str, **kwargs: Any) -> TaskSpec:
        """Add a task; keywords as in the YAML (``after``, ``inputs``, ``outputs``...)."""
        raw = {"__name__": name, **kwargs}
        spec = _read_task(name, raw, self.source, None, self.problems)
        self.tasks.append(spec)
        return spec

    @classmethod
    def from_yaml(cls, path: str | Path) -> FlowSpec:
        """Read a flow file. Mistakes are kept on the spec for :func:`plan` to report.

        Raises:
            UserError: the file cannot be read.
            FlowSpecError: it is not YAML.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(
                f"cannot read flow file {str(p)!r}: {exc}",
                hint="Pass the path of a YAML flow file (see `lakecache flow run --help`).",
            ) from None
        spec = cls.from_text(text, source=p.name)
        spec.origin = str(p.resolve())
        return spec

    @classmethod
    def from_text(cls, text: str, source: str = "flow.yaml") -> FlowSpec:
        doc, problems = load_yaml(text, source)
        spec = cls.from_dict(doc, source=source, problems=problems)
        spec.text = text
        return spec

    @classmethod
    def from_dict(
        cls, doc: Any, *, source: str = "<python>", problems: list[Problem] | None = None
    ) -> FlowSpec:
        """A flow from a mapping shaped like the YAML file."""
        problems = list(problems or [])
        if not isinstance(doc, Mapping):
            problems.append(
                Problem(source, "the file is not a mapping", "start with 'name:' and 'tasks:'")
            )
            return cls("invalid", source=source, problems=problems)
        at = _locator(source, doc)
        for key in doc:
            if key not in _FLOW_KEYS:
                problems.append(
                    Problem(
                        at(key),
                        f"unknown key {key!r}",
                        f"use one of {', '.join(sorted(_FLOW_KEYS))}",
                    )
                )
        name = doc.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            problems.append(
                Problem(at("name"), f"flow name {name!r} is missing or invalid", _NAME_RULE)
            )
            name = "invalid"
        params = doc.get("params") or {}
        if not isinstance(params, Mapping):
            problems.append(Problem(at("params"), "params must be a mapping", "write KEY: VALUE"))
            params = {}
        spec = cls(name, dict(params), source=source, problems=problems)
        tasks = doc.get("tasks")
        if not isinstance(tasks, Mapping) or not tasks:
            problems.append(
                Problem(at("tasks"), "no tasks", "add 'tasks:' with at least one named task")
            )
            return spec
        for tname, raw in tasks.items():
            line = getattr(tasks, "lines", {}).get(tname)
            spec.tasks.append(_read_task(str(tname), raw, source, line, problems))
        return spec


def _locator(source: str, mapping: Any, prefix: str = "") -> Callable[[str], str]:
    lines = getattr(mapping, "lines", {})

    def at(key: str) -> str:
        line = lines.get(key)
        path = f"{prefix}{key}"
        return f"{source}:{line} {path}" if line else f"{source} {path}"

    return at


def _read_task(
    name: str, raw: Any, source: str, line: int | None, problems: list[Problem]
) -> TaskSpec:
    where = f"{source}:{line} tasks.{name}" if line else f"{source} tasks.{name}"
    if not _NAME.fullmatch(name):
        problems.append(Problem(where, f"task name {name!r} is invalid", _NAME_RULE))
    if not isinstance(raw, Mapping):
        problems.append(
            Problem(where, "a task must be a mapping", "give it 'command:' and 'queue:'")
        )
        return TaskSpec(name, "", line=line)
    at = _locator(source, raw, f"tasks.{name}.")
    for key in raw:
        if key not in _TASK_KEYS and key != "__name__":
            problems.append(
                Problem(
                    at(key), f"unknown key {key!r}", f"use one of {', '.join(sorted(_TASK_KEYS))}"
                )
            )
    command = raw.get("command")
    if (
        isinstance(command, list)
        and command
        and all(isinstance(c, str | int | float) for c in command)
    ):
        cmd: str | tuple[str, ...] = tuple(str(c) for c in command)
    elif isinstance(command, str) and command.strip():
        cmd = command
    else:
        problems.append(
            Problem(at("command"), "no command", "write command: a shell line, or a list of argv")
        )
        cmd = ""
    queue, template = raw.get("queue"), raw.get("template")
    if queue is None and template is None:
        problems.append(Problem(where, "no queue", "add 'queue: NAME' (see `lakecache queue ls`)"))
    if queue is not None and template is not None:
        problems.append(Problem(at("template"), "both queue and template", "give only one"))
    params = raw.get("params") or {}
    if not isinstance(params, Mapping):
        problems.append(Problem(at("params"), "params must be a mapping", "write KEY: VALUE"))
        params = {}
    after = raw.get("after") or ()
    if isinstance(after, str):
        after = (after,)
    if not isinstance(after, list | tuple) or not all(isinstance(a, str) for a in after):
        problems.append(Problem(at("after"), "after must list task names", "write after: [a, b]"))
        after = ()
    inputs = _read_inputs(raw.get("inputs"), at, problems)
    outputs = _read_outputs(raw.get("outputs"), at, problems)
    retries = raw.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 100:
        problems.append(
            Problem(at("retries"), f"retries {retries!r} is not 0 to 100", "write a whole number")
        )
        retries = 0
    timeout = None
    if raw.get("timeout") is not None:
        try:
            timeout = float(parse_duration(raw["timeout"], "timeout")) or None
        except UserError:
            timeout = None
        if timeout is None:
            problems.append(
                Problem(
                    at("timeout"),
                    f"timeout {raw['timeout']!r} is not a duration",
                    "write e.g. 90s, 10m or 2h",
                )
            )
    memo = raw.get("memo", False)
    if not isinstance(memo, bool):
        problems.append(Problem(at("memo"), "memo must be true or false", "write memo: true"))
        memo = False
    cpu = raw.get("cpu", 1)
    if not isinstance(cpu, int | float) or isinstance(cpu, bool) or cpu < 0:
        problems.append(
            Problem(at("cpu"), f"cpu {cpu!r} is not a number of cores", "write e.g. cpu: 1")
        )
        cpu = 1
    memory = raw.get("memory", 0)
    if isinstance(memory, str):
        try:
            memory = parse_size(memory)
        except LakecacheError:
            problems.append(
                Problem(at("memory"), f"memory {memory!r} is not a size", "write e.g. 4GB")
            )
            memory = 0
    gpu = raw.get("gpu", 0)
    if not isinstance(gpu, int) or isinstance(gpu, bool) or gpu < 0:
        problems.append(Problem(at("gpu"), f"gpu {gpu!r} is not a count", "write a whole number"))
        gpu = 0
    env = raw.get("env") or {}
    if not isinstance(env, Mapping):
        problems.append(Problem(at("env"), "env must be a mapping", "write KEY: VALUE"))
        env = {}
    image = raw.get("image")
    return TaskSpec(
        name=name,
        command=cmd,
        queue=queue if isinstance(queue, str) else None,
        template=template if isinstance(template, str) else None,
        image=image if isinstance(image, str) else None,
        params=dict(params),
        after=tuple(after),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        retries=retries,
        timeout=timeout,
        memo=memo,
        cpu=float(cpu),
        memory=int(memory) if isinstance(memory, int) else 0,
        gpu=gpu,
        env={str(k): str(v) for k, v in env.items()},
        line=line,
        lines=dict(getattr(raw, "lines", {})),
    )


def _read_inputs(
    raw: Any, at: Callable[[str], str], problems: list[Problem]
) -> list[DatasetInput | TaskInput]:
    if raw is None:
        return []
    if isinstance(raw, list):  # [xray@v1, ...]: named after the dataset
        items: list[tuple[str, Any]] = []
        for entry in raw:
            if isinstance(entry, str):
                items.append((entry.split("@", 1)[0], {"dataset": entry}))
            else:
                items.append(("?", entry))
    elif isinstance(raw, Mapping):
        items = list(raw.items())
    else:
        problems.append(
            Problem(at("inputs"), "inputs must be a mapping", "write NAME: {dataset: D@REF}")
        )
        return []
    out: list[DatasetInput | TaskInput] = []
    lines = getattr(raw, "lines", {})
    for name, value in items:
        line = lines.get(name)
        where = at("inputs") + f".{name}"
        if isinstance(value, str):
            value = {"task": value[5:]} if value.startswith("task:") else {"dataset": value}
        if not isinstance(value, Mapping) or ("dataset" in value) == ("task" in value):
            problems.append(
                Problem(
                    where,
                    "an input names a dataset or a task",
                    "write {dataset: D@REF} or {task: NAME}",
                )
            )
            continue
        if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
            problems.append(
                Problem(where, f"input name {name!r} is invalid", "use letters, digits and '_'")
            )
            continue
        cached = value.get("cached")
        if cached is not None and not isinstance(cached, bool):
            problems.append(Problem(where, "cached must be true or false", "write cached: true"))
            cached = None
        if "dataset" in value:
            text = str(value["dataset"])
            dataset, _, ref = text.partition("@")
            out.append(
                DatasetInput(
                    name, dataset, ref or "latest", True if cached is None else cached, line
                )
            )
        else:
            out.append(
                TaskInput(name, str(value["task"]), False if cached is None else cached, line)
            )
    return out


def _read_outputs(raw: Any, at: Callable[[str], str], problems: list[Problem]) -> list[Output]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    out = []
    if isinstance(raw, list):
        for entry in raw:
            if isinstance(entry, str):
                out.append(Output(entry))
            elif isinstance(entry, Mapping) and len(entry) == 1:
                ((name, value),) = entry.items()
                ds = value.get("dataset") if isinstance(value, Mapping) else None
                out.append(Output(str(name), ds))
            else:
                problems.append(
                    Problem(at("outputs"), f"{entry!r} is not an output", "write a folder name")
                )
    elif isinstance(raw, Mapping):
        for name, value in raw.items():
            ds = value.get("dataset") if isinstance(value, Mapping) else None
            if value is not None and not isinstance(value, Mapping):
                problems.append(
                    Problem(
                        at("outputs") + f".{name}",
                        "an output is {} or {dataset: NAME}",
                        "write NAME: {dataset: D}",
                    )
                )
            out.append(Output(str(name), ds))
    else:
        problems.append(
            Problem(
                at("outputs"), "outputs must be a list of folder names", "write outputs: [model]"
            )
        )
    for o in out:
        if not _NAME.fullmatch(o.name) and not _PARAM_NAME.fullmatch(o.name):
            problems.append(
                Problem(
                    at("outputs") + f".{o.name}",
                    f"output {o.name!r} is not a plain folder name",
                    "use letters, digits, '_' or '-' (no '/' or '..')",
                )
            )
    return out


# -- planning -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedTask:
    """One task instance of a run: a fan-out combination, its command rendered."""

    name: str  # "train[lr=0.1]", or the task's name when it does not fan out
    task: str  # the task as written
    index: int
    params: Mapping[str, Any]
    command: tuple[str, ...]
    queue: str
    image: str | None
    deps: tuple[str, ...]
    #: (input name, dataset, ref, commit id, mode)
    datasets: tuple[tuple[str, str, str, str, str], ...]
    #: (input name, upstream task as written, mode)
    upstream: tuple[tuple[str, str, str], ...]
    outputs: tuple[Output, ...]
    retries: int
    timeout: float | None
    memo: bool
    cpu: float
    memory: int
    gpu: int
    env: Mapping[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "index": self.index,
            "params": dict(self.params),
            "command": list(self.command),
            "queue": self.queue,
            "image": self.image,
            "deps": list(self.deps),
            "datasets": [list(d) for d in self.datasets],
            "upstream": [list(u) for u in self.upstream],
            "outputs": [{"name": o.name, "dataset": o.dataset} for o in self.outputs],
            "retries": self.retries,
            "timeout": self.timeout,
            "memo": self.memo,
            "cpu": self.cpu,
            "memory": self.memory,
            "gpu": self.gpu,
            "env": dict(self.env),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlannedTask:
        return _new(
            cls,
            name=d["name"],
            task=d["task"],
            index=int(d["index"]),
            params=d["params"],
            command=tuple(d["command"]),
            queue=d["queue"],
            image=d["image"],
            deps=tuple(d["deps"]),
            datasets=tuple(tuple(x) for x in d["datasets"]),  # type: ignore[misc]
            upstream=tuple(tuple(x) for x in d["upstream"]),  # type: ignore[misc]
            outputs=tuple(Output(o["name"], o["dataset"]) for o in d["outputs"]),
            retries=int(d["retries"]),
            timeout=d["timeout"],
            memo=bool(d["memo"]),
            cpu=float(d["cpu"]),
            memory=int(d["memory"]),
            gpu=int(d["gpu"]),
            env=d["env"],
        )


@dataclass(frozen=True)
class Plan:
    """A checked flow, expanded: task instances in an order where deps come first."""

    flow: str
    params: Mapping[str, Any]
    tasks: tuple[PlannedTask, ...]


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``{"lr": 0.1, "train.depth": [50, 101]}`` from ``["lr=0.1", "train.depth=[50,101]"]``.

    Values are read as YAML scalars or lists (a list fans out).

    Raises:
        UserError: an item without ``=``.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param {item!r} is not KEY=VALUE", hint="Write e.g. --param lr=0.1.")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _kind(v: Any) -> str:
    return "mapping" if isinstance(v, Mapping) else "list" if isinstance(v, list) else "value"


def _show(v: Any) -> str:
    """A param value as commands and task names show it (JSON, but a string bare)."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None:
        return "true" if v is True else "false" if v is False else "null"
    if isinstance(v, int) or (isinstance(v, float) and math.isfinite(v)):
        return repr(v)  # what json.dumps writes, without its cost (10,000s of calls)
    return json.dumps(v)


def plan(flow: FlowSpec, catalogue: Catalogue, overrides: Mapping[str, Any] | None = None) -> Plan:
    """Check ``flow`` whole and expand it; every mistake is reported at once.

    Raises:
        FlowSpecError: the list of mistakes (cycles, unknown tasks, inputs and queues,
            params that do not fit, clashing names), each with its place and fix.
    """
    problems = list(flow.problems)
    src = flow.source
    overrides = dict(overrides or {})
    by_name: dict[str, TaskSpec] = {}
    for t in flow.tasks:
        if t.name in by_name:
            problems.append(
                Problem(
                    _where(src, t),
                    f"task {t.name!r} is defined twice",
                    "give each task its own name",
                )
            )
        by_name[t.name] = t

    # Overrides: flow params (KEY) or a task's params (TASK.KEY), which must exist.
    flow_params = dict(flow.params)
    task_overrides: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        tname, dot, pname = key.rpartition(".")
        if dot and tname in by_name:
            if pname not in by_name[tname].params:
                problems.append(
                    Problem(
                        f"--param {key}",
                        f"task {tname!r} has no param {pname!r}",
                        f"use one of: {', '.join(by_name[tname].params) or '(none)'}",
                    )
                )
            task_overrides.setdefault(tname, {})[pname] = value
        elif key in flow_params:
            flow_params[key] = value
        else:
            known = sorted(flow_params) + [f"{t}.{p}" for t in by_name for p in by_name[t].params]
            problems.append(
                Problem(
                    f"--param {key}",
                    f"no param {key!r} in the flow",
                    f"use one of: {', '.join(known[:20]) or '(none)'}",
                )
            )
    for pname, value in flow_params.items():
        if not _PARAM_NAME.fullmatch(str(pname)):
            problems.append(
                Problem(
                    f"{src} params.{pname}",
                    f"param name {pname!r} is invalid",
                    "use letters, digits and '_'",
                )
            )
        if not _scalar(value):
            problems.append(
                Problem(
                    f"{src} params.{pname}",
                    f"flow param {pname!r} is a {_kind(value)}, not a single value",
                    "flow params are single values; fan out in a task's params",
                )
            )

    queues = catalogue.queues()
    template_queues = catalogue.template_queues()
    resolved: dict[tuple[str, str], str | None] = {}
    outputs_of: dict[str, set[str]] = {}
    for t in flow.tasks:
        outputs_of[t.name] = {o.name for o in t.outputs}

    # Dependencies of each task as written: after, plus the tasks it reads from.
    deps: dict[str, list[str]] = {}
    for t in flow.tasks:
        d: list[str] = []
        for a in t.after:
            if a not in by_name:
                problems.append(
                    Problem(_at(src, t, "after"), f"unknown task {a!r}", _suggest(a, by_name))
                )
            elif a == t.name:
                problems.append(
                    Problem(
                        _at(src, t, "after"),
                        "a task cannot come after itself",
                        "remove it from after",
                    )
                )
            elif a not in d:
                d.append(a)
        for i in t.inputs:
            if isinstance(i, TaskInput):
                if i.task not in by_name:
                    problems.append(
                        Problem(
                            _at(src, t, "inputs", f".{i.name}", i.line),
                            f"unknown task {i.task!r}",
                            _suggest(i.task, by_name),
                        )
                    )
                elif i.task == t.name:
                    problems.append(
                        Problem(
                            _at(src, t, "inputs", f".{i.name}", i.line),
                            "a task cannot read its own outputs",
                            "read another task's outputs",
                        )
                    )
                else:
                    if not by_name[i.task].outputs:
                        problems.append(
                            Problem(
                                _at(src, t, "inputs", f".{i.name}", i.line),
                                f"task {i.task!r} declares no outputs to read",
                                f"add 'outputs: [NAME]' to task {i.task!r}",
                            )
                        )
                    if i.task not in d:
                        d.append(i.task)
        deps[t.name] = d

        # Names that clash: inputs sharing a variable, outputs given twice, datasets twice.
        seen_env: dict[str, str] = {}
        for i in t.inputs:
            env = re.sub(r"[^A-Z0-9]", "_", i.name.upper())
            if env in seen_env:
                problems.append(
                    Problem(
                        _at(src, t, "inputs", f".{i.name}", i.line),
                        f"inputs {seen_env[env]!r} and {i.name!r} share $LAKECACHE_INPUT_{env}",
                        "name them apart",
                    )
                )
            seen_env[env] = i.name
        if len(outputs_of[t.name]) != len(t.outputs):
            problems.append(
                Problem(
                    _at(src, t, "outputs"),
                    "an output folder is named twice",
                    "name each output once",
                )
            )

        # Queue or template.
        if t.queue is not None and t.queue not in queues:
            problems.append(
                Problem(
                    _at(src, t, "queue"),
                    f"unknown queue {t.queue!r}",
                    _suggest(t.queue, queues, "`lakecache queue ls` lists them"),
                )
            )
        if t.template is not None and t.template not in template_queues:
            problems.append(
                Problem(
                    _at(src, t, "template"),
                    f"no queue runs on template {t.template!r} alone",
                    f"add one (`lakecache queue add {t.template} -t {t.template}`) or use a queue",
                )
            )
        # Dataset inputs exist (each dataset@ref asked once).
        for i in t.inputs:
            if isinstance(i, DatasetInput):
                pair = (i.dataset, i.ref)
                if pair not in resolved:
                    try:
                        resolved[pair] = catalogue.resolve(i.dataset, i.ref)
                    except LakecacheError as exc:
                        resolved[pair] = None
                        problems.append(
                            Problem(
                                _at(src, t, "inputs", f".{i.name}", i.line),
                                f"{i.dataset}@{i.ref}: {exc.message}",
                                exc.hint or "check the name",
                            )
                        )
        for o in t.outputs:
            if o.dataset is not None:
                from lakecache.catalog.names import _DATASET_NAME

                if not _DATASET_NAME.fullmatch(o.dataset):
                    problems.append(
                        Problem(
                            _at(src, t, "outputs", f".{o.name}"),
                            f"dataset name {o.dataset!r} is invalid",
                            "use lowercase letters, digits, '.', '_' or '-'",
                        )
                    )
        # Params that do not fit: references to unknown params, values that cannot be.
        own = {**t.params, **task_overrides.get(t.name, {})}
        for pname, value in own.items():
            if not _PARAM_NAME.fullmatch(str(pname)):
                problems.append(
                    Problem(
                        _at(src, t, "params", f".{pname}"),
                        f"param name {pname!r} is invalid",
                        "use letters, digits and '_'",
                    )
                )
            elif isinstance(value, list):
                if not value:
                    problems.append(
                        Problem(
                            _at(src, t, "params", f".{pname}"),
                            "an empty list fans out to no task",
                            "give at least one value",
                        )
                    )
                elif not all(_scalar(v) for v in value):
                    problems.append(
                        Problem(
                            _at(src, t, "params", f".{pname}"),
                            "a fan-out list holds only single values",
                            "write e.g. [0.1, 0.01]",
                        )
                    )
            elif not _scalar(value):
                problems.append(
                    Problem(
                        _at(src, t, "params", f".{pname}"),
                        f"param {pname!r} is a {_kind(value)}",
                        "give a value or a list of values",
                    )
                )
        texts = [t.command] if isinstance(t.command, str) else list(t.command)
        texts += list(t.env.values())
        for text in texts:
            for ref in _PARAM_REF.findall(text):
                if ref not in own and ref not in flow_params:
                    problems.append(
                        Problem(
                            _at(src, t, "command"),
                            f"{{params.{ref}}} names no param",
                            f"define {ref!r} in the task's or the flow's params",
                        )
                    )

    # Cycles (Kahn's algorithm on tasks as written; instances inherit their order).
    order = _topological(list(by_name), deps)
    if len(order) < len(by_name):
        for cycle in _cycles(deps, set(by_name) - set(order)):
            t0 = by_name[cycle[0]]
            problems.append(
                Problem(
                    _where(src, t0),
                    f"cycle: {' -> '.join([*cycle, cycle[0]])}",
                    "remove one of these dependencies (after: or a task input)",
                )
            )
    if problems:
        raise FlowSpecError(problems, src)

    # Expand fan-outs, in dependency order.
    instances: dict[str, list[str]] = {}
    planned: list[PlannedTask] = []
    for tname in order:
        t = by_name[tname]
        own = {**t.params, **task_overrides.get(tname, {})}
        fan = [(k, v) for k, v in own.items() if isinstance(v, list)]
        fixed = {k: v for k, v in own.items() if not isinstance(v, list)}
        combos: Iterable[tuple[Any, ...]] = itertools.product(*(v for _, v in fan)) if fan else [()]
        queue = t.queue if t.queue is not None else template_queues[t.template or ""]
        dep_names = tuple(n for d in deps[tname] for n in instances[d])
        ds = tuple(
            (
                i.name,
                i.dataset,
                i.ref,
                resolved[(i.dataset, i.ref)] or "",
                "cached" if i.cached else "stream",
            )
            for i in t.inputs
            if isinstance(i, DatasetInput)
        )
        ups = tuple(
            (i.name, i.task, "cached" if i.cached else "stream")
            for i in t.inputs
            if isinstance(i, TaskInput)
        )
        # What names no param is the same for every instance: rendered once, shared.
        shared_command = None if _refers(t.command) else _render(t.command, {})
        shared_env = None if any(_refers(v) for v in t.env.values()) else dict(t.env)
        names = []
        for index, combo in enumerate(combos):
            chosen = dict(zip((k for k, _ in fan), combo, strict=True))
            params = {**flow_params, **fixed, **chosen}
            iname = (
                f"{tname}[{','.join(f'{k}={_show(v)}' for k, v in chosen.items())}]"
                if fan
                else tname
            )
            names.append(iname)
            planned.append(
                _new(
                    PlannedTask,
                    name=iname,
                    task=tname,
                    index=index,
                    params=params,
                    command=shared_command or _render(t.command, params),
                    queue=queue,
                    image=t.image,
                    deps=dep_names,
                    datasets=ds,
                    upstream=ups,
                    outputs=t.outputs,
                    retries=t.retries,
                    timeout=t.timeout,
                    memo=t.memo,
                    cpu=t.cpu,
                    memory=t.memory,
                    gpu=t.gpu,
                    env=shared_env
                    if shared_env is not None
                    else {k: _sub(v, params) for k, v in t.env.items()},
                )
            )
        instances[tname] = names
    return Plan(flow.name, flow_params, tuple(planned))


def _refers(text: str | tuple[str, ...]) -> bool:
    """Whether a command or value names a param (``{params.NAME}``)."""
    texts = (text,) if isinstance(text, str) else text
    return any("{params." in x for x in texts)


def _new(cls: type[_T], **fields: Any) -> _T:
    """An instance of the frozen dataclass ``cls`` made without its ``__init__``.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``:
    for the 10,000s of task instances a plan and a run's specs make, that cost more
    than all the rest of planning. Every field must be given."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def _where(src: str, t: TaskSpec) -> str:
    return f"{src}:{t.line} tasks.{t.name}" if t.line else f"{src} tasks.{t.name}"


def _at(src: str, t: TaskSpec, key: str, sub: str = "", line: int | None = None) -> str:
    line = line or t.lines.get(key) or t.line
    path = f"tasks.{t.name}.{key}{sub}"
    return f"{src}:{line} {path}" if line else f"{src} {path}"


def _suggest(name: str, known: Iterable[str], fallback: str = "") -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return fallback or f"use one of: {', '.join(sorted(known)[:10])}"


def _sub(text: str, params: Mapping[str, Any]) -> str:
    return _PARAM_REF.sub(lambda m: _show(params[m.group(1)]), text)


def _render(command: str | tuple[str, ...], params: Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(command, str):
        # A shell line: params are quoted so that a value cannot become shell syntax.
        return (
            "sh",
            "-c",
            _PARAM_REF.sub(lambda m: shlex.quote(_show(params[m.group(1)])), command),
        )
    return tuple(_sub(c, params) for c in command)


def _topological(names: list[str], deps: Mapping[str, list[str]]) -> list[str]:
    indegree = {n: 0 for n in names}
    users: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        for d in deps.get(n, ()):
            if d in indegree:
                indegree[n] += 1
                users[d].append(n)
    ready = [n for n in names if indegree[n] == 0]
    order = []
    while ready:
        n = ready.pop()
        order.append(n)
        for u in users[n]:
            indegree[u] -= 1
            if indegree[u] == 0:
                ready.append(u)
    return order


def _cycles(deps: Mapping[str, list[str]], stuck: set[str]) -> list[list[str]]:
    """One cycle for each group of tasks that wait on each other (each reported once)."""
    found: list[list[str]] = []
    done: set[str] = set()
    for start in sorted(stuck):
        if start in done:
            continue
        path: list[str] = []
        index: dict[str, int] = {}
        node = start
        while node not in index and node not in done:
            index[node] = len(path)
            path.append(node)
            node = next(d for d in deps[node] if d in stuck)
        if node in index:
            cycle = path[index[node] :]
            found.append(list(reversed(cycle)))
        done.update(path)
    return found
