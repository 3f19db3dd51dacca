import zlib

from hypothesis import given
from hypothesis import strategies as st

from dpp import keys


def test_generated_key_has_the_documented_format() -> None:
    key = keys.generate()
    head, random_part, checksum = key.rsplit("_", 2)[0], key.split("_")[2], key.split("_")[3]
    assert head == "dpp_live"
    assert len(random_part) == 32
    assert random_part.isalnum()
    assert checksum == f"{zlib.crc32(random_part.encode()) & 0xFFFFFFFF:08x}"
    assert keys.is_well_formed(key)
    assert keys.prefix(key) == key[:16]
    assert keys.prefix(key).startswith("dpp_live_")


def test_test_keys() -> None:
    assert keys.generate("test").startswith("dpp_test_")


@given(st.integers(min_value=0, max_value=31), st.sampled_from("0123456789abcdefABCDEFxyz"))
def test_any_single_change_of_the_random_part_breaks_the_checksum(position: int, char: str) -> None:
    key = "dpp_live_" + "A" * 32 + "_" + f"{zlib.crc32(b'A' * 32) & 0xFFFFFFFF:08x}"
    assert keys.is_well_formed(key)
    changed = key[: 9 + position] + char + key[10 + position :]
    assert keys.is_well_formed(changed) == (char == "A")


def test_malformed_keys() -> None:
    good = keys.generate()
    for bad in [
        "",
        "dpp_live_",
        good + "0",
        good.upper(),
        good.replace("dpp_live", "dpp_prod"),
        good[:-1] + "G",
    ]:
        assert not keys.is_well_formed(bad), bad


def test_hash_depends_on_pepper() -> None:
    key = keys.generate()
    assert keys.hash_key(key, "a") != keys.hash_key(key, "b")
    assert len(keys.hash_key(key, "a")) == 64
