import pytest

from webhook_service.config import ConfigError, ServerSettings, Settings, resembled_settings
from webhook_service.signatures import Scheme

TOKEN = "t" * 16


def test_defaults_keep_the_database_in_the_working_directory():
    settings = Settings.from_env({})
    assert settings.webhook_secrets == ()
    assert settings.signature_schemes == {Scheme.STANDARD, Scheme.LEGACY}
    assert settings.tolerance_seconds == 300
    assert settings.api_tokens == () and settings.metrics_token is None
    assert settings.database_url == "sqlite:///data/messages.db"
    assert settings.log_level == "INFO"
    assert settings.max_body_bytes == 65536


@pytest.mark.parametrize(
    "value, url",
    [
        ("messages.db", "sqlite:///messages.db"),
        ("/data/app.db", "sqlite:////data/app.db"),
        ("sqlite:////data/app.db", "sqlite:////data/app.db"),
    ],
)
def test_database_url_accepts_urls_and_bare_paths(value, url):
    assert Settings.from_env({"DATABASE_URL": value}).database_url == url


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"DATABASE_URL": "mysql://db/app"}, "DATABASE_URL"),
        ({"DATABASE_URL": "sqlite://"}, "DATABASE_URL"),
        ({"DATABASE_URL": ":memory:"}, "DATABASE_URL"),
        ({"DATABASE_URL": "not a url://x"}, "DATABASE_URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"MAX_BODY_BYTES": "64k"}, "MAX_BODY_BYTES"),
        ({"MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES"),
        ({"FORWARDED_ALLOW_IPS": "not-an-ip"}, "FORWARDED_ALLOW_IPS"),
        ({"FORWARDED_ALLOW_IPS": "*"}, "FORWARDED_ALLOW_IPS"),
        ({"SIGNATURE_SCHEMES": "standard,hmac"}, "SIGNATURE_SCHEMES"),
        ({"WEBHOOK_TOLERANCE_SECONDS": "-5"}, "WEBHOOK_TOLERANCE_SECONDS"),
        ({"WEBHOOK_TOLERANCE_SECONDS": "0"}, "WEBHOOK_TOLERANCE_SECONDS"),
        ({"WEBHOOK_SECRET": "a", "WEBHOOK_SECRET_FILE": "/etc/hosts"}, "WEBHOOK_SECRET_FILE"),
        ({"WEBHOOK_SECRET_FILE": "/nonexistent/secret"}, "WEBHOOK_SECRET_FILE"),
        ({"WEBHOOK_SECRET": "whsec_not base64!"}, "WEBHOOK_SECRET"),
        ({"WEBHOOK_PUBLIC_KEYS": "whpk_AAAA"}, "WEBHOOK_PUBLIC_KEYS"),
        ({"WEBHOOK_PUBLIC_KEYS": "ssh-ed25519 AAAA"}, "WEBHOOK_PUBLIC_KEYS"),
        ({"API_TOKENS": "short"}, "API_TOKENS"),
        ({"API_TOKENS": TOKEN, "API_TOKENS_FILE": "/etc/hosts"}, "API_TOKENS_FILE"),
        ({"METRICS_TOKEN": "has a space in it, long enough"}, "METRICS_TOKEN"),
        ({"QUERY_BUDGET_MS": "2s"}, "QUERY_BUDGET_MS"),
        ({"QUERY_BUDGET_MS": "5"}, "QUERY_BUDGET_MS"),
        ({"BODY_READ_TIMEOUT_SECONDS": "0"}, "BODY_READ_TIMEOUT_SECONDS"),
        ({"RETENTION_DAYS": "0"}, "RETENTION_DAYS"),
        ({"RETENTION_DAYS": "7d"}, "RETENTION_DAYS"),
        ({"RETENTION_DAYS": "1.5"}, "RETENTION_DAYS"),
        ({"ARCHIVE_URL": "http://archive.example/"}, "ARCHIVE_URL"),
        ({"ARCHIVE_URL": "s3://"}, "ARCHIVE_URL"),
        ({"ARCHIVE_URL": "s3://key:secret@bucket/prefix"}, "ARCHIVE_URL"),
    ],
)
def test_bad_values_fail_with_the_variable_named(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_log_level_is_case_insensitive():
    assert Settings.from_env({"LOG_LEVEL": "debug"}).log_level == "DEBUG"


def test_server_settings_validate_port_and_workers():
    assert ServerSettings.from_env({}) == ServerSettings(port=8000, workers=None, host="0.0.0.0")
    assert ServerSettings.from_env({"HOST": "127.0.0.1"}).host == "127.0.0.1"
    with pytest.raises(ConfigError, match="HOST"):
        ServerSettings.from_env({"HOST": "localhost:80"})
    assert ServerSettings.from_env({"PORT": "9000", "WEB_CONCURRENCY": "3"}) == ServerSettings(9000, 3)
    with pytest.raises(ConfigError, match="PORT"):
        ServerSettings.from_env({"PORT": "http"})
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
        ServerSettings.from_env({"WEB_CONCURRENCY": "0"})


def test_several_secrets_are_read_from_a_comma_separated_list():
    settings = Settings.from_env({"WEBHOOK_SECRET": " old-secret , new-secret ,"})
    assert settings.webhook_secrets == ("old-secret", "new-secret")


def test_secrets_and_tokens_are_read_one_a_line_from_their_files(tmp_path):
    (tmp_path / "secrets").write_text("first\n\n  second  \n")
    (tmp_path / "tokens").write_text(f"{TOKEN}\n{TOKEN}2\n")
    settings = Settings.from_env(
        {"WEBHOOK_SECRET_FILE": str(tmp_path / "secrets"), "API_TOKENS_FILE": str(tmp_path / "tokens")}
    )
    assert settings.webhook_secrets == ("first", "second")
    assert settings.api_tokens == (TOKEN, TOKEN + "2")


def test_schemes_are_case_insensitive_and_may_be_one():
    assert Settings.from_env({"SIGNATURE_SCHEMES": "Standard"}).signature_schemes == {Scheme.STANDARD}
    assert Settings.from_env({"SIGNATURE_SCHEMES": "legacy, standard"}).signature_schemes == set(Scheme)


def test_a_bad_secret_or_token_is_never_echoed_in_the_error():
    for env in (
        {"WEBHOOK_SECRET": "whsec_s3cr3t-value!"},
        {"API_TOKENS": "s3cr3t-value!"},
        {"METRICS_TOKEN": "s3cr3t-value! with space"},
    ):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env(env)
        assert "s3cr3t" not in str(raised.value)


def test_secrets_and_tokens_stay_out_of_the_settings_repr():
    settings = Settings.from_env({"WEBHOOK_SECRET": "hidden-secret", "API_TOKENS": TOKEN, "METRICS_TOKEN": TOKEN})
    assert "hidden-secret" not in repr(settings) and TOKEN not in repr(settings)


def test_only_variables_that_look_meant_as_settings_are_named_as_resembling_one():
    environ = {
        "SIGNATURE_SCHEME": "standard",  # a letter short
        "database_url": "x",  # another case
        "RETENTIONDAYS": "7",  # a character short
        "WEBHOOK_SECRETT": "x",
        "WEBHOOK_RETRIES": "3",  # the service's prefix, no setting near it
        "API_TOKENS": "a-token-of-16-chars",  # a setting
        # What every shell and container has: none is a setting, and none is named.
        "HOME": "/root",
        "PATH": "/usr/bin",
        "HOSTNAME": "box",
        "LANG": "C.UTF-8",
        "PWD": "/",
        "SHELL": "/bin/sh",
        "TERM": "xterm",
        "USER": "root",
        "PYTHONPATH": ".",
        "VIRTUAL_ENV": "/srv/.venv",
        "AWS_ACCESS_KEY_ID": "x",
    }
    assert resembled_settings(environ) == [
        ("RETENTIONDAYS", "RETENTION_DAYS"),
        ("SIGNATURE_SCHEME", "SIGNATURE_SCHEMES"),
        ("WEBHOOK_RETRIES", None),
        ("WEBHOOK_SECRETT", "WEBHOOK_SECRET"),
        ("database_url", "DATABASE_URL"),
    ]
