"""A brat corpus as a Hugging Face dataset: see ruijin_ner.py."""
