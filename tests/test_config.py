import pytest
import yaml

from bigml_cli import config
from bigml_cli.config import RECIPES_DIR, recipe_names
from bigml_cli.errors import UserError


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_loads_and_states_every_hyperparameter(name):
    text = (RECIPES_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# bigml train"), "first line: the command that runs it"
    raw = yaml.safe_load(text)
    cfg = config.load(raw["model"]["name"], recipe=name)
    resolved = cfg.to_dict()
    for section in ("model", "data", "train"):
        assert set(raw[section]) == set(resolved[section]), f"{name}: {section} must state every key"
    assert cfg.data.name == raw["data"]["name"]


def test_model_dataset_pair_uses_its_recipe_else_defaults():
    cfg = config.load("cnn", "cifar10")
    assert cfg.recipe.endswith("cnn_cifar10.yaml") and cfg.train.optimizer == "muon"
    cfg = config.load("cnn", "fashion_mnist")
    assert cfg.recipe == "" and cfg.train == config.TrainConfig() and cfg.data.name == "fashion_mnist"


def test_overrides_are_typed_and_applied():
    cfg = config.load("mlp", "mnist", overrides=["train.epochs=3", "model.hidden_units=[8,4]",
                                                  "train.learning_rate=1", "data.augment=none"])
    assert cfg.train.epochs == 3 and cfg.model["hidden_units"] == [8, 4]
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)
    assert cfg.data.augment == "none"
    cfg = config.load("mlp", "mnist", overrides=["train.weight_decay=1e-12"])  # YAML: a string; still a number
    assert cfg.train.weight_decay == 1e-12


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown recipe key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("train.lr=0.1", "unknown recipe key 'train.lr' (did you mean 'train.learning_rate'?)"),
    ("model.epochs=3", "(did you mean 'train.epochs'? epochs belongs to the train section)"),
    ("train.val_split=0.2", "(did you mean 'data.val_fraction'? val_fraction belongs to the data section)"),
    ("train.epochs=three", "train.epochs must be an integer, got 'three'"),
    ("train.epochs=0", "train.epochs must be positive"),
    ("train.nesterov=3", "train.nesterov must be true or false"),
    ("train.lookahead_decay=1.5", "train.lookahead_decay must be from 0 to 1, got 1.5"),
    ("train.whiten_bias_epochs=-1", "train.whiten_bias_epochs must be 0 or more, got -1"),
    ("train.weight_decay=-0.1", "train.weight_decay must be 0 or more, got -0.1"),
    ("data.val_fraction=1.5", "data.val_fraction must be from 0 to below 1, got 1.5"),
    ("data.test_fraction=1", "data.test_fraction must be from 0 to below 1, got 1.0"),
    ("model.dropout=1", "model.dropout must be from 0 to below 1, got 1.0"),
    ("data.vocab_size=1", "data.vocab_size must be at least 3 (the padding and unknown tokens take two places), got 1"),
    ("model.dropuot=0.1", "unknown recipe key 'model.dropuot' (did you mean 'model.dropout'?)"),
    ("trian.epochs=3", "unknown recipe section 'trian' (did you mean 'train'?)"),
    ("train.optimizer=adam", "unknown value for train.optimizer 'adam' (did you mean 'adamw'?)"),
    ("model.hidden_units=[a]", "model.hidden_units must be a list of positive integers, got ['a']"),
    ("model.hidden_units=[64, 1.5]", "model.hidden_units must be a list of positive integers, got [64, 1.5]"),
    ("model.hidden_units=[0]", "model.hidden_units must be a list of positive integers, got [0]"),
    ("data.image_size=[32]", "data.image_size must be [height, width] (or [] for the folder's most common size)"),
    ("data.image_size=[32, -1]", "data.image_size must be a list of positive integers, got [32, -1]"),
    ("train.seed=-1", "train.seed must be from 0 to 2**32 - 1, got -1"),
    ("epochs", "must look like SECTION.KEY=VALUE"),
    ("epochs=5", "did you mean train.epochs=5?"),
    ("val_fraction=0.2", "did you mean data.val_fraction=0.2?"),
])
def test_bad_overrides_are_user_errors(override, message):
    with pytest.raises(UserError) as e:
        config.load("mlp", "mnist", overrides=[override])
    assert message in str(e.value)


def test_bad_recipe_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        config.load("mlp", "mnist", recipe=str(bad))
    bad.write_text("model:\n  name: cnn\n")
    with pytest.raises(UserError, match="is for model 'cnn', not 'mlp'"):
        config.load("mlp", "mnist", recipe=str(bad))
    bad.write_text("train:\n  epochs: 3\n  seed: 1\n  epochs: 4\n")
    with pytest.raises(UserError, match="recipe key 'epochs' is given twice \\(line 4\\)"):
        config.load("mlp", "mnist", recipe=str(bad))
    with pytest.raises(UserError, match="neither a file, a run directory nor a shipped recipe"):
        config.load("mlp", "mnist", recipe="cnn_cifar11")


def test_unknown_model_suggests():
    with pytest.raises(UserError, match="unknown model 'cnnn' \\(did you mean 'cnn'\\?\\)"):
        config.load("cnnn", "mnist")


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_builds_its_model_at_full_size(name, tmp_path):
    """The recipe's model, with every recipe parameter, on a tiny copy of its dataset in the official layout
    (the dataset registry writes it), so a recipe on a new dataset needs no change here."""
    import numpy as np

    from bigml_cli.data import DATASETS
    from bigml_cli.data.base import take
    from bigml_cli.models import build_model
    from bigml_cli.tasks import load_for

    raw = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
    cfg = config.load(raw["model"]["name"], recipe=name)
    copy = DATASETS.get(cfg.data.name).tiny_copy
    if copy is not None:
        copy(tmp_path)
    try:
        ds = load_for(cfg, tmp_path)
    except UserError as e:  # a language model of the copy's few texts: shorter windows, the recipe's model
        assert "too short" in str(e), e
        full = cfg.data.sequence_length
        cfg.data.sequence_length = 4
        ds = load_for(cfg, tmp_path)
        cfg.data.sequence_length = ds.input_info["sequence_length"] = full
    if ds.input_info.get("tokens") == "wordpiece":  # the --init preset's vocabulary: a stand-in of its size
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        ds.input_info.update(vocab=specials + [f"w{i}" for i in range(cfg.data.vocab_size - 4)], lowercase=True)
    x = ds.arrays("test")[0]
    if ds.kind in ("lm", "mlm"):  # token windows of the recipe's length
        x = np.zeros((2, cfg.data.sequence_length), np.int32)
    elif ds.kind == "pairs":  # source ids, and target ids shifted right (teacher forcing), of full length
        x = {"source": ds.ids["test"][0][:2], "target": ds.ids["test"][1][:2, :-1]}
    else:
        x = take(x, np.arange(2))
    out = np.asarray(build_model(cfg.model, ds.input_info, ds.num_classes)(x, training=False))
    assert out.shape[0] == 2 and np.isfinite(out).all()


@pytest.mark.parametrize("override, meant", [
    ("model.n_layer=2", "model.num_layers"), ("model.n_embd=64", "model.dim"),
    ("data.block_size=64", "data.sequence_length"), ("train.block_size=64", "data.sequence_length"),
])
def test_names_from_nanogpt_point_at_bigmls_keys(override, meant):
    with pytest.raises(UserError) as e:
        config.load("gpt", "tinyshakespeare", overrides=[override])
    assert f"(did you mean '{meant}'?" in str(e.value)


@pytest.mark.parametrize("model, override", [("transformer", "model.heads=0"), ("rnn", "model.num_layers=0"),
                                             ("gpt", "model.dim=-8"), ("cnn", "model.stem_width=0")])
def test_model_counts_must_be_positive(model, override):
    """heads=0 was a ZeroDivisionError; an RNN of 0 layers failed in its first training step."""
    with pytest.raises(UserError, match=f"{override.split('=')[0]} must be positive, got {override.split('=')[1]}"):
        config.load(model, "mnist", overrides=[override])
