import dataclasses
from pathlib import Path

import pytest
import yaml

from recbase import config
from recbase.config import ConfigError

REPO = Path(__file__).parent.parent


def test_defaults_are_the_papers_filters():
    cfg = config.load()
    assert cfg.data.min_history == 15
    assert cfg.data.max_history == 2500
    assert cfg.data.sources[0].kind == "movielens"


def test_dotted_overrides_reach_nested_fields_and_lists():
    cfg = config.load(
        REPO / "jobs/configs/default.yaml",
        ["data.min_history=20", "data.split.seed=7", "data.sources.0.layout=recbole", "data.split.unseen_domains=[Drama]"],
    )
    assert cfg.data.min_history == 20
    assert cfg.data.split.seed == 7
    assert cfg.data.sources[0].layout == "recbole"
    assert cfg.data.split.unseen_domains == ("Drama",)


def test_scientific_notation_without_a_dot_is_a_number():
    # YAML 1.1 reads 3e-3 as a string; a user typing it on the command line or in a file means the number
    cfg = config.load(REPO / "jobs/configs/default.yaml", ["pretrain.lr=3e-3", "pretrain.weight_decay=1E-2"])
    assert cfg.pretrain.lr == pytest.approx(3e-3)
    assert cfg.pretrain.weight_decay == pytest.approx(1e-2)
    with pytest.raises(ConfigError, match="pretrain.lr: expected a number"):
        config.load(REPO / "jobs/configs/default.yaml", ["pretrain.lr=fast"])


def test_override_into_a_list_the_yaml_left_out_starts_from_the_default():
    cfg = config.load(None, ["data.sources.0.path=/data/ml-1m"])
    assert cfg.data.sources[0].path == "/data/ml-1m"
    assert cfg.data.sources[0].pseudo_domain == "first_genre"


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.min_histroy=20", "unknown key(s) data.min_histroy"),
        ("model.hidden=3", "unknown key(s) model"),
        ("data.min_history=twenty", "data.min_history: expected an integer"),
        ("data.min_history=true", "data.min_history: expected an integer"),
        ("data.text_format=fancy", "data.text_format: 'fancy' is not one of"),
        ("data.split.unseen_user_fraction=1.5", "unseen_user_fraction must be in [0, 1)"),
        ("data.max_history=3", "data.max_history (3) must be >= data.min_history (15)"),
        ("data.sources.3.path=x", "is not an index of a list of 1"),
        ("data.sources.0.kind=netflix", "data.sources.0.kind: 'netflix' is not one of"),
        ("data.min_history", "not of the form key.sub=value"),
        ("tokenizer.train_items=100", "tokenizer.train_items must be 0 (every item) or >= codebook_size (256)"),
        ("pretrain.pair_weight=-1", "pretrain.pair_weight must be >= 0"),
        ("pretrain.code_dropout=1", "pretrain.code_dropout must be in [0, 1)"),
        ("pretrain.code_dropout_from=1", "pretrain.code_dropout_from must be >= 2"),
        ("pretrain.code_dropout_from=5", "pretrain.code_dropout_from must be at most tokenizer.levels + 1 = 4"),
        ("data.shard_rows=0", "data.shard_rows must be >= 1"),
        ("data.engine=spark", "data.engine: 'spark' is not one of"),
        ("eval.like_share_weight={users: -1}", "eval.like_share_weight must be >= 0"),
        ("eval.like_share_weight=[1]", "eval.like_share_weight: [1] fits none of"),
    ],
)
def test_bad_configs_fail_with_the_key_named(override, message):
    with pytest.raises(ConfigError) as e:
        config.load(REPO / "jobs/configs/default.yaml", [override])
    assert message in str(e.value)


@pytest.mark.parametrize("name", ["like_share_weight", "item_prior_weight", "prior_only_weight"])
def test_score_weights_are_one_number_or_one_per_dataset_name_or_kind(name):
    assert config.load(None, [f"eval.{name}=2"]).eval.weight_for(name, "unseen_users") == 2.0
    e = config.load(None, [f"eval.{name}={{domains: 5, unseen_users: 0.5, users: 1, '*': 1.5}}"]).eval
    names = ("unseen_domains", "validation_domains", "unseen_users", "validation_users", "movies-rb")
    assert [e.weight_for(name, n) for n in names] == [5.0, 5.0, 0.5, 1.0, 1.5]  # name, then kind, then *
    assert config.load(None, [f"eval.{name}={{users: 1}}"]).eval.weight_for(name, "unseen_domains") == 0.0
    with pytest.raises(ConfigError, match=f"eval.{name} must be >= 0"):
        config.load(None, [f"eval.{name}={{users: -1}}"])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        config.load(tmp_path / "nope.yaml")


def test_config_round_trips_through_plain_data():
    cfg = config.load(REPO / "jobs/configs/default.yaml")
    assert config.from_dict(config.Config, config.to_dict(cfg)) == cfg


def yaml_files():
    return sorted(p for d in ("jobs", "tune", "cluster") for p in (REPO / d).rglob("*.y*ml"))


def test_every_repo_yaml_is_tested():
    assert yaml_files(), "expected YAML configs under jobs/"


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_in_the_repo_loads(path):
    raw = yaml.safe_load(path.read_text())
    if path.parts[-3:-1] == ("jobs", "configs"):
        config.load(path)  # a run config: the full typed loader, unknown keys rejected
    elif path.parts[-2] == "tune":
        from recbase.sweep import spec

        for smoke in (False, True):  # a sweep: its own loader, and the run configs bounding its space
            sweep = spec.load(path, smoke=smoke)
            assert dataclasses.replace(sweep, config=str(REPO / sweep.config)).check()
    else:
        assert isinstance(raw, dict)


def test_every_stage_spells_its_actors_alike_and_auto_or_a_number_of_gpus():
    cfg = config.load(None, ["embed.actors.num_gpus=1", "eval.actors.num_gpus=0.5", "pretrain.workers.concurrency=8"])
    assert cfg.embed.actors.num_gpus == 1.0 and cfg.eval.actors.num_gpus == 0.5
    assert cfg.pretrain.workers.concurrency == 8 and cfg.pretrain.workers.num_gpus == "auto"
    assert cfg.tokenizer.assign.num_gpus == 0.0  # assignment is a matmul per level: CPU
    assert {type(a) for a in (cfg.embed.actors, cfg.tokenizer.assign, cfg.pretrain.workers, cfg.eval.actors)} == {config.ActorsConfig}
    with pytest.raises(config.ConfigError, match=r"embed.actors.num_gpus: 'many' fits none of: expected a number.*not one of \['auto'\]"):
        config.load(None, ["embed.actors.num_gpus=many"])
    with pytest.raises(config.ConfigError, match=r"^pretrain.workers: concurrency must be >= 1"):
        config.load(None, ["pretrain.workers.concurrency=0"])
    with pytest.raises(config.ConfigError, match="unknown key.*embed.concurrency"):
        config.load(None, ["embed.concurrency=2"])  # the former spelling: a clear error naming the valid keys


def test_a_config_extends_another_and_overrides_key_by_key(tmp_path):
    (tmp_path / "long.yaml").write_text(
        f"extends: {REPO / 'jobs/configs/default.yaml'}\npretrain:\n  max_steps: 1800\n  output: runs/x/pretrain\n")
    cfg = config.load(tmp_path / "long.yaml", ["pretrain.lr=2e-3"])
    base = config.load(REPO / "jobs/configs/default.yaml")
    assert cfg.pretrain.max_steps == 1800 and cfg.pretrain.output == "runs/x/pretrain" and cfg.pretrain.lr == 2e-3
    assert cfg.pretrain.objective == base.pretrain.objective and cfg.data == base.data
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        config.load(tmp_path / "a.yaml")
