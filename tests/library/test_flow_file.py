"""The scenario's flow file plans: split -> prepare -> train x2 -> pick -> evaluate.

The model is chosen on validation figures (pick reads the trainings), and the test split
is scored once, by the one evaluation, of the chosen model."""

from __future__ import annotations

from pathlib import Path

import lakecache.library
from lakecache.flows.spec import FlowSpec, plan

FLOW = Path(lakecache.library.__file__).parent / "flows" / "xray.yaml"


class _Catalogue:
    def queues(self) -> set[str]:
        return {"onprem"}

    def template_queues(self) -> dict[str, str]:
        return {}

    def resolve(self, dataset: str, ref: str) -> str:
        return "c" * 64


def test_the_xray_flow_plans_with_both_profiles() -> None:
    for profile in ("small", "full"):
        p = plan(FlowSpec.from_yaml(FLOW), _Catalogue(), {"profile": profile})
        names = [t.name for t in p.tasks]
        assert sorted(names) == sorted(
            ["split", "prepare", "train[lr=0.001]", "train[lr=0.003]", "pick", "evaluate"]
        )
        by_name = {t.name: t for t in p.tasks}
        assert set(by_name["pick"].deps) == {"train[lr=0.001]", "train[lr=0.003]"}
        assert "pick" in by_name["evaluate"].deps
        train = " ".join(by_name["train[lr=0.003]"].command)
        assert f"--profile {profile}" in train and "--lr 0.003" in train
        for t in p.tasks:
            assert "python -m lakecache.library" in " ".join(t.command)
        evaluate = " ".join(by_name["evaluate"].command)
        assert "$LAKECACHE_INPUT_BEST/best/model.pt" in evaluate
        assert "--split-name" not in evaluate  # the test split, the default
        assert "evaluate" not in " ".join(by_name["pick"].deps)


def test_params_reach_the_commands_and_environment() -> None:
    p = plan(
        FlowSpec.from_yaml(FLOW),
        _Catalogue(),
        {"epochs": 2, "max_steps": 3, "workers": 0, "home": "/srv/lakecache", "seed": 5},
    )
    by_name = {t.name: t for t in p.tasks}
    train = by_name["train[lr=0.001]"]
    assert train.env["LAKECACHE_HOME"] == "/srv/lakecache" and train.env["WORKERS"] == "0"
    assert train.env["EPOCHS"] == "2" and train.env["MAX_STEPS"] == "3"
    assert "--seed 5" in " ".join(train.command)
    assert by_name["evaluate"].env["LAKECACHE_HOME"] == "/srv/lakecache"
