import pytest

from webhook_service.config import ConfigError, ServerSettings, Settings


def test_defaults_keep_the_database_in_the_working_directory():
    settings = Settings.from_env({})
    assert settings.webhook_secret is None
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
    ],
)
def test_bad_values_fail_with_the_variable_named(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_log_level_is_case_insensitive():
    assert Settings.from_env({"LOG_LEVEL": "debug"}).log_level == "DEBUG"


def test_server_settings_validate_port_and_workers():
    assert ServerSettings.from_env({}) == ServerSettings(port=8000, workers=None)
    assert ServerSettings.from_env({"PORT": "9000", "WEB_CONCURRENCY": "3"}) == ServerSettings(9000, 3)
    with pytest.raises(ConfigError, match="PORT"):
        ServerSettings.from_env({"PORT": "http"})
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
        ServerSettings.from_env({"WEB_CONCURRENCY": "0"})
