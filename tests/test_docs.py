"""The README documents every setting and every type mapping row the code knows."""

from pathlib import Path

from shared_code.settings import ENV_PREFIX, Settings
from shared_code.typemap import MAPPING_DOC

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_in_the_readme_table():
    missing = [ENV_PREFIX + name.upper() for name in Settings.model_fields if f"`{ENV_PREFIX}{name.upper()}`" not in README]
    assert not missing, f"add to the README settings table: {missing}"


def test_every_type_mapping_row_in_the_readme():
    missing = [pg for pg, _, _ in MAPPING_DOC if f"| {pg} |" not in README]
    assert not missing, f"add to the README type table: {missing}"
