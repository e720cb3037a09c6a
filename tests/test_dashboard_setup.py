"""Without an admin token the dashboard explains how to set one, and the commands it shows work:
they print the token the operator must sign in with."""
import html
import re
import subprocess


def test_the_setup_page_commands_print_the_token_to_sign_in_with(env, tmp_path, make_app):
    app = make_app({k: v for k, v in env.items() if k != "OCTORELAY_ADMIN_TOKEN"})
    page = app.test_client().get("/dashboard/").get_data(as_text=True)
    commands = html.unescape(re.search(r"<pre>(.*?)</pre>", page, re.S).group(1)).splitlines()
    assert commands[-1] == "octorelay up"
    script = "\n".join(commands[:-1]) + '\nprintf "%s" "$OCTORELAY_ADMIN_TOKEN" > exported\n'
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip()
    assert len(printed) >= 32 and printed == (tmp_path / "exported").read_text()  # what `up` would be given
