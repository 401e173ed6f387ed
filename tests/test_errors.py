import pytest
from flask import Blueprint


@pytest.mark.parametrize("path", ["/nope", "/webhook/extra", "/messages/1", "/%FF"])
def test_unknown_urls_are_json_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json() == {"detail": "Not Found"}


@pytest.mark.parametrize("method, path", [("GET", "/webhook"), ("POST", "/messages"), ("DELETE", "/stats")])
def test_wrong_methods_are_json_405_with_allow(client, method, path):
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.get_json() == {"detail": "Method Not Allowed"}
    assert response.headers["Allow"]


def test_unhandled_exception_is_json_500_without_a_trace(make_app, settings):
    app = make_app(settings)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    broken = Blueprint("broken", __name__)

    @broken.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    app.register_blueprint(broken)
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"detail": "Internal Server Error"}
    assert "secret internals" not in response.get_data(as_text=True)
