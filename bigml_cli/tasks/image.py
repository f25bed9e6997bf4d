"""Image classification: uint8 images in, class probabilities out."""

from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from bigml_cli.data.base import read_many
from bigml_cli.data.images import (IMAGE_SUFFIXES, UnreadableImage, read_folder, read_image, unreadable_listing,
                                   unreadable_notes)
from bigml_cli.errors import UserError
from bigml_cli.tasks.base import Classifier, register

BYTES_SIGNATURE = "serving_bytes"  # the SavedModel's second signature: encoded image files in (TF Serving's b64)


@register
class ImageClassification(Classifier):
    kind = "image"
    xla = True
    export_formats = ("savedmodel", "onnx", "litert")
    takes = "images"
    input_suffixes = IMAGE_SUFFIXES + (".npy",)
    example_files = "images"

    def model_inputs(self, info: dict) -> tuple:
        inputs = keras.Input(shape=tuple(info["shape"]), dtype="uint8", name="image")
        x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
        x = layers.Normalization(mean=info["mean"], variance=np.square(info["std"]).tolist(),
                                 name="normalize")(x)  # (batch, height, width, channels)
        return inputs, x

    def prepare_model(self, model: keras.Model, ds: Any) -> None:
        from bigml_cli.models import adapt_to_data

        adapt_to_data(model, ds.x_train)  # e.g. the CNN's patch-whitening stem

    def serving_model(self, model: keras.Model, t: Any) -> keras.Model:
        from bigml_cli.models import with_test_time_augmentation

        if t.test_time_flip or t.test_time_translate:
            return with_test_time_augmentation(model, flip=t.test_time_flip, translate=t.test_time_translate)
        return model

    def check(self, ds: Any, cfg: Any) -> None:
        cutout = cfg.data.cutout
        side = min(ds.input_info["shape"][:2])
        if cutout > side:
            raise UserError(f"data.cutout={cutout} is larger than {ds.name}'s {side}-pixel images; set it to at "
                            f"most {side} (airbench96 uses 12 on CIFAR's 32)")

    def cutout_fill(self, ds: Any) -> list:
        return [round(255 * m) for m in ds.input_info["mean"]]  # the training images' mean colour

    def sizes(self, ds: Any) -> str:  # folders pick their size; say which
        return super().sizes(ds) + ", {}x{}x{} images".format(*ds.input_info["shape"])

    def sample_writer(self, ds: Any) -> Callable:
        from PIL import Image

        def write(x: np.ndarray, stem: Path) -> Path:
            path = stem.with_suffix(".png")
            Image.fromarray(np.asarray(x[..., 0] if x.shape[-1] == 1 else x, np.uint8)).save(path)
            return path
        return write

    def read_labelled_folder(self, folder: Path, info: dict) -> tuple:
        names, x, idx, inputs, unreadable = read_folder(folder, info["shape"][:2], info["shape"][2])
        return (np.stack(x) if x else None), [names[i] for i in idx], inputs, unreadable_notes(unreadable)

    def read_inputs(self, files: list, info: dict, from_files: bool) -> tuple:
        """PNG/JPEG files of any size (resized), and .npy arrays; an unreadable image found in a folder is left
        out and named in the notes, one named on its own is an error."""
        from bigml_cli.predict import expand_folders, read_npy, require_files

        files, in_folders = expand_folders(files, self.input_suffixes)
        require_files(files, from_files, self.takes)
        shape = info["shape"]

        def read(f):
            if str(f).lower().endswith(".npy"):
                return read_npy(f, shape)
            try:
                return read_image(f, size=shape[:2], channels=shape[2])[None]
            except UnreadableImage as e:
                if str(f) not in in_folders:
                    raise
                return e

        names, images, unreadable = [], [], []
        for f, batch in zip(files, read_many(read, files, "images")):
            if isinstance(batch, UnreadableImage):
                unreadable.append(f"{batch.path} ({batch.reason})")
                continue
            names += [f] if len(batch) == 1 else [f"{f}[{i}]" for i in range(len(batch))]
            images += list(batch)
        if not images:
            raise UserError(f"none of the inputs is a readable image ({unreadable_listing(unreadable)}); give PNG "
                            "or JPEG files")
        return names, np.stack(images), unreadable_notes(unreadable)

    def input_signature(self, info: dict) -> list:
        return [tf.TensorSpec((None, *info["shape"]), tf.uint8, name="image")]

    def add_endpoints(self, archive: Any, model: keras.Model, info: dict) -> None:
        """The image files themselves, any size: what a web client has to send."""
        archive.add_endpoint(
            BYTES_SIGNATURE,
            lambda image_bytes: {"probabilities": model(decode_images(image_bytes, info["shape"]), training=False)},
            input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])

    def extra_checks(self, runner: Callable, x: Any, expected: np.ndarray, what: str, fmt: str) -> dict:
        """The SavedModel's bytes signature on the same images, sent as PNG files."""
        from bigml_cli.export import TOLERANCE, ExportMismatch

        if fmt != "savedmodel":
            return {}
        serve = runner.signatures[BYTES_SIGNATURE]
        n = min(len(x), 64)
        got = serve(image_bytes=tf.constant([png_bytes(image) for image in x[:n]]))["probabilities"].numpy()
        diff = float(np.abs(got - expected[:n]).max())
        if diff > TOLERANCE:
            raise ExportMismatch(f"{what} on PNG files ({BYTES_SIGNATURE}): max |diff| {diff:.2e}; the export "
                                 "was removed")
        return {"bytes_max_abs_diff": diff, "bytes_checked_examples": n}

    def random_inputs(self, info: dict, n: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, (n, *info["shape"]), dtype=np.uint8)


def decode_images(image_bytes: tf.Tensor, shape: list) -> tf.Tensor:
    """Encoded PNG, JPEG, GIF or BMP files (a string per image) -> a uint8 batch of `shape` (H, W, C): decoded
    to C channels and resized with an antialiased bilinear filter, as `bigml predict` reads image files."""
    h, w, c = shape

    def one(data):
        image = tf.io.decode_image(data, channels=c, expand_animations=False)
        image = tf.image.resize(image, (h, w), method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    return tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec((h, w, c), tf.uint8))


def png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()

