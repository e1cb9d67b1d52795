"""Every script's --help: flags under headings, each help line saying its default."""
import argparse
import importlib

import pytest

SCRIPTS = ["train", "evaluate", "predict", "export_onnx", "check", "bench.bench_cca", "bench.bench_cca3d",
           "bench.bench_eval", "bench.bench_loader", "bench.bench_train", "bench.flops", "bench.gpu_suite",
           "bench.mmsegmentation_check", "dataset.synthetic", "dataset.make_lists"]
TRAIN_GROUPS = ["data", "model", "optimization", "checkpoints and resume", "validation", "logging",
                "speed and devices", "launchers"]


def shown_flags(parser):
    """[(group title, action)] of the flags --help lists (the help flag and hidden flags excluded)."""
    return [(group.title, action) for group in parser._action_groups for action in group._group_actions
            if action.option_strings and action.help is not argparse.SUPPRESS
            and not isinstance(action, argparse._HelpAction)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_sits_under_a_heading_and_says_its_default(script):
    parser = importlib.import_module(script).get_args_parser()
    formatter = parser._get_formatter()
    flags = shown_flags(parser)
    assert flags
    for title, action in flags:
        assert title not in ("options", "optional arguments"), f"{script} {action.option_strings[0]} has no heading"
        line = formatter._expand_help(action)
        assert "default" in line or line.endswith("(required)"), f"{script} {action.option_strings[0]}: {line!r}"


def test_train_help_lists_the_groups_in_order_with_defaults_as_typed():
    import train
    parser = train.get_args_parser()
    titles = [title for title, _ in shown_flags(parser)]
    assert list(dict.fromkeys(titles))[:len(TRAIN_GROUPS)] == TRAIN_GROUPS
    text = parser.format_help()
    assert "crop size HEIGHT,WIDTH (default: the dataset's, 769,769 for cityscapes)" in " ".join(text.split())
    assert "(default: 40000)" in text and "(default: false)" in text and "(default: off)" in text


def test_upstream_spellings_still_parse():
    import evaluate
    import train
    args = train.get_args_parser().parse_args(["--ohem", "1", "--local_rank", "3", "--random-mirror"])
    assert args.ohem is True and args.local_rank == 3 and args.random_mirror
    assert evaluate.get_args_parser().parse_args(["--whole", "Ture", "--Output", "x/"]).whole is True
