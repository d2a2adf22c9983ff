"""Token files: parsing, re-reading on change at most once per interval, failing closed; no socket."""

import os

import pytest

from lstmserve.server.cli import exposure_warnings
from lstmserve.server.transport.auth import TokenFile, parse_tokens

pytestmark = pytest.mark.unit


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_token_per_line_without_blanks_comments_or_surrounding_space():
    text = "# production\nalpha\n\n   \n  beta\t\n#gamma\ndelta # not a comment\r\nalpha\n"
    assert parse_tokens(text) == {"alpha", "beta", "delta # not a comment"}


def test_an_empty_file_is_refused_at_start(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match="holds no token"):
        TokenFile(path)


def test_a_missing_file_is_refused_at_start(tmp_path):
    with pytest.raises(OSError):
        TokenFile(tmp_path / "absent")


def test_accepts_only_listed_tokens_exactly(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("alpha\nbeta\n")
    tokens = TokenFile(path)
    assert tokens.accepts("alpha") and tokens.accepts("beta")
    for wrong in ("", "alph", "alphaa", "ALPHA", "alpha\n", "gamma"):
        assert not tokens.accepts(wrong)


def test_a_change_is_seen_only_after_the_recheck_interval(tmp_path):
    path, clock = tmp_path / "tokens", Clock()
    path.write_text("alpha\n")
    tokens = TokenFile(path, recheck_s=1.0, clock=clock)
    path.write_text("beta-longer\n")
    clock.now += 0.5
    assert tokens.accepts("alpha") and not tokens.accepts("beta-longer")
    clock.now += 0.5
    assert tokens.accepts("beta-longer") and not tokens.accepts("alpha")


def test_an_unchanged_file_is_not_read_again(tmp_path):
    path, clock = tmp_path / "tokens", Clock()
    path.write_text("alpha\n")
    tokens = TokenFile(path, clock=clock)
    stat = os.stat(path)
    # Same inode, size and mtime but other content: only a read could see it, and none happens.
    with open(path, "r+") as stream:
        stream.write("omega")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    clock.now += 5
    assert tokens.accepts("alpha")


def test_an_unreadable_file_accepts_nothing_until_it_is_back(tmp_path):
    path, clock = tmp_path / "tokens", Clock()
    path.write_text("alpha\n")
    tokens = TokenFile(path, clock=clock)
    path.unlink()
    clock.now += 2
    assert not tokens.accepts("alpha")
    path.write_text("alpha\n")
    clock.now += 2
    assert tokens.accepts("alpha")


def test_a_file_emptied_later_accepts_nothing(tmp_path):
    path, clock = tmp_path / "tokens", Clock()
    path.write_text("alpha\n")
    tokens = TokenFile(path, clock=clock)
    path.write_text("# all revoked\n")
    clock.now += 2
    assert not tokens.accepts("alpha")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_binding_warns_about_nothing(host):
    assert exposure_warnings(host, tls=False, authenticated=False) == []


def test_a_public_binding_warns_about_what_is_missing():
    plain = exposure_warnings("0.0.0.0", tls=False, authenticated=False)
    assert len(plain) == 2 and "without TLS" in plain[0] and "without authentication" in plain[1]
    tokens_in_clear = exposure_warnings("0.0.0.0", tls=False, authenticated=True)
    assert len(tokens_in_clear) == 1 and "without TLS" in tokens_in_clear[0]
    open_tls = exposure_warnings("10.1.2.3", tls=True, authenticated=False)
    assert len(open_tls) == 1 and "without authentication" in open_tls[0]
    assert exposure_warnings("myhost.example", tls=True, authenticated=True) == []
