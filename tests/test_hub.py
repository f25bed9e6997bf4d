"""`--init` of a keras-hub preset (a tiny BERT saved with save_to_preset) and of a Hugging Face BERT folder:
the preset's sizes, weights and WordPiece tokenizer, raw strings in predict and in the exported SavedModel."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error
from test_text import FILLER, NEGATIVE, POSITIVE, write_reviews

BERT = ["data.tokens=wordpiece", "data.sequence_length=24", "train.batch_size=16", "train.learning_rate=0.003",
        "train.warmup_epochs=0"]
MINILM = Path(os.environ.get("BIGML_PRETRAINED_DIR", Path.home() / ".cache" / "bigml-pretrained")) / "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A random 2-layer BERT whose WordPiece vocabulary holds the reviews' words, and the reviews."""
    from bigml_cli.hub import tiny_preset

    root = tmp_path_factory.mktemp("hub")
    write_reviews(root / "reviews", 40, seed=0)
    words = FILLER + POSITIVE + NEGATIVE + ["the", "end", ".", "!"]
    return tiny_preset(root / "tiny_bert", words), root / "reviews"


def test_a_keras_hub_preset_fine_tunes_predicts_strings_and_exports_a_savedmodel(cli, preset, tmp_path):
    folder, data = preset
    run_dir = tmp_path / "run"
    result = cli("train", "bert", "--dataset", data, "--init", folder, "--run-dir", run_dir, "train.epochs=6",
                 *BERT, "--json")
    assert result.exit_code == 0, result.text
    text = " ".join(result.stderr.split())
    assert "transformer_layer_1" in text and "loaded" in text and "the head: other classes" in text
    assert "note: the model's sizes are those of --init's model (model.dim=16, model.heads=2, model.num_layers=2" in text
    config = json.loads((folder / "config.json").read_text())["config"]
    saved = (run_dir / "config.yaml").read_text()
    assert f"dim: {config['hidden_dim']}" in saved and f"num_layers: {config['num_layers']}" in saved  # the preset's
    info = json.loads((run_dir / "run.json").read_text())["input"]
    assert info["tokens"] == "wordpiece" and info["vocab"][:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] >= 0.9

    texts = ["a wonderful excellent film, loved it", "boring awful terrible plot, hated it"]
    result = cli("predict", run_dir, *texts, "--json")
    assert result.exit_code == 0, result.text
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["top_k"][0]["label"] for p in predictions] == ["pos", "neg"]

    result = cli("export", run_dir, "--json")
    assert result.exit_code == 0, result.text
    exported = json.loads(result.stdout)
    assert exported["max_abs_diff"] < 1e-4 and "tensorflow-text" in exported["needs"]
    assert_user_error(cli("export", run_dir, "--format", "onnx", "--out", tmp_path / "onnx"), "--format savedmodel")
    script = ("import json, sys, tensorflow as tf, tensorflow_text\n"
              "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
              "print(json.dumps(serve(text=tf.constant(json.loads(sys.argv[2])))['probabilities'].numpy().tolist()))")
    fresh = subprocess.run([sys.executable, "-c", script, exported["path"], json.dumps(texts)], capture_output=True,
                           text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    probs = np.array(json.loads(fresh.stdout.strip().splitlines()[-1]))
    want = [{k["label"]: k["probability"] for k in p["top_k"]}["pos"] for p in predictions]
    np.testing.assert_allclose(probs[:, 1], want, atol=1e-4)  # the classes are neg, pos


def test_lora_on_a_preset_adapts_the_attention_inside_its_blocks(cli, preset, tmp_path):
    folder, data = preset
    run_dir = tmp_path / "lora"
    result = cli("train", "bert", "--dataset", data, "--init", folder, "--run-dir", run_dir, "train.epochs=2",
                 "train.lora_rank=2", *BERT, "--json")
    assert result.exit_code == 0, result.text
    import keras

    from bigml_cli.pretrained import enable_lora
    from bigml_cli.runs import Run
    from bigml_cli.evaluate import load_model

    model = load_model(Run(run_dir))  # merged: it loads as a plain model
    assert not any(getattr(layer, "lora_enabled", False) for layer in model._flatten_layers())
    enable_lora(model, 2)
    adapted = {layer.name for layer in model._flatten_layers() if getattr(layer, "lora_enabled", False)}
    assert {"query", "key", "value", "attention_output"} <= adapted  # inside transformer_layer_i
    assert isinstance(model, keras.Model)


def test_wordpiece_splits_long_texts_head_and_tail(preset):
    from bigml_cli.hub import WordPieceIds

    vocab = json.loads((preset[0] / "tokenizer.json").read_text())  # keras-hub's own tokenizer config
    assert vocab["config"]["lowercase"] is True
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c"]
    layer = WordPieceIds(words, True, 10)
    ids = np.asarray(layer(np.array(["A a a a a b b b c c c c", "b <br /> c", "zzz"], dtype=object)))
    cls, sep = 2, 3
    assert ids[0].tolist() == [cls, 4, 4, 5, 5, 6, 6, 6, 6, sep]  # the first quarter of 8 pieces, then the last 6
    assert ids[1].tolist() == [cls, 5, 6, sep, 0, 0, 0, 0, 0, 0]  # <br /> is a line break, not words
    assert ids[2].tolist()[:3] == [cls, 1, sep]  # unknown


def test_preset_mistakes_are_one_line_and_write_nothing(cli, preset, tmp_path):
    folder, data = preset
    run_dir = tmp_path / "run"
    assert_user_error(cli("train", "bert", "--dataset", data, "--init", "bert_tiny_en_uncased", "--run-dir", run_dir,
                          *BERT), "could not be resolved", "needs internet access")
    assert_user_error(cli("train", "rnn", "--dataset", data, "--init", folder, "--run-dir", run_dir, *BERT),
                      "initializes `bigml train bert`")
    assert_user_error(cli("train", "bert", "--dataset", "digits", "--init", folder, "--run-dir", run_dir),
                      "on text data")
    assert_user_error(cli("train", "bert", "--dataset", data, "--init", folder, "--run-dir", run_dir),
                      "set data.tokens=wordpiece")
    assert_user_error(cli("train", "bert", "--dataset", data, "--run-dir", run_dir, *BERT), "give --init a")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert_user_error(cli("train", "bert", "--dataset", data, "--init", hf, "--run-dir", run_dir, *BERT),
                      "neither vocab.txt nor tokenizer.json")
    (hf / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nfilm\n")
    assert_user_error(cli("train", "bert", "--dataset", data, "--init", hf, "--run-dir", run_dir, *BERT),
                      "could not be read as a keras-hub preset or Hugging Face BERT folder")
    assert not run_dir.exists()


@pytest.mark.data
@pytest.mark.skipif(not (MINILM / "model.safetensors").is_file(), reason="make minilm unpacks all-MiniLM-L6-v2")
def test_the_packaged_minilm_loads_through_keras_hubs_converter():
    """all-MiniLM-L6-v2 as Hugging Face files (tokenizer.json, no vocab.txt): BERT's uncased WordPiece ids."""
    from bigml_cli.hub import PresetSource, WordPieceIds

    source = PresetSource(str(MINILM))
    assert source.model_sizes() == {"dim": 384, "heads": 12, "num_layers": 6, "mlp_dim": 1536, "max_positions": 512}
    info = source.input_info()
    assert len(info["vocab"]) == 30522 and info["lowercase"]
    ids = np.asarray(WordPieceIds(info["vocab"], True, 6)(np.array(["Hello World!"], dtype=object)))
    assert ids[0].tolist() == [101, 7592, 2088, 999, 102, 0]


def test_sigkill_then_resume_is_exact_from_a_preset_with_lora_and_a_frozen_start(preset, tmp_path):
    """A run started from a preset, with LoRA, its backbone frozen for the first epoch and then at half the
    rate, resumes after SIGKILL (in the frozen epoch) to the weights of one never stopped: the resumed run reads
    the vocabulary it started with from run.json, not the preset again, and the freeze follows the step count."""
    extra = ["train.lora_rank=2", "train.freeze_backbone_epochs=2", "train.backbone_lr_scale=0.5"]
    from test_resume import BIGML, kill_resume_and_compare

    folder, data = preset
    args = ["train", "bert", "--dataset", data, "--init", folder, "train.epochs=3", "train.deterministic=true",
            "train.checkpoint_every=1", *BERT, *extra]
    reference = tmp_path / "reference"
    done = subprocess.run([BIGML, *map(str, args), "--run-dir", str(reference)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    kill_resume_and_compare(args, reference, tmp_path / "killed", 6)


def write_hf_bert(folder, vocab, hidden=8, heads=2, layers=1, inner=16, positions=32, seed=0):
    """A tiny BERT in Hugging Face's layout (config.json, model.safetensors with HF's tensor names, vocab.txt),
    random weights: what keras-hub's converter reads from a downloaded checkpoint."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {"embeddings.word_embeddings.weight": (len(vocab), hidden),
               "embeddings.position_embeddings.weight": (positions, hidden),
               "embeddings.token_type_embeddings.weight": (2, hidden),
               "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,),
               "pooler.dense.weight": (hidden, hidden), "pooler.dense.bias": (hidden,)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            tensors.update({f"{p}attention.self.{name}.weight": (hidden, hidden), f"{p}attention.self.{name}.bias": (hidden,)})
        tensors.update({f"{p}attention.output.dense.weight": (hidden, hidden), f"{p}attention.output.dense.bias": (hidden,),
                        f"{p}attention.output.LayerNorm.weight": (hidden,), f"{p}attention.output.LayerNorm.bias": (hidden,),
                        f"{p}intermediate.dense.weight": (inner, hidden), f"{p}intermediate.dense.bias": (inner,),
                        f"{p}output.dense.weight": (hidden, inner), f"{p}output.dense.bias": (hidden,),
                        f"{p}output.LayerNorm.weight": (hidden,), f"{p}output.LayerNorm.bias": (hidden,)})
    arrays = {k: (0.2 * rng.standard_normal(shape)).astype("float32") for k, shape in tensors.items()}
    folder.mkdir(parents=True)
    save_file(arrays, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": len(vocab), "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": inner,
        "max_position_embeddings": positions, "type_vocab_size": 2, "hidden_act": "gelu"}))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return arrays


def test_a_hugging_face_bert_folder_loads_through_keras_hubs_converter(cli, preset, tmp_path):
    """HF's tensors land in the right keras-hub weights (checked on a run that kept its backbone frozen), and
    the folder's vocab.txt becomes the model's tokenizer."""
    from bigml_cli.evaluate import load_model
    from bigml_cli.runs import Run

    _, data = preset
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(FILLER + POSITIVE + NEGATIVE + ["end"]))
    arrays = write_hf_bert(tmp_path / "hf", vocab)
    run_dir = tmp_path / "run"
    result = cli("train", "bert", "--dataset", data, "--init", tmp_path / "hf", "--run-dir", run_dir,
                 "train.epochs=1", "train.freeze_backbone_epochs=1", *BERT, "--json")
    assert result.exit_code == 0, result.text
    model = load_model(Run(run_dir))
    np.testing.assert_array_equal(model.get_layer("backbone").get_layer("token_embedding").get_weights()[0],
                                  arrays["embeddings.word_embeddings.weight"])
    query = model.get_layer("backbone").get_layer("transformer_layer_0")._self_attention_layer.query_dense
    np.testing.assert_array_equal(query.kernel.numpy().reshape(8, 8), arrays["encoder.layer.0.attention.self.query.weight"].T)
    assert model.get_layer("tokenize").vocabulary == vocab
