"""The dashboard's channel form follows the type registry: a bedrock channel added and tested from it."""
import json
import re

from app.models import Channel
from tests.support.clouds import AWS_KEY_ID, AWS_SECRET, FakeBedrock
from tests.support.constants import ADMIN_TOKEN, SECRETS_USED

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails, in CI) with the reason
    expect = None

SECRETS_USED.add(AWS_SECRET)


def test_a_bedrock_channel_from_the_form(tab, upstream):
    fake = FakeBedrock(session_token=None)
    upstream.set_default(fake)
    tab.sign_in(ADMIN_TOKEN)
    page = tab.goto("/dashboard/channels")
    expect(page.get_by_label("region")).to_be_hidden()
    page.get_by_label("Type").select_option("vertex")
    expect(page.get_by_label("project_id")).to_be_visible()
    expect(page.get_by_label("Upstream API key")).to_be_hidden()  # vertex takes credentials only

    page.get_by_label("Type").select_option("bedrock")
    expect(page.get_by_label("project_id")).to_be_hidden()
    page.get_by_label("Name", exact=True).fill("aws")
    page.get_by_label("region").fill("us-east-1")
    page.get_by_label("Base URL").fill(upstream.url)
    page.get_by_label("Credentials (JSON)").fill(json.dumps(
        {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET}))
    page.get_by_label("Models").fill("claude-sonnet-4-5")
    page.get_by_role("button", name="Add channel").click()

    row = page.locator("#channels-table tbody tr", has_text="aws")
    expect(row).to_contain_text("bedrock (us-east-1)")
    expect(row).to_contain_text("credentials set")
    expect(page.get_by_label("Credentials (JSON)")).to_have_value("")
    row.get_by_role("button", name="Test channel aws").click()
    expect(row.locator("output")).to_have_text(re.compile(r"^OK: status 200 in \d+ ms \(claude-sonnet-4-5\)$"))
    assert fake.calls and not fake.refusals

    row.get_by_role("button", name="Edit channel aws").click()  # credentials kept when left empty
    expect(page.get_by_label("region")).to_have_value("us-east-1")
    page.get_by_label("Priority").fill("3")
    page.get_by_role("button", name="Save changes").click()
    expect(row).to_contain_text("3 / 1")
    assert Channel.get().credentials_enc and Channel.get().options == {"region": "us-east-1"}
    page.reload()
    page.wait_for_load_state("networkidle")
    assert AWS_SECRET not in page.content()
