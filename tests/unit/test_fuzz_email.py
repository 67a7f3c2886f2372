"""The e-mail receiver takes hostile input: its config parser gives an ``EmailConfig`` or a
located ``ConfigError``, and no label or annotation value can add a header to a mail."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import Any

from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from alerting.notify.email import EmailConfig, build_message, group_data, parse_email_config
from alerting.state import Alert
from vigil.errors import ConfigError

KEYS = [
    "to", "from", "smarthost", "hello", "auth_username", "auth_password_file", "auth_identity",
    "require_tls", "tls_config", "headers", "html", "text", "send_resolved", "rate_limit",
    "timeout", "auth_password", "unknown",
]  # fmt: skip

hostile_text = st.one_of(
    st.text(st.one_of(st.characters(), st.characters(categories=["Cs", "Cc"])), max_size=40),
    st.sampled_from(
        [
            "a@b.c\r\nBcc: evil@x.y",
            "h:25\n",
            "[::1]:465",
            "10/h",
            "0/h",
            "9" * 400 + "/h",
            "1/0s",
            "TLS13",
            "{{ .Status }}",
            "=?utf-8?b?QmNjOiBldmls?=",
            "x@y.z, <>",
            '"\\"@"',
        ]
    ),
)
scalar = st.one_of(hostile_text, st.booleans(), st.integers(), st.floats(), st.none())
value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(hostile_text, inner, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(
    st.one_of(
        st.fixed_dictionaries(
            {"to": st.just("oncall@example.com"), "from": st.just("v@example.com")},
            optional={k: value for k in KEYS if k not in ("to", "from")},
        ),
        st.dictionaries(st.sampled_from(KEYS), value, max_size=6),
        value,
    )
)
def test_fuzz_email_config_gives_a_config_or_a_located_error(raw: Any) -> None:
    try:
        cfg = parse_email_config(raw, where="email_configs[0]", file="am.yaml", line=3)
    except ConfigError as exc:
        assert exc.file == "am.yaml" and exc.line == 3
        assert exc.reason.startswith("email_configs[0]"), exc.reason
    else:
        assert isinstance(cfg, EmailConfig)
        assert cfg.recipients and 1 <= cfg.port <= 65535


header_text = st.text(
    st.one_of(
        st.characters(),
        st.characters(categories=["Cs"]),
        st.sampled_from(["\r", "\n", "\x00", "\u2028", "\x85", ":"]),
    ),
    max_size=60,
).map(lambda s: s + "\r\nBcc: evil@attacker.example\r\nX-Injected: yes")

CONFIG = parse_email_config(
    {
        "to": "oncall@example.com",
        "from": "vigil@example.com",
        "smarthost": "localhost:25",
        "send_resolved": True,
    }
)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.text(max_size=10), header_text, max_size=3),
            st.dictionaries(st.text(max_size=10), header_text, max_size=3),
            st.sampled_from(["firing", "resolved"]),
        ),
        min_size=1,
        max_size=4,
    ),
    header_text,
)
def test_fuzz_email_hostile_labels_never_add_headers(
    alerts: list[tuple[dict[str, str], dict[str, str], str]], name: str
) -> None:
    group = [
        Alert(
            f"fp{i}",
            {**labels, "alertname": name},
            annotations,
            state,  # type: ignore[arg-type]
            1.0,
            100.0,
            resolved_at=200.0 if state == "resolved" else None,
            expr=name,
        )
        for i, (labels, annotations, state) in enumerate(alerts)
    ]
    data = group_data(group, receiver="email", external_url="http://vigil/")
    wire = bytes(build_message(CONFIG, data))
    parsed = message_from_bytes(wire, policy=policy.default)
    assert set(parsed.keys()) == {
        "From", "To", "Subject", "Date", "Message-Id", "MIME-Version", "Content-Type",
    }  # fmt: skip
    assert parsed["To"] == "oncall@example.com"
    assert "\n" not in str(parsed["Subject"]) and "\r" not in str(parsed["Subject"])
    for part in parsed.walk():
        assert "Bcc" not in part and "X-Injected" not in part
    text = parsed.get_body(("plain",))
    assert text is not None  # the body survived the hostile values, as the subject did
    assert text.get_content().startswith(("[FIRING:", "[RESOLVED]"))
