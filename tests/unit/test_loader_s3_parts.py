"""S3's pure parts: SigV4 against AWS's published examples, the ListObjectsV2 parser, names relative
to the prefix, which ETags are MD5s, and the sentences for S3's error answers."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from aima.loader import s3, sigv4
from aima.loader.errors import SourceError
from aima.loader.source import S3Source

pytestmark = pytest.mark.unit

# The examples of AWS's "Signature Calculations for the Authorization Header" page (S3 API reference).
EXAMPLE = sigv4.Credentials(
    access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)
EXAMPLE_DATE = datetime(2013, 5, 24, tzinfo=UTC)
SCOPE = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
MD5 = "0123456789abcdef0123456789abcdef"


def _sign(url: str, headers: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    return sigv4.sign(
        method="GET",
        url=url,
        headers=headers or {},
        credentials=EXAMPLE,
        region="us-east-1",
        when=EXAMPLE_DATE,
    )


def test_sigv4_matches_the_aws_get_object_example() -> None:
    _, headers = _sign("https://examplebucket.s3.amazonaws.com/test.txt", {"Range": "bytes=0-9"})
    assert headers["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={SCOPE},SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert headers["x-amz-date"] == "20130524T000000Z"
    assert headers["x-amz-content-sha256"] == sigv4.EMPTY_SHA256
    assert headers["host"] == "examplebucket.s3.amazonaws.com"
    assert headers["Range"] == "bytes=0-9"


def test_sigv4_matches_the_aws_list_objects_example() -> None:
    url, headers = _sign("https://examplebucket.s3.amazonaws.com/?prefix=J&max-keys=2")
    assert url == "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J"
    assert headers["Authorization"].endswith(
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_sigv4_signing_key_matches_the_aws_derivation_example() -> None:
    # AWS's "deriving the signing key" example (service iam, 20120215).
    key = sigv4.signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", date="20120215", region="us-east-1", service="iam"
    )
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_sigv4_signs_the_session_token_and_a_non_default_port() -> None:
    temporary = sigv4.Credentials(access_key_id="AK", secret_access_key="s", session_token="tok")
    _, headers = sigv4.sign(
        method="GET",
        url="http://127.0.0.1:9000/bucket/a%20b",
        headers={"Accept": "x"},
        credentials=temporary,
        region="eu-west-1",
        when=EXAMPLE_DATE,
    )
    assert headers["host"] == "127.0.0.1:9000"
    assert headers["x-amz-security-token"] == "tok"
    assert (
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token," in headers["Authorization"]
    )
    assert "/eu-west-1/s3/aws4_request" in headers["Authorization"]


def test_sigv4_signs_the_if_match_condition() -> None:
    # A request whose condition was stripped on the way would fetch whatever the object now is.
    _, headers = _sign("https://examplebucket.s3.amazonaws.com/test.txt", {"If-Match": f'"{MD5}"'})
    assert "SignedHeaders=host;if-match;x-amz-content-sha256;x-amz-date," in headers["Authorization"]
    _, unconditional = _sign("https://examplebucket.s3.amazonaws.com/test.txt")
    assert headers["Authorization"] != unconditional["Authorization"]


def test_the_url_is_sent_in_its_canonical_encoding() -> None:
    url, path, query = sigv4.canonical_url("http://h/b/dir/a b!(1)+~.bin?prefix=a/b c&list-type=2&token=x+/=")
    assert path == "/b/dir/a%20b%21%281%29%2B~.bin"
    assert query == "list-type=2&prefix=a%2Fb%20c&token=x%2B%2F%3D"
    assert url == f"http://h{path}?{query}"
    assert sigv4.canonical_url(url)[0] == url  # idempotent: an encoded URL stays as it is


def test_credentials_never_show_in_a_repr() -> None:
    secret = sigv4.Credentials(access_key_id="AKIDVISIBLE", secret_access_key="SECRET", session_token="TOKEN")
    shown = repr(secret) + repr(sigv4.Signer(credentials=secret, region="us-east-1"))
    assert not {"AKIDVISIBLE", "SECRET", "TOKEN"} & set(shown.replace("(", " ").replace(")", " ").split())


LISTING = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>models</Name><Prefix>llama</Prefix><KeyCount>3</KeyCount><MaxKeys>3</MaxKeys>
  <EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents><Key>llama/config.json</Key><Size>12</Size><ETag>&quot;0123456789ABCDEF0123456789abcdef&quot;</ETag></Contents>
  <Contents><Key>llama/special+tokens%2Bmap.json</Key><Size>0</Size><ETag>"d41d8cd98f00b204e9800998ecf8427e"</ETag></Contents>
  <Contents><Key>llama/model.safetensors</Key><Size>20000000</Size><ETag>"9b2cf535f27731c974343645a3985328-3"</ETag></Contents>
</ListBucketResult>"""


def test_a_listing_page_gives_objects_and_the_continuation_token() -> None:
    page = s3.parse_list_page(LISTING, what="s3://models/llama")
    assert page.next_token == "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="
    assert [(o.key, o.size, o.etag) for o in page.objects] == [
        ("llama/config.json", 12, "0123456789ABCDEF0123456789abcdef"),
        ("llama/special tokens+map.json", 0, "d41d8cd98f00b204e9800998ecf8427e"),
        ("llama/model.safetensors", 20000000, "9b2cf535f27731c974343645a3985328-3"),
    ]


def test_the_last_page_has_no_token_and_plain_keys_stay_as_they_are() -> None:
    body = (
        b"<ListBucketResult><IsTruncated>false</IsTruncated>"
        b"<Contents><Key>a%20b+c</Key><Size>1</Size><ETag>x</ETag></Contents></ListBucketResult>"
    )
    page = s3.parse_list_page(body, what="w")
    assert page.next_token is None
    assert page.objects[0].key == "a%20b+c"  # no EncodingType: the key is not encoded


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<Error><Code>AccessDenied</Code></Error>", "no ListObjectsV2 result"),
        (b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>", "no continuation token"),
        (
            b"<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>",
            "without a key or a size",
        ),
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><ListBucketResult/>', "declares a DOCTYPE"),
        (b"not xml", "is not XML"),
    ],
    ids=["error document", "truncated without token", "no size", "entities", "not xml"],
)
def test_a_malformed_listing_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(SourceError, match=reason):
        s3.parse_list_page(body, what="s3://b/p")


@pytest.mark.parametrize(
    ("key", "prefix", "name"),
    [
        ("llama/config.json", "llama", "config.json"),
        ("llama/sub/tokenizer.json", "llama", "sub/tokenizer.json"),
        ("llama-2/config.json", "llama", None),
        ("llama/", "llama", None),
        ("llama/sub/", "llama", None),
        ("models/model.gguf", "models/model.gguf", "model.gguf"),
        ("top.bin", "", "top.bin"),
    ],
    ids=["file", "nested", "sibling prefix", "folder marker", "nested marker", "one object", "whole bucket"],
)
def test_names_are_relative_to_the_prefix(key: str, prefix: str, name: str | None) -> None:
    assert s3.relative_name(key, prefix=prefix) == name


def test_files_carry_the_etag_as_md5_only_for_single_part_uploads() -> None:
    page = s3.parse_list_page(LISTING, what="w")
    files = s3.files_from_objects(
        page.objects, endpoint="http://minio:9000", source=S3Source("models", "llama")
    )
    assert [(f.path, f.size, f.md5, f.sha256) for f in files] == [
        ("config.json", 12, MD5, None),
        ("special tokens+map.json", 0, "d41d8cd98f00b204e9800998ecf8427e", None),
        ("model.safetensors", 20000000, None, None),
    ]
    # The ETag itself, exactly as listed, is what every request for the object is conditional on.
    assert [f.etag for f in files] == [
        "0123456789ABCDEF0123456789abcdef",
        "d41d8cd98f00b204e9800998ecf8427e",
        "9b2cf535f27731c974343645a3985328-3",
    ]
    assert files[1].url == "http://minio:9000/models/llama/special%20tokens%2Bmap.json"


def test_the_list_url_is_path_style_with_a_canonical_query() -> None:
    url = s3.list_url("https://s3.amazonaws.com", "models", prefix="a b/c", token="x+/=")
    assert url == (
        "https://s3.amazonaws.com/models?continuation-token=x%2B%2F%3D&encoding-type=url"
        "&list-type=2&prefix=a%20b%2Fc"
    )
    assert sigv4.canonical_url(url)[0] == url


@pytest.mark.parametrize(
    ("etag", "md5"),
    [(f'"{MD5}"', MD5), (MD5.upper(), MD5), (f"{MD5}-12", None), ("", None), ("W/abc", None)],
    ids=["quoted", "upper case", "multipart", "empty", "other"],
)
def test_md5_from_etag(etag: str, md5: str | None) -> None:
    assert s3.md5_from_etag(etag) == md5


def _error(code: str, message: str = "m") -> bytes:
    return f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()


@pytest.mark.parametrize(
    ("status", "body", "signed", "region", "sentence"),
    [
        (
            403,
            _error("SignatureDoesNotMatch"),
            True,
            None,
            r"denied \(HTTP 403 SignatureDoesNotMatch: m\); check AWS_SECRET_ACCESS_KEY",
        ),
        (403, _error("InvalidAccessKeyId"), True, None, "check AWS_ACCESS_KEY_ID"),
        (403, _error("AccessDenied"), False, None, "the request was anonymous: give AWS_ACCESS_KEY_ID"),
        (403, _error("AccessDenied"), True, None, r"s3:ListBucket, s3:GetObject"),
        (
            400,
            _error("AuthorizationHeaderMalformed"),
            True,
            "eu-west-1",
            "is in region eu-west-1 .* https://s3.eu-west-1.amazonaws.com",
        ),
        (301, b"", False, "ap-south-1", "is in region ap-south-1"),
        (
            404,
            _error("NoSuchBucket"),
            False,
            None,
            r"was not found \(HTTP 404 NoSuchBucket: m\); check the bucket",
        ),
        (400, b"<html>", False, None, r"answered HTTP 400$"),
    ],
    ids=[
        "wrong secret",
        "wrong key id",
        "anonymous",
        "no permission",
        "wrong region",
        "redirect",
        "no bucket",
        "not xml",
    ],
)
def test_refusals_say_what_to_do(
    status: int, body: bytes, signed: bool, region: str | None, sentence: str
) -> None:
    said = s3.refusal(status, body, what="s3://b/p", signed=signed, bucket_region=region)
    assert re.search(sentence, said), said
