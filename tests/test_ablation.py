"""train/ablation.py: which models each table trains, runs shared between tables, and mean ± std tables."""

import json

import numpy as np
import pytest
from tiny_m5product import trained_tiny_models

from train import ablation
from train.ablation import DEFAULT, METRICS, Run, clean_reference, parse_args, rows_of, table_rows
from train.components import load_split


def test_table3_paper_protocol_pretrains_one_model_per_modality_set():
    rows = table_rows("3", "paper")
    assert [row.label for row in rows] == ["Text", "+Image", "+Table", "+Video", "+Audio"]
    assert [len(row.run.modalities) for row in rows] == [1, 2, 3, 4, 5]
    assert rows[1].run.modalities == ("text", "image") and rows[2].run.modalities == (
        "text",
        "table",
        "image",
    )
    assert all(row.run.modalities == row.evaluate_on for row in rows)  # each scored on what it learned from
    assert len({row.run for row in rows}) == 5 and rows[-1].run == DEFAULT


def test_table3_leave_out_protocol_is_one_model_with_modalities_left_out():
    rows = table_rows("3", "leave_out")
    assert {row.run for row in rows} == {DEFAULT}
    assert [row.evaluate_on for row in rows] == [r.evaluate_on for r in table_rows("3", "paper")]


def test_each_table_varies_one_setting_against_the_shared_default():
    six = {row.label: row.run for row in table_rows("6", "paper")}
    assert six["IMCL + PRE"] == DEFAULT
    assert {six[label].overrides for label in ("neither", "IMCL", "PRE")} == {
        "simcl_weighting=none",
        "simcl_weighting=contrastive",
        "simcl_weighting=masked",
    }
    seven = {row.label: row.run for row in table_rows("7", "paper")}
    assert seven == {"MLM": Run(overrides="table_masking=token"), "MEM": DEFAULT}
    eight = {row.label: row.run for row in table_rows("8", "paper")}
    assert eight["T/Tab"] == DEFAULT and eight["T+Tab"].pretrain_options == ("--table_in_caption",)
    noisy = {row.label: row.run for row in table_rows("noisy", "paper")}
    assert {run.data for run in noisy.values()} == {"noisy_table"}
    assert {run.modalities for run in noisy.values()} == {("text", "table", "image")}
    assert noisy["no SIMCL"].overrides == "simcl_weighting=none" and noisy["SIMCL"].overrides == ""
    noisy_audio = {row.run for row in table_rows("noisy", "paper", noisy_modality="audio")}
    assert {run.data for run in noisy_audio} == {"noisy_audio"}  # its own sample, so its own runs
    assert {run.modalities for run in noisy_audio} == {("text", "table", "image", "audio")}
    with pytest.raises(ValueError, match="unknown table '9'"):
        table_rows("9", "paper")


def test_shared_rows_train_once_and_slugs_tell_runs_apart():
    args = parse_args(["--tables", "3,6,7,8,noisy"])
    runs = list(dict.fromkeys(row.run for row in rows_of(args)))
    assert len(runs) == 5 + 3 + 1 + 1 + 2  # the all-modality default is shared by Tables 3, 6, 7 and 8
    assert len({run.slug for run in runs}) == len(runs)
    assert sum(row.run == DEFAULT for row in rows_of(args)) == 4


def test_modalities_option_moves_tables_6_7_8_onto_a_subset_shared_with_table_3():
    args = parse_args(["--tables", "3,6,7,8", "--modalities", "image, text,table"])
    assert args.modalities == ("text", "table", "image")  # the canonical order, whatever the spelling
    rows = rows_of(args)
    assert all(row.run.modalities == row.evaluate_on == args.modalities for row in rows if row.table != "3")
    plus_table = next(row.run for row in rows if row.label == "+Table")
    assert sum(row.run == plus_table for row in rows) == 4  # Table 3's +Table row is 6, 7 and 8's default
    assert {row.run.overrides for row in rows if row.table == "7"} == {"table_masking=token", ""}
    with pytest.raises(SystemExit):
        parse_args(["--modalities", "text,smell"])


def test_rows_filter_keeps_the_named_rows_only():
    args = parse_args(["--tables", "6,noisy", "--rows", "neither; SIMCL"])
    assert [(row.table, row.label) for row in rows_of(args)] == [("6", "neither"), ("noisy", "SIMCL")]


def fake_results(run: Run, seed: int) -> dict:
    """An evaluation's results.json whose scores encode the run and the seed."""
    from train.evaluation import combination_name

    base = float(len(run.modalities) * 10 + seed + (0.5 if run.overrides else 0.0))
    entry = {"linear_probe_accuracy": base, "coarse": {metric: base + i for i, metric in enumerate(METRICS)}}
    names = {combination_name(run.modalities[:count]) for count in range(1, len(run.modalities) + 1)}
    names |= {combination_name(row.evaluate_on) for row in table_rows("3", "paper")}
    return {"pretrained": dict.fromkeys(names, entry)}


@pytest.fixture
def fake_runs(tmp_path, monkeypatch):
    """main() without training: prepare_data and run_one replaced; returns the (run, seed) calls."""
    calls = []

    def run_one(run, seed, data, root, args, threads):
        calls.append((run, seed))
        path = tmp_path / f"{run.slug}_{seed}.json"
        path.write_text(json.dumps(fake_results(run, seed)))
        return path

    monkeypatch.setattr(ablation, "prepare_data", lambda root, kind, size: tmp_path / kind)
    monkeypatch.setattr(ablation, "run_one", run_one)
    return calls


def test_main_trains_each_recipe_and_seed_once_and_reports_mean_and_std(tmp_path, fake_runs):
    ablation.main(["--output_root", str(tmp_path), "--tables", "3,6", "--seeds", "0,1,2", "--jobs", "2"])

    assert len(fake_runs) == len(set(fake_runs)) == (5 + 3) * 3
    report = json.loads((tmp_path / "ablation.json").read_text())
    text_row = report["scores"]["3"]["Text"]
    assert text_row["Accuracy"] == [10.0, 11.0, 12.0] and text_row["mAP@10"] == [12.0, 13.0, 14.0]
    assert report["scores"]["6"]["neither"]["Accuracy"] == [50.5, 51.5, 52.5]
    markdown = (tmp_path / "ablation.md").read_text()
    assert "| Text | 11.00 ± 1.00 | 11.00 ± 1.00 |" in markdown  # sample std (ddof 1)
    assert "one model pretrained per modality set" in markdown and "| IMCL + PRE | 51.00 ± 1.00 |" in markdown
    assert "Every run pretrained with" not in markdown


def test_the_report_names_the_options_every_run_was_pretrained_with(tmp_path, fake_runs):
    options = ["--config_overrides", "num_encoder_layers=6", "--pretrain_args=--text_encoder none"]
    ablation.main(["--output_root", str(tmp_path), "--tables", "8", "--seeds", "0", *options])

    first_line = (tmp_path / "ablation.md").read_text().splitlines()[0]
    assert first_line.endswith(
        "Every run pretrained with `--config_overrides num_encoder_layers=6`"
        " and `--pretrain_args --text_encoder none`."
    )


def test_noisy_tables_list_the_weights_of_each_group_and_the_ceilings_of_any_weighting(
    tmp_path, fake_runs, monkeypatch
):
    calls = []

    def noisy_diagnostics(model_dir, data_dir, raw_dir, modalities, noisy_modality, clean_data_dir):
        run = model_dir.parent.name
        calls.append((run, data_dir.name, raw_dir.name, modalities, noisy_modality, clean_data_dir.name))
        unrelated = 1.0 if "simcl_weighting_none" in run else 0.6
        clean_sample = 5.0 if run.startswith("clean") else 0.0
        return {
            "unrelated": {"pairs with noisy": unrelated, "other pairs": 1.1, "listings": 7},
            "own": {"pairs with noisy": 1.0, "other pairs": 1.0, "listings": 9},
            "all": {"mAP@1": 30.0 + clean_sample, "mAP@10": 31.0, "Prec@10": 20.0},
            "oracle": {"mAP@1": 40.0, "mAP@10": 41.0, "Prec@10": 30.0},
            "left out": {"mAP@1": 20.0, "mAP@10": 21.0, "Prec@10": 10.0},
            "clean listings": {"mAP@1": 50.0 + clean_sample, "mAP@10": 51.0, "Prec@10": 35.0},
        }

    monkeypatch.setattr(ablation, "noisy_diagnostics", noisy_diagnostics)
    argv = [
        "--output_root",
        str(tmp_path),
        "--tables",
        "noisy",
        "--seeds",
        "0,1",
        "--noisy_modality",
        "image",
    ]
    ablation.main(argv)
    # the two noisy rows and the unweighted recipe trained on the clean sample, all scored on both samples
    runs = {
        "noisy_image__te-ta-im",
        "noisy_image__te-ta-im__simcl_weighting_none",
        "clean__te-ta-im__simcl_weighting_none",
    }
    scored = {
        (run, "noisy_image", "sample_noisy_image_raw", ("text", "table", "image"), "image", "clean")
        for run in runs
    }
    assert {(run.rsplit("__seed", 1)[0], *rest) for run, *rest in calls} == scored
    assert {(run.slug, seed) for run, seed in fake_runs} == {(run, seed) for run in runs for seed in (0, 1)}
    markdown = (tmp_path / "ablation.md").read_text()
    assert "**Noisy image (half of the listings show another product's) — retrieval**" in markdown
    assert "| no SIMCL, clean sample |" not in markdown.split("S's mean pair weight")[0]  # not a noisy run
    assert "| SIMCL, unrelated image | 7 | 0.60 ± 0.00 | 1.10 ± 0.00 |" in markdown
    assert "| no SIMCL, own image | 9 | 1.00 ± 0.00 | 1.00 ± 0.00 |" in markdown
    assert "| SIMCL | oracle | 40.00 ± 0.00 | 41.00 ± 0.00 | 30.00 ± 0.00 |" in markdown
    assert "| no SIMCL | left out | 20.00 ± 0.00 | 21.00 ± 0.00 | 10.00 ± 0.00 |" in markdown
    assert "| no SIMCL | all | 30.00 ± 0.00 | 31.00 ± 0.00 | 20.00 ± 0.00 |" in markdown
    assert (
        "| no SIMCL, clean sample | clean listings | 55.00 ± 0.00 | 51.00 ± 0.00 | 35.00 ± 0.00 |" in markdown
    )
    assert "| no SIMCL, clean sample | all | 35.00 ± 0.00 |" in markdown


def test_noisy_fraction_names_its_own_sample_and_runs(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(ablation.subprocess, "run", lambda command, **kwargs: commands.append(command))
    args = parse_args(["--tables", "noisy", "--noisy_modality", "audio", "--noisy_fraction", "0.8"])
    assert {row.run.data for row in rows_of(args)} == {"noisy_audio_0.8"}
    ablation.prepare_data(tmp_path, "noisy_audio_0.8", "tiny")
    ablation.prepare_data(tmp_path, "noisy_table", "tiny")
    generate = [command for command in commands if "dataset_script.generate_sample" in command]
    assert [command[command.index("--noisy_modality") :] for command in generate] == [
        ["--noisy_modality", "audio", "--noisy_fraction", "0.8"],
        ["--noisy_modality", "table", "--noisy_fraction", "0.5"],
    ]
    assert ablation.TITLES["noisy"].format(modality="audio", share="80%").startswith("Noisy audio (80% of")


def test_runs_with_other_overrides_or_options_get_folders_of_their_own(tmp_path):
    plain = parse_args([])
    other = parse_args(["--config_overrides", "num_encoder_layers=6", "--pretrain_args=--table_in_caption"])
    run = Run(modalities=("text", "table", "image"), overrides="table_masking=token")
    assert ablation.run_folder(tmp_path, run, 1, plain) == tmp_path / "runs" / f"{run.slug}__seed1"
    assert ablation.run_folder(tmp_path, run, 1, other).name == (
        "clean__te-ta-im__num_encoder_layers_6+table_masking_token__table_in_caption__seed1"
    )
    by_path = [parse_args([f"--pretrain_args=--text_encoder none --tokenizer {p}/vocab"]) for p in "ab"]
    folders = [ablation.run_folder(tmp_path, run, 1, args) for args in by_path]
    assert [folder.parent for folder in folders] == [tmp_path / "runs"] * 2  # slashes nest no folders
    assert folders[0] != folders[1]  # paths that end alike still train apart
    assert folders[0].name.startswith(f"{run.slug}__text_encoder_none_tokenizer_vocab-")
    by_value = [parse_args([f"--config_overrides=num_fusion_layers=1,tokenizer_file={p}/x"]) for p in "ab"]
    folders = [ablation.run_folder(tmp_path, run, 1, args) for args in by_value]
    assert [folder.parent for folder in folders] == [tmp_path / "runs"] * 2 and folders[0] != folders[1]
    assert folders[0].name.startswith("clean__te-ta-im__num_fusion_layers_1+tokenizer_file_x-")
    signed = Run(modalities=("text",), overrides="temperature=-1").slug  # a value's dashes are kept
    assert (
        signed.endswith("__temperature_-1")
        and signed != Run(modalities=("text",), overrides="temperature=1").slug
    )
    assert ablation.sample_folders(tmp_path, "clean", "default") == (
        tmp_path / "sample_clean_raw",
        tmp_path / "m5product_clean",
    )
    assert (
        ablation.sample_folders(tmp_path, "noisy_table", "tiny")[1] == tmp_path / "m5product_noisy_table_tiny"
    )


def test_a_run_trained_with_other_settings_is_never_resumed_or_scored(tmp_path, capsys):
    folder = tmp_path / "runs" / "clean__te__seed0"
    ablation.check_run_settings(folder, parse_args(["--pretrain_epochs", "4"]))
    recorded = json.loads((folder / "run_settings.json").read_text())
    assert (
        recorded["pretrain_epochs"] == 4 and recorded["size"] == "default" and recorded["max_steps"] is None
    )
    ablation.check_run_settings(folder, parse_args(["--pretrain_epochs", "4"]))  # same settings: resumes
    with pytest.raises(SystemExit, match=r"clean__te__seed0 was trained with max_steps=None \(now 2\)"):
        ablation.check_run_settings(folder, parse_args(["--max_steps", "2"]))
    unrecorded = tmp_path / "runs" / "clean__ta__seed0"
    (unrecorded / "pretrain").mkdir(parents=True)
    with pytest.raises(SystemExit, match="clean__ta__seed0 holds a pretraining without a record"):
        ablation.check_run_settings(unrecorded, parse_args([]))


def test_main_refuses_a_mismatched_run_before_training_any(tmp_path, fake_runs, monkeypatch):
    prepared = []
    monkeypatch.setattr(ablation, "prepare_data", lambda root, kind, size: prepared.append(kind))
    args = ["--output_root", str(tmp_path), "--tables", "6", "--seeds", "0,1"]
    (tmp_path / "runs").mkdir()
    stale = ablation.run_folder(tmp_path, DEFAULT, 1, parse_args(args))  # the last job of the command
    ablation.check_run_settings(stale, parse_args([*args, "--batch_size", "8"]))
    with pytest.raises(SystemExit, match="batch_size=8 \\(now 32\\)"):
        ablation.main(args)
    assert fake_runs == [] and prepared == []  # not even the sample generated


def test_retrieval_ceilings_leave_the_noisy_modality_out_of_exactly_the_flagged_listings():
    # queries q0 (label a), q1 (label b); gallery g0 (a), g1 (b). q0's noisy modality points it at b; without
    # it, it points at a. g1 is also noisy, but its embedding without the modality points at a.
    a, b = [1.0, 0.0], [0.0, 1.0]
    embeds = np.array([b, b, a, b])
    without = np.array([a, b, a, a])
    ids, labels = ["q0", "q1", "g0", "g1"], ["a", "b", "a", "b"]
    oracle_only_q0 = ablation.retrieval_ceilings(
        embeds, without, np.array([1, 0, 0, 0], bool), ids, labels, 2
    )
    assert oracle_only_q0["oracle"]["mAP@1"] == 100.0  # q0 now finds g0, q1 still finds g1
    assert oracle_only_q0["left out"]["mAP@1"] == 50.0  # every listing without it: g1 moves to a, q1 misses
    as_trained = ablation.retrieval_ceilings(embeds, without, np.zeros(4, bool), ids, labels, 2)
    assert as_trained["oracle"]["mAP@1"] == 50.0  # nothing flagged: the embeddings as trained, q0 misses
    assert oracle_only_q0["all"] == as_trained["all"] == as_trained["oracle"]


def test_run_config_overrides_join_the_rows_own(tmp_path, monkeypatch, capsys):
    commands = []
    monkeypatch.setattr(ablation.subprocess, "run", lambda command, **kwargs: commands.append(command))
    args = parse_args(["--tables", "noisy", "--config_overrides", "alignment=relative"])
    rows = {row.label: row.run for row in rows_of(args)}
    for run in rows.values():
        ablation.run_one(run, 0, tmp_path / "data", tmp_path, args, threads=1)
    pretrain = [command for command in commands if "train/pretrain.py" in command]
    overrides = [command[command.index("--config_overrides") + 1] for command in pretrain]
    assert [command.count("--config_overrides") for command in pretrain] == [1, 1]
    assert sum("train/evaluation.py" in command for command in commands) == 2
    (reference,) = clean_reference(args)  # scored by the noisy diagnostics only: pretrained, not evaluated
    assert ablation.run_one(reference.run, 0, tmp_path / "data", tmp_path, args, threads=1) is None
    assert "train/pretrain.py" in commands[-1] and sum("train/evaluation.py" in c for c in commands) == 2
    assert overrides == ["alignment=relative,simcl_weighting=none", "alignment=relative"]
    with pytest.raises(SystemExit):  # pretrain.py would keep only the last of two --config_overrides
        parse_args(["--pretrain_args=--config_overrides video_frame_encoder=patches"])
    assert "pass config overrides as --config_overrides (joined" in capsys.readouterr().err


def test_paper_objective_runs_apart_with_the_papers_losses_alone(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(ablation.subprocess, "run", lambda command, **kwargs: commands.append(command))
    ours, paper = (
        parse_args(["--tables", "6,noisy", "--objective", objective]) for objective in ("ours", "paper")
    )
    runs = {
        run for args in (ours, paper) for run in (row.run for row in [*rows_of(args), *clean_reference(args)])
    }
    assert len(runs) == 2 * (4 + 2 + 1)  # every recipe twice, never one folder for both objectives
    assert all(("__paper_objective" in run.slug) == (run.objective == "paper") for run in runs)
    for run in (row.run for row in rows_of(paper) if row.label in ("neither", "SIMCL")):
        ablation.run_one(run, 0, tmp_path / "data", tmp_path, paper, threads=1)
    overrides = [
        command[command.index("--config_overrides") + 1]
        for command in commands
        if "train/pretrain.py" in command
    ]
    assert overrides == [
        "subset_loss_weight=0,distillation_loss_weight=0,simcl_weighting=none",
        "subset_loss_weight=0,distillation_loss_weight=0",
    ]


@pytest.mark.parametrize(
    "options, fusion",
    [
        (["--objective", "paper"], "mean"),  # the paper's fusion
        (["--objective", "ours"], "fitted"),
        (["--objective", "paper", "--modality_weights", "fitted"], "fitted"),
        (["--modality_weights", "mean"], "mean"),
    ],
)
def test_modality_weights_are_the_plain_mean_under_the_papers_objective(
    tmp_path, monkeypatch, options, fusion
):
    commands = []
    monkeypatch.setattr(ablation.subprocess, "run", lambda command, **kwargs: commands.append(command))
    args = parse_args(["--tables", "6", *options])
    assert args.modality_weights == fusion
    ablation.run_one(rows_of(args)[0].run, 0, tmp_path / "data", tmp_path, args, threads=1)
    pretrain = next(command for command in commands if "train/pretrain.py" in command)
    assert ("--agreement_products" in pretrain) == (fusion == "mean")
    if fusion == "mean":
        assert pretrain[pretrain.index("--agreement_products") + 1] == "0"
    record = next(tmp_path.glob("runs/*/run_settings.json"))
    assert json.loads(record.read_text())["modality_weights"] == fusion  # never reused the other way
    record.write_text(
        json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "modality_weights"})
    )
    if fusion == "fitted":  # a run recorded before the option existed was fitted: reused
        ablation.check_run_settings(record.parent, args)
    else:
        with pytest.raises(SystemExit, match="modality_weights='fitted' \\(now 'mean'\\)"):
            ablation.check_run_settings(record.parent, args)


def test_noisy_diagnostics_on_a_real_model_scores_both_samples_and_counts_the_flagged_listings(
    tmp_path, tmp_path_factory
):
    data_dir, pretrained, _ = trained_tiny_models(tmp_path_factory)
    query = load_split(str(data_dir), "retrieval_coarse", "query")
    with_image = [
        item_id for item_id, image in zip(query["item_id"], query["image"], strict=True) if image is not None
    ]
    flagged = with_image[:3]
    (tmp_path / "sample_info.json").write_text(json.dumps({"noisy_items": {i: "elsewhere" for i in flagged}}))

    # the same converted sample as the noisy and as the clean one: scoring it both ways must agree
    report = ablation.noisy_diagnostics(pretrained, data_dir, tmp_path, ("text", "image"), "image", data_dir)
    assert report["unrelated"]["listings"] == len(flagged)
    assert report["clean listings"] == report["all"]
    assert set(report["all"]) == set(ablation.RETRIEVAL_COLUMNS)
    assert 0.0 < report["unrelated"]["pairs with noisy"] and np.isnan(report["unrelated"]["other pairs"])
