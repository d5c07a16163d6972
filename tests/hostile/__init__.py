"""The hostile-archive corpus, generated at test time (nothing here is committed
as a binary): `cases.all_cases()` builds every case, each with the text its
refusal must show. tests/test_hostile.py installs each through the CLI into
a real venv served by a real daemon and checks that nothing changed."""
