"""``examples/tunnel_lifecycle.py`` runs against its embedded emulator and prints no PSK."""

from __future__ import annotations

from tests.test_examples import EXAMPLES, assert_only_ids, run_example


def test_tunnel_lifecycle_example() -> None:
    done = run_example("tunnel_lifecycle.py")

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "using the embedded emulator" in out
    assert "created site_a" in out
    assert "Cloudflare generated its PSK" in out
    assert "listed: site_a, site_b" in out
    assert out.count(": rotated\n") == 2
    assert "2/2 router PSKs match the API's" in out
    assert "deleted site_a" in out
    assert "deleted site_b" in out
    assert "1 tunnel(s) left" in out
    assert_only_ids(out + done.stderr)
    text = (EXAMPLES / "tunnel_lifecycle.py").read_text()
    assert text.startswith('"""')
    assert "emulator" in text.split('"""')[1]
