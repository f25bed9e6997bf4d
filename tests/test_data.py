import pickle
import shutil

import numpy as np
import pytest
import tensorflow as tf

from bigml_cli.config import DataConfig
from bigml_cli.data import load_dataset
from bigml_cli.data.pipeline import (cutout, eval_dataset, inputs_dataset, lm_eval_dataset, lm_train_dataset,
                                     random_crop, train_dataset)
from bigml_cli.errors import UserError


def test_mnist_npz_layout(mnist_dir):
    ds = load_dataset(DataConfig(name="mnist", val_fraction=0.1), mnist_dir)
    assert ds.x_train.shape == (270, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert len(ds.y_val) == 30 and ds.x_test.shape == (100, 28, 28, 1)
    assert ds.input_info["shape"] == [28, 28, 1] and ds.num_classes == 10


def test_cifar10_pickled_layout(cifar_dir):
    ds = load_dataset(DataConfig(name="cifar10", val_fraction=0.2), cifar_dir)
    assert ds.x_train.shape == (160, 32, 32, 3) and ds.x_test.shape == (50, 32, 32, 3)
    assert ds.class_names[0] == "airplane" and ds.augment == "crop_flip"


def test_fashion_mnist_idx_layout(fashion_dir):
    ds = load_dataset(DataConfig(name="fashion_mnist", val_fraction=0.0), fashion_dir)
    assert ds.x_train.shape == (60, 28, 28, 1) and ds.class_names[-1] == "Ankle boot"


def test_cifar_unpickler_refuses_code(cifar_dir):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(cifar_dir / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(UserError, match="data_batch_1 is corrupt"):
        load_dataset(DataConfig(name="cifar10"), cifar_dir)


def test_digits_ships_with_scikit_learn():
    ds = load_dataset(DataConfig(name="digits", val_fraction=0.1, test_fraction=0.2))
    assert ds.x_train.shape[1:] == (8, 8, 1) and len(ds.y_test) == 359 and ds.x_train.max() > 200


def test_a_split_that_leaves_nothing_to_train_on_is_a_user_error():
    with pytest.raises(UserError, match="holding out 0.9999 of 1438 examples leaves none to train on"):
        load_dataset(DataConfig(name="digits", val_fraction=0.9999, test_fraction=0.2))


def test_split_is_seeded_and_disjoint(mnist_dir):
    a = load_dataset(DataConfig(name="mnist"), mnist_dir)
    b = load_dataset(DataConfig(name="mnist"), mnist_dir)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    rows = {r.tobytes() for r in a.x_train}
    assert not any(r.tobytes() in rows for r in a.x_val)


def test_image_folder_with_train_and_test(image_folder):
    ds = load_dataset(DataConfig(name=str(image_folder), val_fraction=0.0))
    assert ds.class_names == ["class_0", "class_1", "class_2"]
    assert ds.x_train.shape[1:] == (16, 16, 3) and len(ds.y_test) == 12 and len(ds.y_train) == 36


def test_image_folder_skips_hidden_files_and_reads_nested_ones(image_folder):
    """Jupyter's .ipynb_checkpoints is not a class, macOS' ._NAME.png copies are not images, and a class's own
    sub-folders belong to it (as in Keras' image_dataset_from_directory); a notes.txt is not a text dataset."""
    train = image_folder / "train"
    (train / ".ipynb_checkpoints").mkdir()
    (train / "class_0" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (train / "class_1" / "more").mkdir()
    shutil.copy(next((train / "class_1").glob("*.png")), train / "class_1" / "more" / "copy.png")
    (train / "class_2" / "notes.txt").write_text("where these came from: not a text dataset")
    ds = load_dataset(DataConfig(name=str(image_folder), val_fraction=0.0))
    assert ds.class_names == ["class_0", "class_1", "class_2"]
    assert len(ds.y_train) == 37 and (ds.y_train == 1).sum() == 13


def test_unreadable_images_in_a_folder_are_left_out_and_named(image_folder):
    """Downloaded photo collections hold a few broken files; they are named in a note, not fatal. A folder
    with no readable image at all is still a user error."""
    (image_folder / "train" / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8 half a JPEG")
    (image_folder / "test" / "class_2" / "empty.png").write_bytes(b"")
    ds = load_dataset(DataConfig(name=str(image_folder), val_fraction=0.0))
    assert len(ds.y_train) == 36 and len(ds.y_test) == 12
    assert ds.notes == [f"note: left out 2 file(s) that are not readable images: "
                        f"{image_folder / 'train' / 'class_0' / 'broken.jpg'} (UnidentifiedImageError), "
                        f"{image_folder / 'test' / 'class_2' / 'empty.png'} (UnidentifiedImageError); "
                        "delete or replace them to silence this"]
    for png in image_folder.rglob("*.png"):
        png.write_bytes(b"not a png")
    with pytest.raises(UserError, match="shapes/train holds no readable images: none of its 37 image files opens"):
        load_dataset(DataConfig(name=str(image_folder)))


def test_image_folder_of_large_photos_trains_at_a_fitting_size(tmp_path):
    """Photos of 600 x 400 become 256 x 171 inputs (aspect kept) unless data.image_size says otherwise."""
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (600, 400), (40 * i, 200 if label == "a" else 20, 90)).save(
                tmp_path / "photos" / label / f"{i}.jpg")
    ds = load_dataset(DataConfig(name=str(tmp_path / "photos"), val_fraction=0.0))
    assert ds.x_train.shape[1:] == (171, 256, 3)
    ds = load_dataset(DataConfig(name=str(tmp_path / "photos"), val_fraction=0.0, image_size=[40, 60]))
    assert ds.x_train.shape[1:] == (40, 60, 3)


def test_csv_with_missing_values_and_categories(table_csv):
    ds = load_dataset(DataConfig(name=str(table_csv), target="label"))
    cols = {c["name"]: c for c in ds.input_info["columns"]}
    assert cols["age"]["type"] == "numeric" and cols["colour"]["type"] == "categorical"
    assert set(cols["colour"]["vocab"]) == {"red", "green", "blue"}
    assert np.isnan(ds.x_train["age"]).any() or np.isnan(ds.x_test["age"]).any()
    assert ds.class_names == ["no", "yes"]


@pytest.mark.parametrize("sep", [";", "\t"])
def test_csv_with_semicolons_or_tabs_reads_like_commas(table_csv, tmp_path, sep):
    """European spreadsheets save CSV with ';' (decimal commas are then quoted or absent); tabs are TSV."""
    other = tmp_path / "people-sep.csv"
    other.write_text(table_csv.read_text().replace(",", sep))
    want = load_dataset(DataConfig(name=str(table_csv), target="label"))
    got = load_dataset(DataConfig(name=str(other), target="label"))
    assert got.class_names == want.class_names and got.input_info == want.input_info
    np.testing.assert_array_equal(got.x_train["income"], want.x_train["income"])


def test_a_tsv_file_is_a_table_and_another_existing_file_is_named_as_such(table_csv, tmp_path):
    tsv = tmp_path / "people.tsv"  # a .tsv was refused as "does not exist"
    tsv.write_text(table_csv.read_text().replace(",", "\t"))
    want = load_dataset(DataConfig(name=str(table_csv), target="label"))
    got = load_dataset(DataConfig(name=str(tsv), target="label"))
    assert got.kind == "table" and got.input_info == want.input_info
    other = tmp_path / "notes.md"
    other.write_text("# notes")
    with pytest.raises(UserError, match=r"notes.md is neither a table \(.csv, .tsv\) nor a corpus \(.txt\)"):
        load_dataset(DataConfig(name=str(other)))


def test_csv_target_of_measurements_is_refused(table_csv):
    with pytest.raises(UserError, match="'income' has 233 distinct values in 240 rows .*looks like a measurement"):
        load_dataset(DataConfig(name=str(table_csv), target="income"))
    ds = load_dataset(DataConfig(name=str(table_csv), target="colour"))  # categories still train
    assert ds.class_names == ["blue", "green", "red"]


def test_a_split_that_would_be_empty_is_refused(table_csv, tmp_path):
    with pytest.raises(UserError, match="has no test split: data.test_fraction is 0.0"):
        load_dataset(DataConfig(name=str(table_csv), target="label", test_fraction=0.0))
    for rows, fraction, least in ((2, 0.2, 3), (5, 0.1, 6), (2, 0.25, 3)):  # round(5 * 0.1) is 0
        small = tmp_path / f"small{rows}.csv"
        small.write_text("x,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(rows)))
        with pytest.raises(UserError, match=f"has only {rows} example\\(s\\), too few for a test split: "
                                            f"data.test_fraction {fraction:g} of them rounds to none; give it at "
                                            f"least {least} examples"):
            load_dataset(DataConfig(name=str(small), target="y", test_fraction=fraction))
        small.write_text(small.read_text() + "".join(f"{i},a\n" for i in range(least - rows)))
        assert len(load_dataset(DataConfig(name=str(small), target="y", test_fraction=fraction)).y_test) == 1
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be " * 200)
    with pytest.raises(UserError, match="data.val_fraction is 0, but a language model"):
        load_dataset(DataConfig(name=str(corpus), val_fraction=0.0, sequence_length=8))
    assert load_dataset(DataConfig(name=str(corpus), val_fraction=0.1, sequence_length=8)).kind == "lm"


def test_a_language_model_epoch_is_one_pass_over_the_training_tokens(tmp_path):
    # Windows start at every position; counting one step per window start made an epoch show each
    # token sequence_length times (a 200 KB corpus at the defaults: an hour an epoch on this CPU)
    from bigml_cli.config import TrainConfig
    from bigml_cli.config import Config
    from bigml_cli.tasks import task_for
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcdefghij" * 1000)  # 9,000 training characters
    data = DataConfig(name=str(corpus), tokens="characters", sequence_length=50)
    ds = load_dataset(data)
    streams = task_for(ds).streams(ds, Config(model={"name": "gpt"}, data=data, train=TrainConfig(batch_size=20)))
    assert len(ds.train_ids) == 9000 and streams.steps == 9000 // (50 * 20)
    assert lm_train_dataset(ds.train_ids, ds.train_starts, 50, 20, seed=0)[1] == streams.steps


def test_a_language_model_run_too_short_to_learn_says_how_to_lengthen_it(tmp_path):
    from bigml_cli import config
    from bigml_cli.tasks.lm import short_run_note
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcdefghij" * 1000)
    cfg = config.load("gpt", str(corpus), overrides=["data.tokens=characters", "data.sequence_length=50",
                                                     "train.batch_size=20", "train.epochs=10"])
    ds = load_dataset(cfg.data)
    note = short_run_note(ds, cfg, 9)  # 9 steps an epoch: 90 in all
    assert "is 9 steps (9,000 training tokens / (batch 20 x 50 tokens)), so 10 epochs train only 90" in note
    assert "train.epochs=112" in note and f"--recipe gpt_tinyshakespeare --dataset {corpus}" in note
    assert short_run_note(ds, config.load("gpt", str(corpus), overrides=["train.epochs=12"]), 9) is None
    assert short_run_note(ds, config.load("gpt", str(corpus), overrides=["train.steps_per_epoch=5"]), 9) is None


def test_training_stream_is_seeded_and_augmented_only_in_training():
    x = np.arange(8 * 6 * 6 * 1, dtype=np.uint8).reshape(8, 6, 6, 1)
    y = np.arange(8) % 2
    a, steps = train_dataset(x, y, 2, 4, seed=3, augment="crop_flip", crop_padding=2)
    b, _ = train_dataset(x, y, 2, 4, seed=3, augment="crop_flip", crop_padding=2)
    c, _ = train_dataset(x, y, 2, 4, seed=4, augment="crop_flip", crop_padding=2)
    first = [bx.numpy() for bx, _ in a.take(3)]
    assert steps == 2
    assert all((f == s.numpy()).all() for f, (s, _) in zip(first, b.take(3)))
    assert any((f != s.numpy()).any() for f, (s, _) in zip(first, c.take(3)))
    assert not any(np.array_equal(f, x[:4]) for f in first[:1])
    ex = np.concatenate([bx.numpy() for bx, _ in eval_dataset(x, y, 2, 3)])
    np.testing.assert_array_equal(ex, x)  # eval splits: every example once, untouched


def test_pipelines_run_without_the_autotune_thread_that_delays_the_end_of_fit():
    # tf.data's autotuning thread sleeps for up to 60 s between rounds, and deleting an iterator can
    # wait for it: `fit` sometimes returned 2 s (in a 20 s run, 19 s) after its last step
    x, y = np.zeros((8, 4, 4, 1), np.uint8), np.arange(8) % 2
    ids, starts = np.arange(40, dtype=np.int32), np.arange(0, 30, 5)
    for ds in (train_dataset(x, y, 2, 4, seed=0)[0], eval_dataset(x, y, 2, 4), inputs_dataset(x, 4),
               lm_train_dataset(ids, starts, 4, 2, seed=0)[0], lm_eval_dataset(ids, starts, 4, 2)):
        assert ds.options().autotune.enabled is False


def test_random_crop_keeps_pixels_and_shape():
    x = tf.constant(np.random.default_rng(0).integers(1, 255, (5, 8, 8, 3)), tf.uint8)
    out = random_crop(x, tf.constant([1, 2], tf.int64), 0, "REFLECT", flip=False)
    np.testing.assert_array_equal(out.numpy(), x.numpy())  # no padding: identity
    out = random_crop(x, tf.constant([1, 2], tf.int64), 2, "CONSTANT", flip=True)
    assert out.shape == x.shape


def test_missing_data_says_where_to_put_files(tmp_path):
    with pytest.raises(UserError, match=f"put mnist.npz .* in {tmp_path}"):
        load_dataset(DataConfig(name="mnist"), tmp_path)
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        load_dataset(DataConfig(name="cifar10"), tmp_path)


def test_download_failure_is_a_user_error(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.delenv("BIGML_OFFLINE")

    def refuse(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(UserError, match="downloading .*mnist.npz failed .*network unreachable"):
        load_dataset(DataConfig(name="mnist"), tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


def test_download_checks_the_file_and_leaves_nothing_behind_when_it_fails(tmp_path, monkeypatch, capsys):
    """A real HTTP transfer on loopback: the file arrives whole and checked, with a line saying what downloads;
    a wrong checksum or a dead server leaves neither the file nor the folders made for it."""
    import hashlib
    import http.server
    import threading

    from bigml_cli.data.download import fetch

    payload = np.random.default_rng(0).bytes(3 << 20)
    served = tmp_path / "served"
    served.mkdir()
    (served / "data.bin").write_bytes(payload)
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data.bin"
    monkeypatch.delenv("BIGML_OFFLINE")
    try:
        md5 = hashlib.md5(payload).hexdigest()
        dest = tmp_path / "cache" / "set" / "data.bin"
        assert fetch(url, dest, md5, "md5", "data.bin", "put it there") == dest
        assert dest.read_bytes() == payload and sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]
        assert f"downloading {url} (3.1 MB)" in capsys.readouterr().err
        with pytest.raises(UserError, match=f"has md5 {md5}, expected 0+; try again later"):
            fetch(url, tmp_path / "other" / "deep" / "data.bin", "0" * 32, "md5", "data.bin", "put it there")
        assert not (tmp_path / "other").exists()
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(UserError, match="downloading .* failed .*; put it there"):
        fetch(url, tmp_path / "cache" / "new" / "data.bin", md5, "md5", "data.bin", "put it there")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["set"]


def test_truncated_file_is_a_user_error(mnist_dir):
    path = mnist_dir / "mnist.npz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="mnist.npz is corrupt or truncated"):
        load_dataset(DataConfig(name="mnist"), mnist_dir)


def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    """crop_altflip: an image mirrored in one epoch is not in the next (and vice versa), and about half
    of the images are mirrored in the first epoch."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 5, 5, 1)).astype(np.uint8)  # asymmetric: mirrored != original
    ds, steps = train_dataset(x, np.zeros(64, int), 2, 16, seed=0, augment="crop_altflip", crop_padding=0)
    batches = [bx.numpy() for bx, _ in ds.take(3 * steps)]
    flipped = []
    for epoch in range(3):
        images = np.concatenate(batches[epoch * steps:(epoch + 1) * steps])
        mirrored = {}
        for img in images:
            for i in range(64):
                if np.array_equal(img, x[i]):
                    mirrored[i] = False
                elif np.array_equal(img, x[i][:, ::-1]):
                    mirrored[i] = True
        assert len(mirrored) == 64  # every image once per epoch, mirrored or not
        flipped.append(np.array([mirrored[i] for i in range(64)]))
    assert 16 < flipped[0].sum() < 48
    np.testing.assert_array_equal(flipped[1], ~flipped[0])
    np.testing.assert_array_equal(flipped[2], flipped[0])


def test_alternating_flip_alternates_per_pass_when_batches_straddle_epochs():
    """72 images in batches of 16: batches cross pass boundaries, and each image's k-th appearance in
    the stream is still mirrored exactly when its first was not, for odd k."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (72, 5, 5, 1)).astype(np.uint8)
    ds, _ = train_dataset(x, np.zeros(72, int), 2, 16, seed=3, augment="crop_altflip", crop_padding=0)
    seen = {i: [] for i in range(72)}
    for bx, _ in ds.take(18):  # 288 images: every image 4 times
        for img in bx.numpy():
            i = next(i for i in range(72) if np.array_equal(img, x[i]) or np.array_equal(img, x[i][:, ::-1]))
            seen[i].append(not np.array_equal(img, x[i]))
    for i, mirrored in seen.items():
        assert len(mirrored) == 4
        assert mirrored == [mirrored[0], not mirrored[0]] * 2, f"image {i}: {mirrored}"


def _fill_squares(images, fill, size):
    """Each image's (top, left) of its size x size square of `fill`, checking it is the only change."""
    places = []
    for img in images:
        rows, cols = np.nonzero((img == fill).all(-1))
        assert len(rows) == size * size, len(rows)
        top, left = rows.min(), cols.min()
        assert rows.max() - top == size - 1 and cols.max() - left == size - 1  # one square, wholly inside
        outside = np.ones(img.shape[:2], bool)
        outside[top:top + size, left:left + size] = False
        assert (img[outside] == 200).all()
        places.append((int(top), int(left)))
    return places


def test_cutout_puts_one_square_of_the_fill_colour_in_each_training_image():
    """data.cutout: one size x size square of the fill colour per image, wholly inside, at places that
    differ between images and cover every row and column offset; the same seed gives the same squares."""
    x = np.full((64, 9, 7, 3), 200, np.uint8)
    fill = np.array([10, 20, 30], np.uint8)

    def squares(seed, start_step=0, batches=4):
        ds, _ = train_dataset(x, np.zeros(64, int), 2, 32, seed=seed, cutout_size=4, cutout_fill=fill,
                              start_step=start_step)
        return _fill_squares(np.concatenate([bx.numpy() for bx, _ in ds.take(batches)]), fill, 4)

    a = squares(0)
    assert {t for t, _ in a} == set(range(6)) and {left for _, left in a} == set(range(4))  # 9 - 4 + 1, 7 - 4 + 1
    assert squares(0) == a and squares(1) != a
    assert squares(0, start_step=3, batches=1) == a[96:]  # a resumed stream goes on with the same squares
    largest = cutout(tf.constant(x[:8]), tf.constant([0, 0], tf.int64), 7, fill).numpy()  # 7: the image's width
    assert all(left == 0 and top in range(3) for top, left in _fill_squares(largest, fill, 7))


def test_normalization_statistics_match_the_float_computation():
    """image_info counts each channel's pixel values instead of copying the set to float64; same figures."""
    from bigml_cli.data.base import image_info

    rng = np.random.default_rng(0)
    for shape in ((500, 8, 8, 1), (64, 16, 16, 3)):
        x = rng.normal(120, 50, shape).clip(0, 255).astype(np.uint8)
        x[..., 0] = np.minimum(x[..., 0], 90)  # channels that differ
        flat = x.reshape(-1, shape[-1]).astype(np.float64) / 255.0
        info = image_info(x)
        np.testing.assert_allclose(info["mean"], flat.mean(axis=0), atol=6e-7)
        np.testing.assert_allclose(info["std"], flat.std(axis=0), atol=6e-7)
    assert image_info(np.full((4, 2, 2, 3), 7, np.uint8))["std"] == [1e-3] * 3  # flat channels are floored


def test_csv_rows_are_named_by_the_line_they_start_on(tmp_path):
    """Blank lines and a quoted cell spanning lines do not shift the line numbers that name rows."""
    from bigml_cli.data.table import read_table

    path = tmp_path / "notes.csv"
    path.write_text('a,b\n1,x\n\n2,"two\nlines"\n3,y\n\n4\n')
    with pytest.raises(UserError, match="notes.csv line 8 has 1 fields but the header has 2"):
        read_table(path)
    path.write_text('a,b\n1,x\n\n2,"two\nlines"\n3,y\n')
    header, rows, lines, _ = read_table(path)
    assert header == ["a", "b"] and [r[0] for r in rows] == ["1", "2", "3"] and lines == [2, 4, 6]
