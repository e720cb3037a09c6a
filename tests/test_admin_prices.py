"""Admin API for prices: seeded list prices, PUT creates or replaces."""
from tests.support.app import assert_error


def test_seeded_prices(admin):
    data = {p["model"]: p for p in admin.get("/admin/prices").get_json()["data"]}
    assert data["claude-sonnet-4-5"] == {
        "model": "claude-sonnet-4-5", "input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_write_1h": 6.0,
        "cache_read": 0.3, "web_search_per_1k": 10.0,
        "long_context": {"threshold_tokens": 200000, "input": 6.0, "output": 22.5, "cache_write": 7.5,
                         "cache_write_1h": 12.0, "cache_read": 0.6}}
    assert data["claude-haiku-4-5"]["input"] == 1.0 and data["claude-opus-4-1"]["output"] == 75.0
    assert data["claude-3-5-haiku-20241022"]["cache_read"] == 0.08


def test_put_creates_then_replaces(admin):
    price = {"input": 0.075, "output": 0.3, "cache_write": 0.1, "cache_read": 0.0075}
    resp = admin.put("/admin/prices/my-model", json=price)
    assert resp.status_code == 201 and resp.get_json() == {
        "model": "my-model", **price, "cache_write_1h": 0.15, "web_search_per_1k": None, "long_context": None}
    resp = admin.put("/admin/prices/my-model", json={**price, "output": 1})
    assert resp.status_code == 200 and resp.get_json()["output"] == 1.0


def test_put_with_slash_in_model_name(admin):
    price = {"input": 1, "output": 2, "cache_write": 1, "cache_read": 0.1}
    assert admin.put("/admin/prices/org/model-1", json=price).get_json()["model"] == "org/model-1"


def test_put_validates(admin):
    assert_error(admin.put("/admin/prices/m", json={"input": 1}), 400, "invalid_request_error",
                 contains="output:")
    assert_error(admin.put("/admin/prices/m", json={"input": -1, "output": 1, "cache_write": 1,
                                                     "cache_read": 1}),
                 400, "invalid_request_error", contains="input:")
    assert not [p for p in admin.get("/admin/prices").get_json()["data"] if p["model"] == "m"]
