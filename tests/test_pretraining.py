"""pretrain_mlm.py and pretrain_embeddings.py: masked-LM pretraining then fine-tuning, skip-gram vectors for the
classic model's characters and bigrams, and train.py starting from either."""

import json
import random
import shutil
import sys
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoTokenizer

import pretrain_embeddings
import train
from brat_ner import cli
from conftest import TINY_BERT, run_script, small_training

# ----- pretrain_embeddings.py -----


def run_pretrain_embeddings(monkeypatch, *arguments):
    """pretrain_embeddings.py's command line, run in this process as ``python pretrain_embeddings.py`` runs it."""
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", ["pretrain_embeddings.py", *arguments])
        cli.run_main(pretrain_embeddings.main, "pretrain_embeddings.py")


@pytest.fixture(scope="module")
def classic_config(tmp_path_factory):
    """The tiny BERT config without transformer layers: a classic BiLSTM-CRF's encoder."""
    config = json.loads((TINY_BERT / "config.json").read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("classic") / "config.json"
    path.write_text(json.dumps({**config, "num_hidden_layers": 0}), encoding="utf-8")
    return path


def embedding_arguments(classic_config, output_dir, *extra):
    return ["--data_dir", "data/sample", "--encoder_config", str(classic_config), "--tokenizer_name", str(TINY_BERT),
            "--output_dir", str(output_dir), "--window_chars", "62", "--bigram_buckets", "401",
            "--bigram_embedding_size", "8", "--epochs", "2", "--workers", "1", *extra]


def test_ids_seen_in_the_same_contexts_get_similar_vectors():
    # Ids 5 and 6 always stand between 3 and 4, id 9 between 7 and 8, among sentences of other ids (10-99):
    # skip-gram makes 5 and 6 alike, 5 and 9 not; the table must hold each id's vector in that id's row for this
    # to show.
    generator = random.Random(0)
    sentences = [[3, 5, 4], [3, 6, 4], [7, 9, 8]] * 3000
    sentences += [generator.sample(range(10, 100), 8) for _ in range(3000)]
    args = SimpleNamespace(window=1, negative=5, epochs=5, workers=1, seed=0)
    table = pretrain_embeddings.skip_gram_table(sentences, rows=100, size=16, args=args)
    similarity = torch.nn.functional.cosine_similarity
    assert table.shape == (100, 16)
    assert similarity(table[5], table[6], dim=0) > 0.9 > 0.5 > similarity(table[5], table[9], dim=0)
    # Ids that never occur (0, 1, 2) get random vectors of the learnt vectors' scale, not zeros.
    unseen = table[:3]
    assert bool(torch.all(unseen.norm(dim=1) > 0)) and unseen.std() == pytest.approx(table[3:].std(), rel=0.5)


def test_train_starts_from_the_pretrained_embeddings(monkeypatch, tmp_path, classic_config):
    embeddings_dir = tmp_path / "embeddings"
    run_pretrain_embeddings(monkeypatch, *embedding_arguments(classic_config, embeddings_dir))
    tables = load_file(embeddings_dir / "model.safetensors")
    assert tables["bert.embeddings.word_embeddings.weight"].shape == (395, 64)
    assert tables["bigram_embeddings.weight"].shape == (401, 8)

    # train.py builds the model with exactly these tables; everything else is initialised as from scratch.
    model_args, data_args, _, _ = cli.parse_arguments(train.argument_parser(), [
        "--model_name_or_path", str(embeddings_dir), "--output_dir", str(tmp_path / "unused"),
        "--bigram_buckets", "401", "--bigram_embedding_size", "8", "--lstm_hidden_size", "16"])
    tokenizer = AutoTokenizer.from_pretrained(str(embeddings_dir))
    model = train.build_model(model_args, tokenizer, ["O", "B-Drug", "I-Drug"], data_args)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, tables["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(model.bigram_embeddings.weight, tables["bigram_embeddings.weight"])
    assert model.bert.config.num_hidden_layers == 0

    # And trains from the folder end to end.
    output_dir = tmp_path / "ner"
    run_script(small_training(output_dir, "--num_train_epochs", "1", "--bigram_buckets", "401",
                              "--bigram_embedding_size", "8", encoder=("--model_name_or_path", str(embeddings_dir))))
    assert (output_dir / "test_report.json").is_file()

    # Its model card names the folder as one, never as a Hub model, even once the folder is gone.
    shutil.rmtree(embeddings_dir)
    card_folder = tmp_path / "card"
    run_script(["push_to_hub.py", "--model_dir", str(output_dir), "--repo_id", "someone/classic-ner",
                "--dry_run", str(card_folder)])
    card = ModelCard.load(card_folder / "README.md")
    assert "base_model" not in card.data.to_dict()
    assert f"The embedding layer started from a local folder, `{embeddings_dir}`." in card.text


def test_a_finished_folder_is_kept_and_other_bigram_options_are_refused(monkeypatch, capsys, tmp_path,
                                                                        classic_config):
    embeddings_dir = tmp_path / "embeddings"
    arguments = embedding_arguments(classic_config, embeddings_dir)
    run_pretrain_embeddings(monkeypatch, *arguments)
    written = (embeddings_dir / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        run_pretrain_embeddings(monkeypatch, *arguments[:-4], "--seed", "3")  # another run into the same folder
    assert exit_info.value.code == 0 and "holds a finished run" in capsys.readouterr().out
    assert (embeddings_dir / "model.safetensors").read_bytes() == written

    model_args, data_args, _, _ = cli.parse_arguments(train.argument_parser(), [
        "--model_name_or_path", str(embeddings_dir), "--output_dir", str(tmp_path / "unused"),
        "--bigram_buckets", "0"])
    with pytest.raises(ValueError, match="holds bigram embeddings of 401 buckets x 8: give --bigram_buckets 401 "
                                         "--bigram_embedding_size 8"):
        train.build_model(model_args, AutoTokenizer.from_pretrained(str(TINY_BERT)), ["O"], data_args)


def test_pretraining_never_writes_into_its_text_or_a_users_folder(monkeypatch, capsys, tmp_path, classic_config):
    texts = tmp_path / "unlabelled"
    texts.mkdir()
    (texts / "1.txt").write_text("糖尿病患者口服二甲双胍。\n", encoding="utf-8")
    users = tmp_path / "notes"
    users.mkdir()
    (users / "config.json").write_text("{}", encoding="utf-8")
    refusals = {texts / "vectors": f"--output_dir {texts / 'vectors'} is inside the folder of --extra_text_dirs",
                users: f"--output_dir {users} holds a file that no run of this project wrote (config.json)"}
    for output_dir, message in refusals.items():
        with pytest.raises(SystemExit) as exit_info:
            run_pretrain_embeddings(monkeypatch, *embedding_arguments(classic_config, output_dir, "--extra_text_dirs",
                                                                      str(texts)))
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.startswith(f"pretrain_embeddings.py: {message}")
    assert sorted(path.name for path in texts.iterdir()) == ["1.txt"] and (users / "config.json").read_text() == "{}"


def test_the_recipe_without_its_embeddings_folder_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    # train.py's half of the CPU recipe run before pretrain_embeddings.py wrote the folder it starts from.
    missing = tmp_path / "cpu-recipe-embeddings-seed42"
    with monkeypatch.context() as patch, pytest.raises(SystemExit) as exit_info:
        patch.setattr(sys, "argv", ["train.py", "configs/cpu-recipe.json", "--model_name_or_path", str(missing),
                                    "--output_dir", str(tmp_path / "model")])
        cli.run_main(train.main, "train.py")
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and error
    message = error[-1]
    assert message.startswith(f"train.py: --model_name_or_path {missing}: no config.json there or on the Hub")
    assert not (tmp_path / "model").exists()


# ----- pretrain_mlm.py -----


def test_pretrain_mlm_then_fine_tune(tmp_path):
    # A vocabulary with a repeated line, as bert-base-chinese's: the largest id exceeds the distinct tokens.
    tokenizer_dir = tmp_path / "tokenizer"
    shutil.copytree(TINY_BERT, tokenizer_dir)
    vocab = (TINY_BERT / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (tokenizer_dir / "vocab.txt").write_text("\n".join(vocab[:-1] + ["[UNK]"] + vocab[-1:]) + "\n", encoding="utf-8")
    mlm_dir = tmp_path / "mlm"
    run_script(["pretrain_mlm.py", "--data_dir", "data/sample", "--encoder_config", str(TINY_BERT / "config.json"),
         "--tokenizer_name", str(tokenizer_dir), "--output_dir", str(mlm_dir), "--window_chars", "62",
         "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--use_cpu", "true"])
    assert (mlm_dir / "model.safetensors").is_file()
    output_dir = tmp_path / "ner"
    run_script(small_training(output_dir, "--num_train_epochs", "1", encoder=("--model_name_or_path", str(mlm_dir))))
    assert (output_dir / "test_report.json").is_file()


def test_masked_positions_head_gives_the_stock_masked_lm_loss():
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from brat_ner.pretraining import BertForMaskedLMOnMaskedPositions

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    ours = BertForMaskedLMOnMaskedPositions(config).eval()
    stock = BertForMaskedLM(config).eval()
    stock.load_state_dict(ours.state_dict())
    input_ids = torch.randint(5, 50, (3, 12))
    labels = torch.where(torch.rand(3, 12) < 0.3, input_ids, -100)
    labels[0, 0] = input_ids[0, 0]  # at least one masked position
    expected = stock(input_ids=input_ids, labels=labels).loss
    output = ours(input_ids=input_ids, labels=labels)
    torch.testing.assert_close(output.loss, expected)
    assert output.logits.shape == (int((labels != -100).sum()), 50)
    # A batch without masked positions contributes nothing (no NaN from an empty mean).
    assert ours(input_ids=input_ids, labels=torch.full_like(labels, -100)).loss.item() == 0.0
