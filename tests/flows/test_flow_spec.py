"""Flow files: every mistake reported at once with its place and fix; fan-out expansion."""

from __future__ import annotations

import textwrap

import pytest

from lakecache.errors import NotFoundError
from lakecache.flows import FlowSpec, FlowSpecError
from lakecache.flows.spec import parse_overrides, plan


class Known:
    """A catalog of queue ``q`` (template ``small`` alone in queue ``small``), xray@v1."""

    def queues(self) -> set[str]:
        return {"q", "small"}

    def template_queues(self) -> dict[str, str]:
        return {"small": "small"}

    def resolve(self, dataset: str, ref: str) -> str:
        if dataset == "xray" and ref in ("v1", "latest"):
            return "a" * 64
        raise NotFoundError(f"no ref {ref!r} in {dataset!r}", hint="List refs.")


EVERY_MISTAKE = textwrap.dedent(
    """\
    name: broken
    params: {epochs: 2}
    tasks:
      prepare:
        command: python prep.py
        queue: q
        after: [train]
        inputs: {xray: {dataset: xray@v9}}
      train:
        command: python train.py --lr {params.lr} --depth {params.depht}
        queue: gpu-big
        after: [prepare, evaluate]
        params: {lr: [], momentum: {a: 1}}
        inputs: {prep: {task: prepare}, Prep: {task: prepare}, cars: {dataset: cars@v1}}
      pick:
        command: python pick.py
        template: huge
        inputs: {m: {task: trian}}
        outputs: [best, best]
        retries: -1
        timeout: soon
        colour: blue
      hello: {command: echo hi, queue: q}
      hello: {command: echo again, queue: q}
    """
)


def test_a_flow_with_every_kind_of_mistake_lists_them_all() -> None:
    flow = FlowSpec.from_text(EVERY_MISTAKE, "broken.yaml")
    with pytest.raises(FlowSpecError) as info:
        plan(flow, Known(), parse_overrides(["epochs=3", "nope=1"]))
    problems = info.value.problems
    text = str(info.value)
    whats = [p.what for p in problems]

    def has(fragment: str, where: str) -> None:
        found = [p for p in problems if fragment in p.what]
        assert found, f"{fragment!r} not in {whats}"
        assert any(where in p.where for p in found), [p.where for p in found]
        assert all(p.fix for p in found)

    has("'hello' is given twice", "broken.yaml:24")  # clashing names
    has("cycle: ", "broken.yaml:")  # prepare -> train -> prepare
    has("unknown task 'evaluate'", "tasks.train")
    has("unknown task 'trian'", "tasks.pick")
    has("xray@v9", "broken.yaml:8 tasks.prepare.inputs.xray")  # unknown input
    has("cars@v1", "tasks.train.inputs.cars")
    has("unknown queue 'gpu-big'", "broken.yaml:11 tasks.train.queue")
    has("template 'huge'", "tasks.pick.template")
    has("{params.depht} names no param", "tasks.train.command")  # params that do not fit
    has("empty list fans out", "tasks.train.params.lr")
    has("param 'momentum' is a mapping", "tasks.train.params.momentum")
    has("no param 'nope'", "--param nope")
    has("share $LAKECACHE_INPUT_PREP", "tasks.train.inputs.Prep")
    has("output folder is named twice", "tasks.pick.outputs")
    has("retries -1", "tasks.pick.retries")
    has("timeout 'soon'", "tasks.pick.timeout")
    has("unknown key 'colour'", "broken.yaml:22 tasks.pick.colour")
    assert len(problems) >= 17
    assert text.startswith(f"broken.yaml: {len(problems)} mistakes; nothing was run:")
    assert "did you mean 'train'?" in text  # trian
    assert info.value.hint


def test_not_yaml_says_where() -> None:
    with pytest.raises(FlowSpecError, match=r"flow.yaml:3: not valid YAML"):
        FlowSpec.from_text("name: x\ntasks: [\n", "flow.yaml")


def test_fan_out_grid_overrides_and_rendering() -> None:
    flow = FlowSpec.from_text(
        textwrap.dedent(
            """\
            name: grid
            params: {epochs: 2}
            tasks:
              prep: {command: "echo prep", queue: q, outputs: [d]}
              train:
                command: "train --lr {params.lr} --depth {params.depth} --e {params.epochs}"
                queue: q
                params: {lr: [0.1, 0.01], depth: [50, 101], tag: "a b; rm -rf /"}
                inputs: {d: {task: prep}}
                env: {NOTE: "{params.tag}"}
              pick: {command: [pick, "{params.epochs}"], template: small, after: [train]}
            """
        )
    )
    checked = plan(flow, Known(), parse_overrides(["epochs=5", "train.depth=[18]"]))
    names = [t.name for t in checked.tasks]
    assert names == ["prep", "train[lr=0.1,depth=18]", "train[lr=0.01,depth=18]", "pick"]
    train = checked.tasks[1]
    assert train.command == ("sh", "-c", "train --lr 0.1 --depth 18 --e 5")
    assert train.deps == ("prep",) and train.upstream == (("d", "prep", "stream"),)
    assert train.env == {"NOTE": "a b; rm -rf /"}
    pick = checked.tasks[-1]
    assert pick.queue == "small" and pick.command == ("pick", "5")
    assert pick.deps == ("train[lr=0.1,depth=18]", "train[lr=0.01,depth=18]")
    # A shell line quotes param values, so a value cannot become shell syntax.
    flow2 = FlowSpec("q")
    flow2.task("t", command="echo {params.x}", queue="q", params={"x": "$(id); ls"})
    (t,) = plan(flow2, Known()).tasks
    assert t.command == ("sh", "-c", "echo '$(id); ls'")


def test_python_builder_matches_yaml() -> None:
    flow = FlowSpec("built")
    flow.task("a", command=["echo", "{params.n}"], queue="q", params={"n": [1, 2, 3]})
    flow.task("b", command="true", queue="q", after=["a"], memo=True, retries=2, timeout="5m")
    checked = plan(flow, Known())
    assert [t.name for t in checked.tasks] == ["a[n=1]", "a[n=2]", "a[n=3]", "b"]
    assert checked.tasks[-1].timeout == 300 and checked.tasks[-1].retries == 2
    with pytest.raises(FlowSpecError, match="unknown queue 'nope'"):
        bad = FlowSpec("bad")
        bad.task("a", command="true", queue="nope")
        plan(bad, Known())
