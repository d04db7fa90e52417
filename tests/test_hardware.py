"""Hardware profiles: every shipped profile validates; cost arithmetic; host detection; bad files."""

import pytest
from conftest import REPO

from bench.errors import BenchError
from bench.hardware.profiles import HOURS_PER_YEAR, Price, auto_profile, detect_host, get_profile, load_profiles

pytestmark = pytest.mark.fast


def test_every_shipped_profile_validates_and_spans_the_tiers():
    profiles = load_profiles(REPO / "hardware_profiles")
    assert {"laptop-4c-8g", "laptop-8c-16g", "rpi5-8g", "cloud-t4", "cloud-h100"} <= set(profiles)
    assert {p.device for p in profiles.values()} == {"cpu", "cuda"}
    for p in profiles.values():
        assert p.price is None or p.price.source, f"{p.id}: a price needs its source"


def test_purchase_price_amortizes_and_adds_electricity():
    price = Price(basis="purchase", purchase_usd=876, lifetime_years=1, power_watts=100, electricity_usd_per_kwh=0.2)
    assert price.hourly_usd() == pytest.approx(876 / HOURS_PER_YEAR + 0.1 * 0.2)
    assert Price(basis="purchase", purchase_usd=876).hourly_usd() is None  # missing lifetime: no guess
    assert Price(basis="on_demand", usd_per_hour=0.5).hourly_usd() == 0.5


def test_auto_profile_reflects_this_host():
    host = detect_host()
    p = auto_profile(host)
    assert 1 <= p.capacity.threads <= host.logical_cores
    assert p.capacity.ram_gb == pytest.approx(host.ram_bytes / 2**30)
    assert p.device == ("cuda" if host.gpus else "cpu")


def test_unknown_profile_lists_known(tmp_path):
    with pytest.raises(BenchError, match="known: auto, .*laptop-4c-8g"):
        get_profile("laptop-1c", REPO / "hardware_profiles", detect_host())


def test_malformed_profile_names_file_and_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("id: bad\nname: x\ncapacity:\n  threads: -1\n  ram_gb: 8\n")
    with pytest.raises(BenchError, match=r"bad.yaml:4: capacity.threads"):
        load_profiles(tmp_path)


def test_profile_id_must_match_file_name(tmp_path):
    (tmp_path / "a.yaml").write_text("id: b\nname: x\ncapacity: {threads: 1, ram_gb: 1}\n")
    with pytest.raises(BenchError, match="must match the file name"):
        load_profiles(tmp_path)
