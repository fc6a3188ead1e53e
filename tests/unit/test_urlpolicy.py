import ipaddress

import pytest

from shared.errors import Unprocessable
from shared.urlpolicy import (
    SourceUrlRejected,
    address_refusal,
    check_address,
    check_source_url,
    literal_address,
)


@pytest.mark.parametrize(
    "url",
    [
        "https://videos.example.com/run.mp4",
        "http://videos.example.com:8080/a/b.mov?x=1#frag",
        "https://93.184.216.34/run.mp4",
        "https://[2606:4700:4700::1111]/run.mp4",
        "HTTPS://Videos.Example.COM/run.mp4",
        "https://vidéos.example.com/run.mp4",  # IDNA: xn--vidos-bsa.example.com
        "https://media_01.example.com/run.mp4",
        "https://example.com./run.mp4",  # the root's dot
    ],
)
def test_public_urls_pass(url):
    parsed = check_source_url(url)
    assert parsed.scheme in {"http", "https"}
    assert parsed.host == parsed.host.lower()


@pytest.mark.parametrize(
    "url, reason",
    [
        ("ftp://example.com/a.mp4", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gs://bucket/object", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("https://", "no host"),
        ("https://user:secret@example.com/a.mp4", "credentials"),
        ("https://example.com@127.0.0.1/a.mp4", "credentials"),
        ("https://example.com:99999/a.mp4", "port"),
        ("https://example.com/a b.mp4", "spaces"),
        ("https://exa..mple.com/a.mp4", "invalid host name"),
        ("https://-videos.example.com/a.mp4", "invalid host name"),
        ("https://videos-.example.com/a.mp4", "invalid host name"),
        ("https://" + "a" * 64 + ".example.com/a.mp4", "invalid host name"),
        ("https://" + "abcdefgh." * 30 + "com/a.mp4", "invalid host name"),
        ("https://exa%mple.com/a.mp4", "invalid host name"),
        ("https://exa!mple.com/a.mp4", "invalid host name"),
        ("https://\u2488.example.com/a.mp4", "invalid host name"),  # ⒈ folds to "1."
        ("http://\u2460\u2461\u2466.0.0.1/", "loopback"),  # circled digits: 127.0.0.1
        ("http://\uff11\uff12\uff17.0.0.1/", "loopback"),  # full-width digits
        ("http://127\u30020\u30020\u30021/", "loopback"),  # ideographic full stops
        ("http://\uff11\uff10.0.0.1/", "private"),  # full-width 10.0.0.1
        ("http://xn--/a.mp4", "invalid host name"),
        ("http://169.254.169.254/computeMetadata/v1/", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://127.1/", "loopback"),
        ("http://0x7f.0.0.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://localhost:8000/a.mp4", "this machine"),
        ("http://foo.localhost/a.mp4", "this machine"),
        ("http://10.0.0.1/a.mp4", "private"),
        ("http://192.168.1.10/a.mp4", "private"),
        ("http://172.16.0.1/a.mp4", "private"),
        ("http://[fd00::1]/a.mp4", "private"),
        ("http://[fe80::1]/a.mp4", "link-local"),
        ("http://224.0.0.1/a.mp4", "multicast"),
        ("http://0.0.0.0/a.mp4", "unspecified"),
        ("http://100.64.0.1/a.mp4", "reserved"),
        ("http://[2002:7f00:1::]/a.mp4", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("http://[64:ff9b::a00:1]/a.mp4", "private"),  # NAT64 wrapping 10.0.0.1
    ],
)
def test_hostile_urls_are_refused_with_a_reason(url, reason):
    with pytest.raises(SourceUrlRejected) as excinfo:
        check_source_url(url)
    assert reason in excinfo.value.message
    assert excinfo.value.status == 422


def test_rejection_is_the_shared_422_error():
    assert issubclass(SourceUrlRejected, Unprocessable)


def test_overlong_url_is_refused():
    with pytest.raises(SourceUrlRejected, match="longer than 50"):
        check_source_url("https://example.com/" + "a" * 40, max_length=50)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/a.mp4", "http://localhost:8000/a.mp4", "http://[::1]/a"]
)
def test_loopback_is_allowed_only_by_the_local_setting(url):
    with pytest.raises(SourceUrlRejected):
        check_source_url(url)
    assert check_source_url(url, allow_loopback=True).url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/computeMetadata/v1/",
        "http://10.0.0.1/a.mp4",
        "http://[fe80::1]/a.mp4",
        "http://metadata.google.internal/",
    ],
)
def test_loopback_setting_never_opens_private_or_metadata(url):
    with pytest.raises(SourceUrlRejected):
        check_source_url(url, allow_loopback=True)


@pytest.mark.parametrize(
    "host, expected",
    [
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("videos.example.com", None),
        ("cafe.be", None),
    ],
)
def test_literal_address_reads_what_the_resolver_reads(host, expected):
    address = literal_address(host)
    assert (str(address) if address else None) == expected


def test_check_address_takes_resolved_strings():
    check_address("93.184.216.34")
    with pytest.raises(SourceUrlRejected, match="private"):
        check_address("10.0.0.1")
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow_loopback=True) is None
