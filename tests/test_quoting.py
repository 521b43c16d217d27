"""Any value survives quoting through a real sh: no breakage, no injection."""

import subprocess

from hypothesis import given, settings, strategies as st

from fabfile.shell import q

# NUL cannot travel in a command line at all; everything else must round-trip.
shell_text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(shell_text)
def test_any_string_round_trips_through_sh(value):
    done = subprocess.run(["sh", "-c", f"printf '%s' {q(value)}"], capture_output=True)
    assert done.stdout.decode("utf-8", "surrogateescape") == value


def test_nasty_values_do_not_inject(tmp_path):
    victim = tmp_path / "victim"
    for value in [f"x; touch {victim}", f"$(touch {victim})", f"`touch {victim}`", f"a\ntouch {victim}", "it's \"quoted\""]:
        done = subprocess.run(["sh", "-c", f"printf '%s' {q(value)}"], capture_output=True, text=True)
        assert done.stdout == value
    assert not victim.exists()
