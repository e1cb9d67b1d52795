"""predict.py end to end on tiny images and a tiny video, with a CCNet checkpoint of random weights."""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import networks
import predict
from dataset.cityscapes_labels import PALETTE
from dataset.datasets import IMG_MEAN, normalize
from networks.from_checkpoint import build_from_checkpoint, checkpoint_settings
from utils.errors import UserError, exit_on_user_error
from utils.inference import predict as predict_probs
from utils.visualize import TITLE_HEIGHT

HEIGHT, WIDTH = 32, 48


def random_image(seed):
    """uint8 (HEIGHT, WIDTH, 3) RGB noise over a few flat regions."""
    rng = np.random.default_rng(seed)
    image = np.repeat(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), 8, axis=0).repeat(8, axis=1)
    return np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)


def run_predict(argv):
    """predict.py's main on argv as the script runs it: its exit status (a UserError exits 1)."""
    return exit_on_user_error(predict.main)(predict.get_args_parser().parse_args(argv))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A CCNet (19 classes) snapshot as train.py writes it: a bare state_dict; gamma 1 so that the attention acts."""
    torch.manual_seed(0)
    model = networks.build_model("ccnet", 19, recurrence=2, norm_layer=nn.BatchNorm2d)
    model.head.cca.gamma.data.fill_(1.0)
    path = tmp_path_factory.mktemp("ckpt") / "CS_scenes_1.pth"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def folder_run(checkpoint, tmp_path_factory):
    """predict.py on a folder of two images (one in a subfolder), a corrupt .png and a text file."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "sub").mkdir()
    Image.fromarray(random_image(1)).save(folder / "a.png")
    Image.fromarray(random_image(2)).save(folder / "sub" / "b.jpg", quality=95)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not an input")
    out = tmp_path_factory.mktemp("out")
    status = run_predict(["--restore-from", checkpoint, "--output", str(out), str(folder), "--attention", "5,7",
                          "--attention", "31,0"])
    return {"folder": folder, "out": out, "status": status}


def test_folder_skips_the_unreadable_file_writes_the_rest_and_exits_1(folder_run, capsys):
    out = folder_run["out"]
    assert folder_run["status"] == 1
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "a.png", "a_attention.png", "a_overlay.jpg", "sub/b.png", "sub/b_attention.png", "sub/b_overlay.jpg"]
    png = Image.open(out / "a.png")
    assert png.mode == "P" and png.size == (WIDTH, HEIGHT)
    assert np.array_equal(np.array(png.getpalette()[:57]).reshape(19, 3), PALETTE)
    assert Image.open(out / "a_overlay.jpg").size == (WIDTH, HEIGHT)
    figure = Image.open(out / "a_attention.png")
    assert figure.size == (3 * WIDTH, 2 * (HEIGHT + TITLE_HEIGHT))  # 2 points x (input, pass 1, pass 2)


def test_saved_train_ids_are_those_of_the_shared_inference(folder_run, checkpoint):
    network, _ = build_from_checkpoint(checkpoint)
    bgr = np.array(Image.open(folder_run["folder"] / "a.png"))[..., ::-1]
    images = torch.from_numpy(normalize(bgr, np.asarray(IMG_MEAN))).unsqueeze(0)
    with torch.no_grad():
        expected = predict_probs(network, images).argmax(1)[0].numpy()
    assert np.array_equal(np.array(Image.open(folder_run["out"] / "a.png")), expected)


def test_a_rerun_overwrites_its_own_outputs_and_nothing_else(folder_run, checkpoint):
    out = folder_run["out"]
    first = np.array(Image.open(out / "a.png"))
    (out / "a.png").write_bytes(b"stale")
    (out / "mine.txt").write_text("keep me")
    assert run_predict(["--restore-from", checkpoint, "--output", str(out), str(folder_run["folder"] / "a.png")]) == 0
    assert np.array_equal(np.array(Image.open(out / "a.png")), first)
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "sub" / "b.png").exists() and (out / "a_attention.png").exists()


def test_grayscale_and_rgba_images_predict_as_their_rgb_and_a_video_gets_an_overlay(checkpoint, tmp_path):
    rgb = random_image(3)
    gray = rgb[..., 0]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((HEIGHT, WIDTH), 128, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([gray] * 3)).save(tmp_path / "gray3.png")
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (WIDTH, HEIGHT))
    for seed in (4, 5, 6):
        writer.write(random_image(seed))
    writer.release()
    out = tmp_path / "out"
    inputs = [str(tmp_path / f"{name}") for name in ("rgb.png", "rgba.png", "gray.png", "gray3.png", "clip.mp4")]
    assert run_predict(["--restore-from", checkpoint, "--output", str(out)] + inputs) == 0

    def ids(name):
        return np.array(Image.open(out / f"{name}.png"))

    assert np.array_equal(ids("rgba"), ids("rgb")) and np.array_equal(ids("gray"), ids("gray3"))
    video = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 3 and frames[0].shape == (HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("extra,message", [
    (["missing.png"], "input not found"),
    (["a.png", "sub/a.png"], "would both write"),
    (["a.png", "--num-classes", "5"], "does not fit the model"),
])
def test_a_missing_input_a_name_collision_or_an_unfit_checkpoint_stop_with_one_line(
        checkpoint, tmp_path, capsys, extra, message):
    (tmp_path / "sub").mkdir()
    for path in ("a.png", "sub/a.png"):
        Image.fromarray(random_image(7)).save(tmp_path / path)
    argv = ["--restore-from", checkpoint, "--output", str(tmp_path / "out")]
    argv += [str(tmp_path / e) if e.endswith(".png") else e for e in extra]
    with pytest.raises(SystemExit) as stop:
        run_predict(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_settings_are_the_flags_then_the_stored_arguments_then_the_classifier_shape():
    state = {"dsn.0.weight": torch.zeros(512, 1024, 3, 3), "dsn.4.weight": torch.zeros(7, 512, 1, 1),
             "dsn.4.bias": torch.zeros(7)}
    told = {"depth": 101, "dataset": None, "align_corners": None}  # no layer3 keys, no meta, 7 classes
    assert checkpoint_settings(state, state) == {"model": "ccnet", "num_classes": 7, "recurrence": 2,
                                                 "norm": "syncbn", **told}
    official = {"dsn.0.weight": torch.zeros(512, 1024, 3, 3), "dsn.3.weight": torch.zeros(7, 512, 1, 1)}
    assert checkpoint_settings(official, official)["norm"] == "inplace-abn"  # told by the classifier's key
    stored = {"model": state, "args": {"model": "pspnet", "num_classes": 9, "recurrence": 1, "batch_size": 8}}
    assert checkpoint_settings(stored, state) == {"model": "pspnet", "num_classes": 9, "recurrence": 1,
                                                  "norm": "syncbn", **told}
    assert checkpoint_settings(stored, state, "ccnet", None, 3) == {"model": "ccnet", "num_classes": 9,
                                                                    "recurrence": 3, "norm": "syncbn", **told}
    with pytest.raises(UserError, match="--num-classes"):
        checkpoint_settings({}, {})


def test_a_training_state_builds_the_network_it_was_trained_as(checkpoint, tmp_path):
    stored = tmp_path / "last.pth"
    torch.save({"model": torch.load(checkpoint), "args": {"model": "ccnet", "num_classes": 19, "recurrence": 1}},
               stored)
    network, settings = build_from_checkpoint(str(stored))
    assert settings == {"model": "ccnet", "num_classes": 19, "recurrence": 1, "norm": "syncbn", "depth": 101,
                        "dataset": "cityscapes", "align_corners": True}
    assert network.head.recurrence == 1


def test_inputs_skip_the_output_folder_and_collide_only_on_a_shared_output_file(tmp_path):
    for path in ("a.png", "a_attention.png", "clip.png", "clip.mp4", "folder/b.png", "folder/pred/b.png"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    assert predict.collect_inputs([str(tmp_path / "clip.png"), str(tmp_path / "clip.mp4")], "out") == [
        ("image", str(tmp_path / "clip.png"), "clip"), ("video", str(tmp_path / "clip.mp4"), "clip")]
    with pytest.raises(UserError, match="a_attention.png would both write out/a_attention.png"):
        predict.collect_inputs([str(tmp_path / "a.png"), str(tmp_path / "a_attention.png")], "out")
    folder = tmp_path / "folder"
    assert predict.collect_inputs([str(folder)], str(folder / "pred")) == [("image", str(folder / "b.png"), "b")]
